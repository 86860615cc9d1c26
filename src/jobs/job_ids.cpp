#include "jobs/job_ids.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace gantry::jobs {
namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr size_t kDigits = 22;    // 62^22 > 2^128
constexpr size_t kTimeDigits = 8; // with a clock: the time, then 14 random digits (> 2^83)

} // namespace

std::string JobIds::next(std::string_view prefix) {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof(buf)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  unsigned __int128 v = 0;
  for (unsigned char b : buf)
    v = (v << 8) | b;
  std::string out(prefix);
  out.resize(prefix.size() + kDigits);
  size_t random_digits = kDigits;
  if (clock_ != nullptr) {
    // 8 base62 digits of unix milliseconds (62^8 ms is ~6,900 years), most significant first.
    uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(0, clock_->unix_millis()));
    for (size_t i = 0; i < kTimeDigits; ++i) {
      out[prefix.size() + kTimeDigits - 1 - i] = kBase62[ms % 62];
      ms /= 62;
    }
    random_digits = kDigits - kTimeDigits;
  }
  for (size_t i = 0; i < random_digits; ++i) {
    out[out.size() - 1 - i] = kBase62[static_cast<size_t>(v % 62)];
    v /= 62;
  }
  return out;
}

bool is_well_formed_id(std::string_view id, std::string_view prefix) {
  if (id.size() != prefix.size() + kDigits || id.substr(0, prefix.size()) != prefix)
    return false;
  for (char c : id.substr(prefix.size())) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (!alnum)
      return false;
  }
  return true;
}

} // namespace gantry::jobs
