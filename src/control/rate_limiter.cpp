#include "control/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gantry::control {
namespace {

using namespace std::chrono;

milliseconds time_to(double missing, int64_t per_minute) {
  if (missing <= 0 || per_minute <= 0)
    return milliseconds(0);
  return milliseconds(static_cast<int64_t>(std::ceil(missing * 60'000.0 / per_minute)));
}

} // namespace

std::string format_reset(milliseconds d) {
  int64_t ms = std::max<int64_t>(d.count(), 0);
  if (ms < 1000)
    return std::to_string(ms) + "ms";
  const int64_t h = ms / 3'600'000;
  ms -= h * 3'600'000;
  const int64_t m = ms / 60'000;
  ms -= m * 60'000;
  std::string out;
  if (h > 0)
    out += std::to_string(h) + "h";
  if (h > 0 || m > 0)
    out += std::to_string(m) + "m";
  const int64_t s = ms / 1000, frac = ms % 1000;
  out += std::to_string(s);
  if (frac != 0) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), ".%03d", static_cast<int>(frac));
    std::string f(buf);
    while (f.back() == '0')
      f.pop_back();
    out += f;
  }
  return out + "s";
}

void MemoryRateLimiter::refill(Bucket &b, int64_t per_minute, steady_clock::time_point now) {
  const double cap = static_cast<double>(per_minute);
  if (!b.init) {
    b.init = true;
    b.level = cap;
    b.at = now;
    return;
  }
  if (now > b.at) {
    const double dt = duration<double>(now - b.at).count();
    b.level = std::min(cap, b.level + dt * cap / 60.0);
    b.at = now;
  }
}

RateDecision MemoryRateLimiter::check(const std::vector<LimitRule> &rules) {
  RateDecision d;
  const auto now = clock_.now();
  std::lock_guard<std::mutex> lk(mu_);
  d.allowed = !refuse(rules, 0, false, now, d);
  return d;
}

