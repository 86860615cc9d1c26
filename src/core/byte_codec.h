// A tiny length-prefixed byte encoding (little-endian u32, u32-length strings) shared by the
// records the stores keep as opaque blobs: cached completions and idempotency replays. Every read
// is checked against what is left; a short input sets `ok` to false and stays false.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gantry {

inline void put_u32(std::string &out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline void put_str(std::string &out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

struct ByteReader {
  std::string_view in;
  bool ok = true;

  uint32_t u32() {
    if (!ok || in.size() < 4) {
      ok = false;
      return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
    in.remove_prefix(4);
    return v;
  }
  std::string str() {
    const uint32_t n = u32();
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
  // The same reads for callers that test each step.
  bool u32(uint32_t &v) { return v = u32(), ok; }
  bool str(std::string &s) { return s = str(), ok; }
  bool take(std::string_view literal) {
    if (!ok || !in.starts_with(literal))
      return ok = false;
    in.remove_prefix(literal.size());
    return true;
  }
  size_t left() const { return in.size(); }
};

} // namespace gantry
