#include "control/secret_box.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <memory>
#include <stdexcept>

namespace gantry::control {
namespace {

constexpr std::string_view kPrefix = "gs1:";
constexpr std::size_t kNonce = 12, kTag = 16;

std::string to_hex(const unsigned char *p, std::size_t n) {
  static const char *digits = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}

bool from_hex(std::string_view hex, std::string &out) {
  if (hex.size() % 2)
    return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  out.resize(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

using Ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

} // namespace

SecretBox::SecretBox(std::string_view pepper) {
  static constexpr std::string_view kLabel = "gantry secret box v1";
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), pepper.data(), static_cast<int>(pepper.size()),
            reinterpret_cast<const unsigned char *>(kLabel.data()), kLabel.size(), key_.data(),
            &len) ||
      len != key_.size())
    throw std::runtime_error("SecretBox: key derivation failed");
}

bool SecretBox::is_sealed(std::string_view stored) { return stored.starts_with(kPrefix); }

std::string SecretBox::seal(std::string_view plain) const {
  std::string buf(kNonce + plain.size() + kTag, '\0');
  auto *out = reinterpret_cast<unsigned char *>(buf.data());
  if (RAND_bytes(out, kNonce) != 1)
    throw std::runtime_error("SecretBox: RAND_bytes failed");
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int n = 0, fin = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), out) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out + kNonce, &n,
                        reinterpret_cast<const unsigned char *>(plain.data()),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out + kNonce + n, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, out + kNonce + plain.size()) != 1)
    throw std::runtime_error("SecretBox: sealing failed");
  return std::string(kPrefix) + to_hex(out, buf.size());
}

Result<std::string> SecretBox::open(std::string_view stored) const {
  if (!is_sealed(stored))
    return std::string(stored); // written before sealing existed
  std::string raw;
  if (!from_hex(stored.substr(kPrefix.size()), raw) || raw.size() < kNonce + kTag)
    return Err(Error::corrupt("a sealed secret is malformed"));
  const auto *in = reinterpret_cast<const unsigned char *>(raw.data());
  const std::size_t n_ct = raw.size() - kNonce - kTag;
  std::string plain(n_ct, '\0');
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int n = 0, fin = 0;
  std::array<unsigned char, kTag> tag{};
  std::copy(in + kNonce + n_ct, in + raw.size(), tag.begin());
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), in) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char *>(plain.data()), &n, in + kNonce,
                        static_cast<int>(n_ct)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char *>(plain.data()) + n, &fin) !=
          1)
    return Err(Error::corrupt("a sealed secret does not open under this pepper (altered, or "
                              "sealed by a node with another GANTRY_KEY_PEPPER)"));
  return plain;
}

} // namespace gantry::control