bool MemoryRateLimiter::refuse(const std::vector<LimitRule> &rules, int64_t tokens, bool tokens_too,
                               std::chrono::steady_clock::time_point now, RateDecision &d) {
  for (const auto &r : rules) {
    ScopeState &s = scopes_[r.scope];
    const Limits &l = r.limits;
    if (l.max_concurrent > 0 && s.concurrent >= l.max_concurrent) {
      d.scope = r.scope;
      d.what = "concurrent requests";
      d.message = "Rate limit reached for " + r.scope + " on concurrent requests: limit " +
                  std::to_string(l.max_concurrent) + ". Retry when a request finishes.";
      d.retry_after = milliseconds(1000);
      return true;
    }
    if (l.rpm > 0) {
      refill(s.requests, l.rpm, now);
      if (s.requests.level < 1.0) {
        d.scope = r.scope;
        d.what = "requests";
        d.retry_after = time_to(1.0 - s.requests.level, l.rpm);
        d.message = "Rate limit reached for " + r.scope + " on requests per minute (RPM): limit " +
                    std::to_string(l.rpm) + ". Please try again in " + format_reset(d.retry_after) +
                    ".";
        d.snapshot.limit_requests = l.rpm;
        d.snapshot.remaining_requests = 0;
        d.snapshot.reset_requests = time_to(l.rpm - s.requests.level, l.rpm);
        return true;
      }
    }
    if (l.tpm > 0 && tokens_too) {
      refill(s.tokens, l.tpm, now);
      if (tokens > l.tpm) {
        d.scope = r.scope;
        d.what = "tokens";
        d.message = "Request too large for " + r.scope + " on tokens per minute (TPM): limit " +
                    std::to_string(l.tpm) + ", requested " + std::to_string(tokens) +
                    " (prompt + max_tokens). Lower max_tokens or the prompt.";
        d.retry_after = milliseconds(60'000);
        return true;
      }
      if (s.tokens.level < static_cast<double>(tokens)) {
        d.scope = r.scope;
        d.what = "tokens";
        d.retry_after = time_to(tokens - s.tokens.level, l.tpm);
        d.message = "Rate limit reached for " + r.scope + " on tokens per minute (TPM): limit " +
                    std::to_string(l.tpm) + ", remaining " +
                    std::to_string(static_cast<int64_t>(std::max(0.0, s.tokens.level))) +
                    ", requested " + std::to_string(tokens) + ". Please try again in " +
                    format_reset(d.retry_after) + ".";
        d.snapshot.limit_tokens = l.tpm;
        d.snapshot.remaining_tokens = static_cast<int64_t>(std::max(0.0, s.tokens.level));
        d.snapshot.reset_tokens = time_to(l.tpm - s.tokens.level, l.tpm);
        return true;
      }
    }
  }
  return false;
}

RateDecision MemoryRateLimiter::acquire(const std::vector<LimitRule> &rules, int64_t tokens) {
  RateDecision d;
  const auto now = clock_.now();
  std::lock_guard<std::mutex> lk(mu_);
  // Check every rule before taking anything, so a refusal leaves no partial reservation.
  if (refuse(rules, tokens, true, now, d))
    return d;
  double tightest_req = 2.0, tightest_tok = 2.0;
  Held held;
  held.tokens = tokens;
  for (const auto &r : rules) {
    ScopeState &s = scopes_[r.scope];
    const Limits &l = r.limits;
    if (l.rpm > 0) {
      s.requests.level -= 1.0;
      const double frac = s.requests.level / static_cast<double>(l.rpm);
      if (frac < tightest_req) {
        tightest_req = frac;
        d.snapshot.limit_requests = l.rpm;
        d.snapshot.remaining_requests = static_cast<int64_t>(std::floor(s.requests.level));
        d.snapshot.reset_requests = time_to(l.rpm - s.requests.level, l.rpm);
      }
    }
    if (l.tpm > 0) {
      s.tokens.level -= static_cast<double>(tokens);
      const double frac = s.tokens.level / static_cast<double>(l.tpm);
      if (frac < tightest_tok) {
        tightest_tok = frac;
        d.snapshot.limit_tokens = l.tpm;
        d.snapshot.remaining_tokens =
            static_cast<int64_t>(std::floor(std::max(0.0, s.tokens.level)));
        d.snapshot.reset_tokens = time_to(l.tpm - s.tokens.level, l.tpm);
      }
    }
    if (l.max_concurrent > 0)
      ++s.concurrent;
    held.rules.emplace_back(r.scope, l);
  }
  d.allowed = true;
  d.lease = {next_lease_++, tokens};
  held_.emplace(d.lease.id, std::move(held));
  return d;
}

void MemoryRateLimiter::release(const RateLease &lease, int64_t used_tokens) {
  give_back(lease, used_tokens, false);
}

void MemoryRateLimiter::rollback(const RateLease &lease) { give_back(lease, 0, true); }

void MemoryRateLimiter::give_back(const RateLease &lease, int64_t used_tokens, bool request_too) {
  if (lease.id == 0)
    return;
  const auto now = clock_.now();
  std::lock_guard<std::mutex> lk(mu_);
  auto it = held_.find(lease.id);
  if (it == held_.end())
    return;
  const double refund = static_cast<double>(it->second.tokens - used_tokens);
  for (const auto &[scope, l] : it->second.rules) {
    ScopeState &s = scopes_[scope];
    if (l.max_concurrent > 0 && s.concurrent > 0)
      --s.concurrent;
    if (request_too && l.rpm > 0) {
      refill(s.requests, l.rpm, now);
      s.requests.level = std::min(static_cast<double>(l.rpm), s.requests.level + 1.0);
    }
    if (l.tpm > 0) {
      refill(s.tokens, l.tpm, now);
      // A negative refund (more used than reserved) is debt the bucket pays back by refilling.
      s.tokens.level = std::min(static_cast<double>(l.tpm), s.tokens.level + refund);
    }
  }
  held_.erase(it);
}

} // namespace gantry::control
