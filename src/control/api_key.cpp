#include "control/api_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace gantry::control {
namespace {

constexpr std::string_view kAlphabet =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

bool is_base62(std::string_view s) {
  // Ranges rather than kAlphabet.find(c): every authenticated request checks its key here.
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
  });
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  return s;
}

} // namespace

std::string random_base62(size_t n) {
  std::string out;
  out.reserve(n);
  unsigned char buf[64];
  while (out.size() < n) {
    if (RAND_bytes(buf, sizeof(buf)) != 1)
      throw std::runtime_error("RAND_bytes failed");
    for (unsigned char b : buf) {
      // Rejection sampling keeps every character equally likely (248 = 4 * 62).
      if (b >= 248)
        continue;
      out.push_back(kAlphabet[b % 62]);
      if (out.size() == n)
        break;
    }
  }
  return out;
}

KeyParts generate_key() { return {random_base62(kKeyIdLength), random_base62(kKeySecretLength)}; }

std::string format_key(const KeyParts &parts) {
  return std::string(kKeyPrefix) + parts.id + "_" + parts.secret;
}

std::optional<KeyParts> parse_key(std::string_view key) {
  if (key.size() != kKeyPrefix.size() + kKeyIdLength + 1 + kKeySecretLength)
    return std::nullopt;
  if (key.substr(0, kKeyPrefix.size()) != kKeyPrefix)
    return std::nullopt;
  key.remove_prefix(kKeyPrefix.size());
  std::string_view id = key.substr(0, kKeyIdLength);
  if (key[kKeyIdLength] != '_')
    return std::nullopt;
  std::string_view secret = key.substr(kKeyIdLength + 1);
  if (!is_base62(id) || !is_base62(secret))
    return std::nullopt;
  return KeyParts{std::string(id), std::string(secret)};
}

namespace {

// OpenSSL 3's one-shot HMAC() fetches the algorithms by name on every call (about 40,000
// instructions, most of an authenticated request's key check). Each thread keeps one context
// keyed with the pepper and re-initialises it with the same key per call instead.
//
// It also remembers the last secret it hashed and that hash: a request's key is checked twice
// (before its body is read, then by its handler) and a client sends the same key with every
// request, so most checks on a thread repeat the last one. The secret is compared in constant
// time, so a hit or miss tells a caller only whether its whole secret equals the remembered one.
struct HmacContext {
  std::string pepper;
  EVP_MAC_CTX *ctx = nullptr;
  std::string last_secret, last_hash; // last_hash empty = nothing remembered
  HmacContext() = default;
  HmacContext(const HmacContext &) = delete;
  HmacContext &operator=(const HmacContext &) = delete;
  ~HmacContext() {
    forget();
    EVP_MAC_CTX_free(ctx);
  }

  void forget() {
    OPENSSL_cleanse(last_secret.data(), last_secret.size());
    last_secret.clear();
    last_hash.clear();
  }
  bool remembers(std::string_view secret) const {
    return !last_hash.empty() && last_secret.size() == secret.size() &&
           CRYPTO_memcmp(last_secret.data(), secret.data(), secret.size()) == 0;
  }

  bool rekey(std::string_view p) {
    static EVP_MAC *const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_MAC_CTX_free(ctx);
    ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    pepper.clear();
    forget();
    if (!ctx)
      return false;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                           OSSL_PARAM_construct_end()};
    static const unsigned char kEmpty = 0; // a null key would mean "keep the previous one"
    const auto *key = p.empty() ? &kEmpty : reinterpret_cast<const unsigned char *>(p.data());
    if (EVP_MAC_init(ctx, key, p.size(), params) != 1) {
      EVP_MAC_CTX_free(ctx);
      ctx = nullptr;
      return false;
    }
    pepper.assign(p);
    return true;
  }
};

} // namespace

std::string hash_secret(std::string_view pepper, std::string_view secret) {
  unsigned char md[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  thread_local HmacContext hmac;
  bool ok = (hmac.ctx && hmac.pepper == pepper) || hmac.rekey(pepper);
  if (ok && hmac.remembers(secret))
    return hmac.last_hash;
  // A null key re-initialises the context with the key it already holds.
  ok = ok && EVP_MAC_init(hmac.ctx, nullptr, 0, nullptr) == 1 &&
       EVP_MAC_update(hmac.ctx, reinterpret_cast<const unsigned char *>(secret.data()),
                      secret.size()) == 1 &&
       EVP_MAC_final(hmac.ctx, md, &len, sizeof md) == 1;
  if (!ok) {
    // The one-shot form as a fallback: never a wrong hash, only a slower one.
    unsigned int n = 0;
    HMAC(EVP_sha256(), pepper.data(), static_cast<int>(pepper.size()),
         reinterpret_cast<const unsigned char *>(secret.data()), secret.size(), md, &n);
    len = n;
    hmac.pepper.clear();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(len * 2, '0');
  for (std::size_t i = 0; i < len; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
  if (ok) {
    hmac.forget();
    hmac.last_secret.assign(secret);
    hmac.last_hash = out;
  }
  return out;
}

bool hashes_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.empty())
    return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> load_pepper(const std::string &data_dir) {
  // The same minimum as the file (audit I): a short pepper makes stolen hashes cheap to crack.
  if (const char *p = std::getenv("GANTRY_KEY_PEPPER"); p && *p) {
    std::string pepper(p); // as given: trimming would change every existing key's hash
    if (pepper.size() < 16)
      return Err(Error::invalid("GANTRY_KEY_PEPPER is shorter than 16 characters"));
    return pepper;
  }
  std::string path;
  bool create = false;
  if (const char *f = std::getenv("GANTRY_KEY_PEPPER_FILE"); f && *f) {
    path = f;
  } else {
    path = (std::filesystem::path(data_dir) / "pepper").string();
    create = true;
  }
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    if (!in)
      return Err(Error::io("cannot read the key pepper file " + path));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string pepper = trim(ss.str());
    if (pepper.size() < 16) {
      return Err(Error::invalid("the key pepper in " + path + " is shorter than 16 characters"));
    }
    return pepper;
  }
  if (!create)
    return Err(Error::io("the key pepper file " + path + " does not exist"));
  std::filesystem::create_directories(data_dir, ec);
  const std::string pepper = random_base62(43);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    // 0600 from the start: the secret is never readable by others, even briefly.
    const mode_t old = ::umask(077);
    std::ofstream out(tmp, std::ios::trunc);
    ::umask(old);
    if (!out)
      return Err(Error::io("cannot create the key pepper file " + tmp));
    out << pepper << "\n";
    if (!out.flush())
      return Err(Error::io("cannot write the key pepper file " + tmp));
  }
  // Two processes creating it at once: link() fails for the second, which then reads the first's.
  std::filesystem::create_hard_link(tmp, path, ec);
  std::error_code rm_ec; // a leftover temporary file is harmless; an exception here is not
  std::filesystem::remove(tmp, rm_ec);
  if (ec)
    return load_pepper(data_dir);
  return pepper;
}

} // namespace gantry::control
