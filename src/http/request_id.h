// x-request-id handling: accept a client's id if it is safe to log and echo, else make one.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "http/request.h"

namespace gantry::http {

inline constexpr std::size_t kMaxRequestIdLength = 128;

// Keeps only [A-Za-z0-9._-] and truncates to kMaxRequestIdLength, so that a client cannot
// inject header or log syntax. Empty when nothing usable is left.
std::string sanitize_request_id(std::string_view raw);

// Generates 128-bit random ids as 32 hex digits. Owned by one I/O thread (no locking); each
// server thread has its own, seeded once from std::random_device.
class RequestIdGenerator {
public:
  RequestIdGenerator();
  explicit RequestIdGenerator(std::uint64_t seed) : rng_(seed) {}
  std::string next();

private:
  std::mt19937_64 rng_;
};

// A process-unique call id, "<128 random bits per process, hex>:<counter>". The ':' puts it in
// a namespace sanitize_request_id cannot produce, so no client id equals one (audit H4); the
// random part keeps ids of different processes (restarts, nodes) apart. Thread-safe.
std::string next_call_id();

// The id of the response to a call (its "id" field). Never the client's X-Request-Id (audit I:
// a client-chosen id lets responses share or spoof ids): 32 random hex digits for an HTTP call;
// for a job's execution, whose call id is the server-owned job id (no ':'), that id, so a job's
// result names its job. Thread-safe.
std::string response_id(const Request &req);

} // namespace gantry::http
