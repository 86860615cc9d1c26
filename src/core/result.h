// Result<T>: the value-or-error type every fallible call returns (see docs/ARCHITECTURE.md,
// "Errors"). Expected failures are values; exceptions are reserved for bugs and start-up.
#pragma once

#include <cassert>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace gantry {

// Each code maps to exactly one HTTP status and one OpenAI error type (error.cpp), so that
// every layer can fail with a code and only the HTTP edge decides the wire shape.
enum class ErrorCode {
  kInvalidArgument,       // 400 invalid_request_error
  kContextLengthExceeded, // 400 invalid_request_error, code context_length_exceeded
  kUnauthorized,          // 401 authentication_error
  kPermissionDenied,      // 403 permission_error
  kNotFound,              // 404 not_found_error
  kPayloadTooLarge,       // 413 invalid_request_error
  kRateLimited,           // 429 rate_limit_error
  kQueueFull,             // 429 rate_limit_error (server overloaded)
  kQuotaExceeded,         // 429 insufficient_quota (a token quota or budget is spent: no retry)
  kConflict,              // 409 (an idempotent request with the same key is still running)
  kUnprocessable,         // 422 (an idempotency key reused with a different body)
  kCircuitOpen,           // 503 server_error, code circuit_open (spend-rate breaker tripped)
  kResourceExhausted,     // 503 server_error (e.g. KV cache full)
  kUnavailable,           // 503 server_error (not ready, shutting down)
  kCancelled,             // 499-ish; never sent to a client that is still there
  kCorruptData,           // bad file contents (GGUF); 400 when user-provided, else start-up
  kUnsupported,           // a valid input we refuse to handle (architecture, tensor type)
  kIo,                    // file system or network failure
  kInternal,              // 500 server_error
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::string param;          // the request field at fault, if any (OpenAI "param")
  int64_t retry_after_ms = 0; // for 429/503: when a retry can succeed (Retry-After headers)

  static Error invalid(std::string msg, std::string param = {}) {
    return {ErrorCode::kInvalidArgument, std::move(msg), std::move(param)};
  }
  static Error corrupt(std::string msg) { return {ErrorCode::kCorruptData, std::move(msg), {}}; }
  static Error unsupported(std::string msg) {
    return {ErrorCode::kUnsupported, std::move(msg), {}};
  }
  static Error io(std::string msg) { return {ErrorCode::kIo, std::move(msg), {}}; }
  static Error internal(std::string msg) { return {ErrorCode::kInternal, std::move(msg), {}}; }
};

int http_status(ErrorCode code);
std::string_view openai_error_type(ErrorCode code);
std::string_view error_code_name(ErrorCode code);

// Tag type so that `return Err(...)` reads naturally for any Result<T>.
struct Unexpected {
  Error error;
};
inline Unexpected Err(Error e) { return Unexpected{std::move(e)}; }
inline Unexpected Err(ErrorCode c, std::string msg, std::string param = {}) {
  return Unexpected{Error{c, std::move(msg), std::move(param)}};
}

template <typename T> class [[nodiscard]] Result {
public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T &value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T &value() const & {
    assert(ok());
    return std::get<0>(v_);
  }
  T &&value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }

  const Error &error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  Error &&take_error() {
    assert(!ok());
    return std::get<1>(std::move(v_));
  }

private:
  std::variant<T, Error> v_;
};

template <> class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(Unexpected u) : err_(std::move(u.error)), failed_(true) {}
  Result(Error e) : err_(std::move(e)), failed_(true) {}
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error &error() const {
    assert(failed_);
    return err_;
  }
  Error &&take_error() { return std::move(err_); }

private:
  Error err_;
  bool failed_ = false;
};

using Status = Result<void>;
inline Status Ok() { return {}; }

} // namespace gantry

// Propagates an error from an expression returning Result<...>.
#define GANTRY_TRY(expr)                                                                           \
  do {                                                                                             \
    auto &&_gantry_r = (expr);                                                                     \
    if (!_gantry_r.ok())                                                                           \
      return ::gantry::Err(_gantry_r.take_error());                                                \
  } while (0)

#define GANTRY_CONCAT_INNER(a, b) a##b
#define GANTRY_CONCAT(a, b) GANTRY_CONCAT_INNER(a, b)
#define GANTRY_ASSIGN_OR_RETURN(lhs, expr)                                                         \
  auto GANTRY_CONCAT(_gantry_r_, __LINE__) = (expr);                                               \
  if (!GANTRY_CONCAT(_gantry_r_, __LINE__).ok())                                                   \
    return ::gantry::Err(GANTRY_CONCAT(_gantry_r_, __LINE__).take_error());                        \
  lhs = std::move(GANTRY_CONCAT(_gantry_r_, __LINE__)).value()
