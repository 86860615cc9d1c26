#include "control/idempotency.h"

#include "core/byte_codec.h"

#include <cstring>

namespace gantry::control {
namespace {

constexpr char kMagic[4] = {'G', 'I', 'R', 1}; // Gantry idempotency record, version 1

} // namespace

size_t encoded_size(const StoredResponse &r) {
  size_t n = sizeof(kMagic) + 4 + 4 + 4 + r.content_type.size() + 4 + 4 + r.body.size() + 4;
  for (const auto &[k, v] : r.headers)
    n += 8 + k.size() + v.size();
  for (const auto &e : r.events)
    n += 4 + e.size();
  return n;
}

std::string encode_stored_response(const StoredResponse &r) {
  std::string out;
  out.reserve(encoded_size(r));
  out.append(kMagic, sizeof(kMagic));
  put_u32(out, static_cast<uint32_t>(r.status));
  put_u32(out, r.sse ? 1 : 0);
  put_str(out, r.content_type);
  put_u32(out, static_cast<uint32_t>(r.headers.size()));
  for (const auto &[k, v] : r.headers) {
    put_str(out, k);
    put_str(out, v);
  }
  put_str(out, r.body);
  put_u32(out, static_cast<uint32_t>(r.events.size()));
  for (const auto &e : r.events)
    put_str(out, e);
  return out;
}

Result<StoredResponse> decode_stored_response(std::string_view bytes) {
  auto bad = [] { return Err(ErrorCode::kInternal, "malformed stored idempotent response"); };
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return bad();
  ByteReader rd{bytes.substr(sizeof(kMagic))};
  StoredResponse r;
  r.status = static_cast<int>(rd.u32());
  const uint32_t sse = rd.u32();
  r.sse = sse == 1;
  r.content_type = rd.str();
  const uint32_t nh = rd.u32();
  // Each header takes at least 8 bytes: a count beyond what is left is corruption, not a size
  // to reserve.
  if (!rd.ok || sse > 1 || nh > rd.in.size() / 8)
    return bad();
  for (uint32_t i = 0; i < nh && rd.ok; ++i) {
    std::string k = rd.str();
    std::string v = rd.str();
    r.headers.emplace_back(std::move(k), std::move(v));
  }
  r.body = rd.str();
  const uint32_t ne = rd.u32();
  if (!rd.ok || ne > rd.in.size() / 4)
    return bad();
  r.events.reserve(ne);
  for (uint32_t i = 0; i < ne && rd.ok; ++i)
    r.events.push_back(rd.str());
  if (!rd.ok || !rd.in.empty())
    return bad();
  return r;
}

MemoryIdempotencyStore::MemoryIdempotencyStore(const Clock &clock, IdempotencyLimits limits)
    : clock_(clock), limits_(limits) {}

void MemoryIdempotencyStore::erase(Map::iterator it) {
  bytes_ -= it->second.charged;
  ttl_.erase({it->second.expires, it->first});
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

void MemoryIdempotencyStore::expire(TimePoint now) {
  while (!ttl_.empty() && ttl_.begin()->first <= now) {
    auto it = entries_.find(ttl_.begin()->second);
    if (it == entries_.end()) {
      ttl_.erase(ttl_.begin());
      continue;
    }
    erase(it);
  }
}

void MemoryIdempotencyStore::make_room() {
  while (!lru_.empty() && (bytes_ > limits_.max_bytes || entries_.size() > limits_.max_entries)) {
    auto it = entries_.find(lru_.front());
    if (it == entries_.end()) {
      lru_.pop_front();
      continue;
    }
    erase(it);
    ++evictions_;
  }
}

void MemoryIdempotencyStore::charge(Entry &e, size_t charged) {
  bytes_ = bytes_ - e.charged + charged;
  e.charged = charged;
}

IdempotencyStore::Begin MemoryIdempotencyStore::begin(const std::string &key,
                                                      const std::string &body_digest) {
  const auto now = clock_.now();
  std::lock_guard<std::mutex> lk(mu_);
  expire(now);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    Entry &e = it->second;
    lru_.splice(lru_.end(), lru_, e.lru); // used: most recent
    if (e.digest != body_digest)
      return {Outcome::kMismatch, nullptr};
    switch (e.state) {
    case Entry::State::kInFlight: return {Outcome::kInFlight, nullptr};
    case Entry::State::kNotStored: return {Outcome::kNotStored, nullptr};
    case Entry::State::kDone: break;
    }
    auto r = decode_stored_response(e.bytes);
    if (!r) {
      // Cannot happen for bytes this process encoded; a retry then runs again.
      erase(it);
      return {Outcome::kFirst, nullptr};
    }
    return {Outcome::kReplay, std::make_shared<const StoredResponse>(std::move(r).value())};
  }
  lru_.push_back(key);
  Entry e;
  e.digest = body_digest;
  e.expires = now + limits_.ttl;
  e.lru = std::prev(lru_.end());
  ttl_.emplace(e.expires, key);
  auto [pos, _] = entries_.emplace(key, std::move(e));
  charge(pos->second, key.size() + body_digest.size() + kEntryOverhead);
  make_room();
  return {Outcome::kFirst, nullptr};
}

void MemoryIdempotencyStore::complete(const std::string &key, const StoredResponse &response) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.state != Entry::State::kInFlight)
    return; // evicted or expired meanwhile: nothing to replay, a retry runs again
  Entry &e = it->second;
  const size_t base = key.size() + e.digest.size() + kEntryOverhead;
  if (response.truncated || encoded_size(response) > limits_.max_entry_bytes) {
    e.state = Entry::State::kNotStored;
    ++too_large_;
    charge(e, base);
    return;
  }
  e.bytes = encode_stored_response(response);
  e.state = Entry::State::kDone;
  ++stored_;
  charge(e, base + e.bytes.size());
  make_room();
}

void MemoryIdempotencyStore::abandon(const std::string &key) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end())
    erase(it);
}

IdempotencyStats MemoryIdempotencyStore::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  return {entries_.size(), bytes_, limits_.max_bytes, stored_, too_large_, evictions_};
}

size_t MemoryIdempotencyStore::size() {
  std::lock_guard<std::mutex> lk(mu_);
  return entries_.size();
}

} // namespace gantry::control
