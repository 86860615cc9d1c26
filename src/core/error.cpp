#include "core/result.h"

namespace gantry {

int http_status(ErrorCode code) {
  switch (code) {
  case ErrorCode::kInvalidArgument:
  case ErrorCode::kContextLengthExceeded:
  case ErrorCode::kCorruptData:
  case ErrorCode::kUnsupported: return 400;
  case ErrorCode::kUnauthorized: return 401;
  case ErrorCode::kPermissionDenied: return 403;
  case ErrorCode::kNotFound: return 404;
  case ErrorCode::kPayloadTooLarge: return 413;
  case ErrorCode::kRateLimited:
  case ErrorCode::kQueueFull:
  case ErrorCode::kQuotaExceeded: return 429;
  case ErrorCode::kConflict: return 409;
  case ErrorCode::kUnprocessable: return 422;
  case ErrorCode::kCancelled: return 499;
  case ErrorCode::kResourceExhausted:
  case ErrorCode::kUnavailable:
  case ErrorCode::kCircuitOpen: return 503;
  case ErrorCode::kIo:
  case ErrorCode::kInternal: return 500;
  }
  return 500;
}

std::string_view openai_error_type(ErrorCode code) {
  switch (code) {
  case ErrorCode::kInvalidArgument:
  case ErrorCode::kContextLengthExceeded:
  case ErrorCode::kCorruptData:
  case ErrorCode::kUnsupported:
  case ErrorCode::kPayloadTooLarge:
  case ErrorCode::kNotFound:
  case ErrorCode::kConflict:
  case ErrorCode::kUnprocessable: return "invalid_request_error";
  case ErrorCode::kQuotaExceeded: return "insufficient_quota";
  case ErrorCode::kUnauthorized: return "authentication_error";
  case ErrorCode::kPermissionDenied: return "permission_error";
  case ErrorCode::kRateLimited:
  case ErrorCode::kQueueFull: return "rate_limit_error";
  case ErrorCode::kCancelled:
  case ErrorCode::kResourceExhausted:
  case ErrorCode::kUnavailable:
  case ErrorCode::kCircuitOpen:
  case ErrorCode::kIo:
  case ErrorCode::kInternal: return "server_error";
  }
  return "server_error";
}

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
  case ErrorCode::kInvalidArgument: return "invalid_value";
  case ErrorCode::kContextLengthExceeded: return "context_length_exceeded";
  case ErrorCode::kUnauthorized: return "invalid_api_key";
  case ErrorCode::kPermissionDenied: return "permission_denied";
  case ErrorCode::kNotFound: return "not_found";
  case ErrorCode::kPayloadTooLarge: return "payload_too_large";
  case ErrorCode::kRateLimited: return "rate_limit_exceeded";
  case ErrorCode::kQueueFull: return "queue_full";
  case ErrorCode::kQuotaExceeded: return "insufficient_quota";
  case ErrorCode::kConflict: return "idempotency_key_in_use";
  case ErrorCode::kUnprocessable: return "idempotency_key_reused";
  case ErrorCode::kCircuitOpen: return "circuit_open";
  case ErrorCode::kResourceExhausted: return "resource_exhausted";
  case ErrorCode::kUnavailable: return "unavailable";
  case ErrorCode::kCancelled: return "cancelled";
  case ErrorCode::kCorruptData: return "corrupt_data";
  case ErrorCode::kUnsupported: return "unsupported";
  case ErrorCode::kIo: return "io_error";
  case ErrorCode::kInternal: return "internal_error";
  }
  return "internal_error";
}

} // namespace gantry
