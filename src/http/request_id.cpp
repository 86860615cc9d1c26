#include "http/request_id.h"

namespace gantry::http {

static bool allowed(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::string sanitize_request_id(std::string_view raw) {
  std::string out;
  out.reserve(std::min(raw.size(), kMaxRequestIdLength));
  for (char c : raw) {
    if (out.size() == kMaxRequestIdLength)
      break;
    if (allowed(c))
      out.push_back(c);
  }
  return out;
}

RequestIdGenerator::RequestIdGenerator() : rng_(std::random_device{}()) {}

std::string RequestIdGenerator::next() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    std::uint64_t bits = rng_();
    for (int i = 0; i < 16; ++i) {
      id[half * 16 + i] = kHex[bits & 0xF];
      bits >>= 4;
    }
  }
  return id;
}

} // namespace gantry::http
