#include "cluster/worker_heartbeat.h"

#include "core/json_text.h"

namespace gantry::cluster {

WorkerHeartbeat::WorkerHeartbeat(WorkerRegistry &registry, Snapshot snapshot,
                                 HeartbeatOptions options, Log log)
    : registry_(registry), snapshot_(std::move(snapshot)), options_(options), log_(std::move(log)) {
}

WorkerHeartbeat::~WorkerHeartbeat() { stop(); }

Status WorkerHeartbeat::start() {
  const WorkerInfo w = snapshot_();
  node_id_ = w.node_id;
  GANTRY_TRY(registry_.announce(w, options_.ttl));
  ++beats_;
  thread_ = std::thread([this] { loop(); });
  return Ok();
}

void WorkerHeartbeat::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  bool failing = false;
  while (!cv_.wait_for(lk, options_.period, [&] { return stopping_; })) {
    lk.unlock();
    auto st = registry_.announce(snapshot_(), options_.ttl);
    if (st) {
      ++beats_;
      if (failing && log_)
        log_(R"({"event":"worker_heartbeat_recovered"})");
      failing = false;
    } else {
      ++failures_;
      // Logged once per outage, not once per beat.
      if (!failing && log_)
        log_(R"({"event":"worker_heartbeat_failed","error":")" + json_escaped(st.error().message) +
             "\"}");
      failing = true;
    }
    lk.lock();
  }
}

void WorkerHeartbeat::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_)
      return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  if (!node_id_.empty())
    (void)registry_.withdraw(node_id_); // best effort: the TTL covers a failure
}

} // namespace gantry::cluster
