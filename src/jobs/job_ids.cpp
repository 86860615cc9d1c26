#include "jobs/job_ids.h"

#include <openssl/rand.h>

#include <stdexcept>

namespace gantry::jobs {
namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr size_t kDigits = 22; // 62^22 > 2^128

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
  for (size_t i = 0; i < kDigits; ++i) {
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
