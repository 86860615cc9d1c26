#include "engine/kv/siphash.h"

#include <bit>
#include <random>

namespace gantry::engine {
namespace {

uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

struct State {
  uint64_t v0, v1, v2, v3;
  void round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void absorb(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

} // namespace

uint64_t siphash24(const SipKey &key, std::span<const uint8_t> bytes) {
  State s{key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull,
          key[0] ^ 0x6c7967656e657261ull, key[1] ^ 0x7465646279746573ull};
  const size_t n = bytes.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    s.absorb(load_le64(bytes.data() + i));
  uint64_t last = static_cast<uint64_t>(n & 0xff) << 56;
  for (size_t j = 0; i + j < n; ++j)
    last |= static_cast<uint64_t>(bytes[i + j]) << (8 * j);
  s.absorb(last);
  s.v2 ^= 0xff;
  for (int r = 0; r < 4; ++r)
    s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

SipKey random_sip_key() {
  std::random_device rd; // 32 bits per draw: four draws for 128 bits
  auto draw64 = [&rd] { return (static_cast<uint64_t>(rd()) << 32) | rd(); };
  return {draw64(), draw64()};
}

} // namespace gantry::engine
