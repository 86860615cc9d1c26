// Cache keys: the SHA-256 (OpenSSL) of a canonical encoding of typed, named fields. Each field is
// written as its name, a type tag and a length-prefixed value, so ("ab","c") and ("a","bc")
// differ, a float counts by its exact bits, and an absent optional differs from every value.
// Keys are "<namespace>:<64 hex digits>", short enough for any store and safe to log.
//
// Threading: a KeyBuilder or Sha256 is used by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace gantry::cache {

class Sha256 {
public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256 &) = delete;
  Sha256 &operator=(const Sha256 &) = delete;

  void update(std::span<const uint8_t> bytes);
  void update(std::string_view bytes);
  // Lower-case hex of the digest; the object cannot be updated afterwards.
  std::string hex_digest();

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class KeyBuilder {
public:
  // `ns` separates kinds of entries sharing one store ("resp.v1", "emb.v1"); bump its version
  // when the encoding of the value changes so old entries are never misread.
  explicit KeyBuilder(std::string_view ns);

  KeyBuilder &add(std::string_view name, std::string_view value);
  KeyBuilder &add(std::string_view name, const char *value) {
    return add(name, std::string_view(value));
  }
  KeyBuilder &add(std::string_view name, int64_t value);
  KeyBuilder &add(std::string_view name, int value) { return add(name, int64_t{value}); }
  KeyBuilder &add(std::string_view name, uint64_t value);
  KeyBuilder &add(std::string_view name, bool value);
  KeyBuilder &add(std::string_view name, float value);
  KeyBuilder &add(std::string_view name, std::span<const int32_t> values);
  // An absent value has its own encoding, distinct from every present one.
  KeyBuilder &add(std::string_view name, const std::optional<uint64_t> &value);

  std::string finish() const;

private:
  KeyBuilder &field(std::string_view name, char type, std::string_view bytes);

  std::string ns_;
  std::string buf_;
};

} // namespace gantry::cache
