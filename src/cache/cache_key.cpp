#include "cache/cache_key.h"

#include <openssl/evp.h>

#include <bit>
#include <cstring>
#include <stdexcept>

namespace gantry::cache {
namespace {

void put_u64(std::string &out, uint64_t v) {
  // Little-endian whatever the host, so keys are the same on every machine sharing a store.
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

} // namespace

struct Sha256::Impl {
  EVP_MD_CTX *ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  // Only fails when OpenSSL cannot allocate or lacks SHA-256: not a condition callers handle.
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL SHA-256 is unavailable");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::update(std::span<const uint8_t> bytes) {
  if (!bytes.empty())
    EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size());
}

void Sha256::update(std::string_view bytes) {
  if (!bytes.empty())
    EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size());
}

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &len);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

KeyBuilder::KeyBuilder(std::string_view ns) : ns_(ns) { buf_.reserve(256); }

KeyBuilder &KeyBuilder::field(std::string_view name, char type, std::string_view bytes) {
  put_u64(buf_, name.size());
  buf_.append(name);
  buf_.push_back(type);
  put_u64(buf_, bytes.size());
  buf_.append(bytes);
  return *this;
}

KeyBuilder &KeyBuilder::add(std::string_view name, std::string_view value) {
  return field(name, 's', value);
}

KeyBuilder &KeyBuilder::add(std::string_view name, int64_t value) {
  std::string b;
  put_u64(b, static_cast<uint64_t>(value));
  return field(name, 'i', b);
}

KeyBuilder &KeyBuilder::add(std::string_view name, uint64_t value) {
  std::string b;
  put_u64(b, value);
  return field(name, 'u', b);
}

KeyBuilder &KeyBuilder::add(std::string_view name, const std::optional<uint64_t> &value) {
  if (!value.has_value())
    return field(name, 'n', {});
  return add(name, value.value());
}

KeyBuilder &KeyBuilder::add(std::string_view name, bool value) {
  return field(name, 'b', value ? "\1" : std::string_view("\0", 1));
}

KeyBuilder &KeyBuilder::add(std::string_view name, float value) {
  std::string b;
  put_u64(b, std::bit_cast<uint32_t>(value));
  return field(name, 'f', b);
}

KeyBuilder &KeyBuilder::add(std::string_view name, std::span<const int32_t> values) {
  std::string b;
  b.reserve(values.size() * 4);
  for (int32_t v : values) {
    const auto u = static_cast<uint32_t>(v);
    for (int i = 0; i < 4; ++i)
      b.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  return field(name, 't', b);
}

std::string KeyBuilder::finish() const {
  Sha256 h;
  h.update(ns_);
  h.update(std::string_view("\0", 1));
  h.update(buf_);
  return ns_ + ":" + h.hex_digest();
}

} // namespace gantry::cache
