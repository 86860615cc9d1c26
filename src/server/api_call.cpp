#include "server/api_call.h"

#include <openssl/crypto.h>

#include <cmath>

#include "http/request_id.h"
#include "server/observed_writer.h"

namespace gantry::server {

void append_rate_headers(const control::RateSnapshot &s, http::Headers &h) {
  if (s.limit_requests >= 0) {
    h.push_back({"x-ratelimit-limit-requests", std::to_string(s.limit_requests)});
    h.push_back({"x-ratelimit-remaining-requests", std::to_string(s.remaining_requests)});
    h.push_back({"x-ratelimit-reset-requests", control::format_reset(s.reset_requests)});
  }
  if (s.limit_tokens >= 0) {
    h.push_back({"x-ratelimit-limit-tokens", std::to_string(s.limit_tokens)});
    h.push_back({"x-ratelimit-remaining-tokens", std::to_string(s.remaining_tokens)});
    h.push_back({"x-ratelimit-reset-tokens", control::format_reset(s.reset_tokens)});
  }
}

void add_outcome_headers(const CallOutcome &o, http::Headers &headers) {
  // Room for all of them and the two an event stream adds: grown one push at a time, the
  // vector was reallocated four times per response.
  headers.reserve(headers.size() + 11);
  if (o.rate)
    append_rate_headers(*o.rate, headers);
  if (!o.cache.empty())
    headers.push_back({"x-gantry-cache", o.cache});
  if (o.priced && !o.stream)
    headers.push_back({"x-gantry-cost-usd", format_cost(o.cost_usd)});
  // A call held while its model's replica started (issue 14); a stream got it as a comment.
  if (o.cold_start_ms >= 0 && !o.stream)
    headers.push_back({"x-gantry-cold-start-ms", std::to_string(std::llround(o.cold_start_ms))});
}

http::Response outcome_error_response(const CallOutcome &o) {
  http::Response r = http::error_response(o.error ? *o.error : Error::internal("the call failed"));
  add_outcome_headers(o, r.headers);
  return r;
}

std::shared_ptr<CallOutcome> ApiCalls::begin(http::Request &req,
                                             std::shared_ptr<http::ResponseWriter> &w) {
  if (req.call_id.empty()) // an in-process caller that named no ledger key
    req.call_id = http::next_call_id();
  auto rec = std::make_shared<CallOutcome>(outcome(req.request_id, req.path));
  w = std::make_shared<ObservedWriter>(std::move(w), rec, clock_,
                                       [this](CallOutcome &r) { recorder_.record(r); });
  return rec;
}

CallOutcome ApiCalls::outcome(const std::string &request_id, const std::string &endpoint) const {
  CallOutcome o;
  o.arrived = clock_.now();
  o.arrived_unix_ms = clock_.unix_millis();
  o.request_id = request_id;
  o.endpoint = endpoint;
  return o;
}

bool ApiCalls::open(http::ResponseWriter &w, CallOutcome &rec) {
  if (!shutting_down_.load())
    return true;
  Error e{ErrorCode::kUnavailable,
          "this replica is draining (shutting down or preempted) and takes no new requests; retry "
          "and another replica will answer",
          ""};
  e.retry_after_ms = 1000;
  fail(w, rec, std::move(e));
  return false;
}

std::optional<std::string> request_credentials(const http::Request &req, KeyHeaders which) {
  if (auto a = req.header("Authorization"))
    return std::string(*a);
  if (which == KeyHeaders::kBearerOrXApiKey) {
    if (auto k = req.header("x-api-key"); k && !k->empty())
      return "Bearer " + std::string(*k);
  }
  return std::nullopt;
}

bool ApiCalls::internal_token_ok(const std::optional<std::string> &credentials) const {
  if (!credentials || credentials->size() != internal_token_.size() + 7 ||
      !credentials->starts_with("Bearer "))
    return false;
  return CRYPTO_memcmp(credentials->data() + 7, internal_token_.data(), internal_token_.size()) ==
         0;
}

AuthOutcome ApiCalls::authenticate(const http::Request &req, http::ResponseWriter &w,
                                   CallOutcome *rec, KeyHeaders which) {
  const auto credentials = request_credentials(req, which);
  if (internal_only()) {
    if (internal_token_ok(credentials))
      return AuthOutcome::allow(std::nullopt);
    Error e{ErrorCode::kUnauthorized,
            "this node is a Gantry worker: it serves gateways only (internal token required)", ""};
    http::Response r = http::error_response(e);
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
    if (rec)
      rec->error = e;
    w.respond(std::move(r));
    return AuthOutcome::refused();
  }
  auto p = control_.authenticate(credentials ? std::optional<std::string_view>(*credentials)
                                             : std::nullopt);
  if (!p) {
    http::Response r = http::error_response(p.error());
    if (p.error().code == ErrorCode::kUnauthorized) {
      r.headers.push_back({"WWW-Authenticate", "Bearer"});
      control_.record_rejection(nullptr, "", req.path, req.call_id, p.error(),
                                clock_.unix_millis());
    }
    if (rec)
      rec->error = p.error();
    w.respond(std::move(r));
    return AuthOutcome::refused();
  }
  if (rec && *p) {
    rec->key_id = (*p)->key_id;
    rec->project = (*p)->project;
  }
  return AuthOutcome::allow(std::move(p).value());
}

void ApiCalls::fail(http::ResponseWriter &w, CallOutcome &rec, Error error) {
  rec.status = http_status(error.code);
  rec.error = std::move(error);
  w.respond(outcome_error_response(rec));
}

} // namespace gantry::server
