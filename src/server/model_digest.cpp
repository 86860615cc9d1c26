#include "server/model_digest.h"

#include <algorithm>

#include "cache/cache_key.h"

namespace gantry::server {

std::string model_digest(const gguf::GgufFile &file) {
  constexpr uint64_t kSamples = 16;
  constexpr uint64_t kSampleBytes = 4096;
  const auto bytes = file.bytes();
  const uint64_t size = bytes.size();
  const uint64_t data = std::min<uint64_t>(file.data_offset(), size);
  cache::Sha256 h;
  h.update(std::string_view("gguf-digest-v1"));
  std::string size_le;
  for (int i = 0; i < 8; ++i)
    size_le.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
  h.update(size_le);
  h.update(bytes.subspan(0, data));
  const uint64_t span = size - data;
  if (span > 0) {
    for (uint64_t i = 0; i < kSamples; ++i) {
      const uint64_t off = data + span * i / kSamples;
      h.update(bytes.subspan(off, std::min(kSampleBytes, size - off)));
    }
  }
  return h.hex_digest();
}

} // namespace gantry::server
