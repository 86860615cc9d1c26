#include "http/request_id.h"

#include <atomic>

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

std::string next_call_id() {
  static const std::string prefix = [] {
    static constexpr char kHex[] = "0123456789abcdef";
    std::random_device rd; // 4 draws: 128 bits, not a 64-bit seed's worth
    std::string p;
    for (int i = 0; i < 4; ++i) {
      std::uint32_t bits = rd();
      for (int j = 0; j < 8; ++j, bits >>= 4)
        p.push_back(kHex[bits & 0xF]);
    }
    return p + ":";
  }();
  static std::atomic<std::uint64_t> counter{0};
  return prefix + std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

std::string response_id(const Request &req) {
  if (!req.call_id.empty() && req.call_id.find(':') == std::string::npos)
    return req.call_id;
  thread_local RequestIdGenerator gen;
  return gen.next();
}

} // namespace gantry::http
