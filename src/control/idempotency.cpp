#include "control/idempotency.h"

namespace gantry::control {

void IdempotencyStore::expire(std::chrono::steady_clock::time_point now) {
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    const bool stale =
        it == entries_.end() || it->second.expires <= now || entries_.size() > max_entries_;
    if (!stale)
      break;
    if (it != entries_.end())
      entries_.erase(it);
    order_.pop_front();
  }
}

IdempotencyStore::Begin IdempotencyStore::begin(const std::string &key,
                                                const std::string &body_digest) {
  const auto now = clock_.now();
  std::lock_guard<std::mutex> lk(mu_);
  expire(now);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    const Entry &e = it->second;
    if (e.digest != body_digest)
      return {Outcome::kMismatch, nullptr};
    if (!e.done)
      return {Outcome::kInFlight, nullptr};
    return {Outcome::kReplay, e.response};
  }
  order_.push_back(key);
  Entry e;
  e.digest = body_digest;
  e.expires = now + ttl_;
  e.order = std::prev(order_.end());
  entries_.emplace(key, std::move(e));
  expire(now);
  return {Outcome::kFirst, nullptr};
}

void IdempotencyStore::complete(const std::string &key, StoredResponse response) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end())
    return;
  it->second.done = true;
  it->second.response = std::make_shared<const StoredResponse>(std::move(response));
}

void IdempotencyStore::abandon(const std::string &key) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end())
    return;
  order_.erase(it->second.order);
  entries_.erase(it);
}

size_t IdempotencyStore::size() {
  std::lock_guard<std::mutex> lk(mu_);
  return entries_.size();
}

} // namespace gantry::control
