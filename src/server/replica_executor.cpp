#include "server/replica_executor.h"

#include <signal.h>

#include <algorithm>
#include <thread>

#include "core/json_text.h"

namespace gantry::server {
namespace {

constexpr std::chrono::milliseconds kPoll{20}; // stop_all()'s wait for exits

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

} // namespace

void ReplicaExecutor::log(const std::string &event, const std::string &fields) const {
  if (o_.log)
    o_.log(R"({"event":")" + event + R"(","model":)" + json_quoted(o_.model) + fields + "}");
}

void ReplicaExecutor::fail(const std::string &what, const std::string &detail) {
  ++failures_;
  ++consecutive_;
  auto wait = o_.backoff_base * (int64_t{1} << std::min(consecutive_ - 1, 16));
  wait = std::min(wait, o_.backoff_max);
  retry_at_ = clock_.now() + wait;
  log("autoscale_executor_failure",
      R"(,"executor":)" + json_quoted(o_.spec.executor) + R"(,"failure":)" + json_quoted(what) +
          R"(,"detail":)" + json_quoted(detail) + R"(,"failures_total":)" +
          std::to_string(failures_.load()) + R"(,"retry_in_s":)" + std::to_string(seconds(wait)));
}

// --- LocalExecutor

autoscale::ReplicaCounts LocalExecutor::observe(const std::set<std::string> &live_nodes,
                                                int live_workers) {
  (void)live_workers; // only the processes started here count
  const auto now = clock_.now();
  autoscale::ReplicaCounts c;
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker &w = *it;
    if (auto code = processes_.poll_exit(w.pid)) {
      if (w.draining)
        log("autoscale_worker_exited",
            R"(,"pid":)" + std::to_string(w.pid) + R"(,"code":)" + std::to_string(*code));
      else
        fail("worker_exited", "worker pid " + std::to_string(w.pid) + " exited with " +
                                  std::to_string(*code) + " without being stopped");
      it = workers_.erase(it);
      continue;
    }
    w.live = live_nodes.count(w.node_id) > 0;
    if (w.live && !w.was_live) {
      w.was_live = true;
      succeeded();
      log("autoscale_worker_ready", R"(,"pid":)" + std::to_string(w.pid) + R"(,"node":)" +
                                        json_quoted(w.node_id) + R"(,"start_s":)" +
                                        std::to_string(seconds(now - w.started)));
    }
    if (w.draining) {
      if (now - w.stopped >= o_.kill_after)
        processes_.signal(w.pid, SIGKILL); // reaped at a later observe
      ++c.draining;
    } else if (w.live) {
      ++c.ready;
    } else {
      if (!w.was_live && now - w.started >= o_.spec.start_timeout) {
        fail("worker_start_timeout", "worker pid " + std::to_string(w.pid) +
                                         " was not in the registry after " +
                                         std::to_string(seconds(now - w.started)) + " s");
        processes_.signal(w.pid, SIGKILL);
        w.draining = true; // gone at a later observe; not counted as a failure again
        w.stopped = now;
        ++c.draining;
      } else {
        ++c.starting;
      }
    }
    ++it;
  }
  return c;
}

void LocalExecutor::reconcile(int desired) {
  desired = std::clamp(desired, 0, o_.max_replicas);
  const auto now = clock_.now();
  int active = 0;
  for (const auto &w : workers_)
    active += !w.draining;
  // Bounded: at most max_replicas active and as many again still draining.
  while (active < desired && !backing_off() &&
         static_cast<int>(workers_.size()) < 2 * o_.max_replicas) {
    auto pid = processes_.spawn(o_.worker_argv, {});
    if (!pid) {
      fail("spawn", pid.error().message);
      return;
    }
    Worker w;
    w.pid = *pid;
    w.node_id = o_.node_prefix + std::to_string(*pid);
    w.started = now;
    workers_.push_back(w);
    ++active;
    log("autoscale_worker_started", R"(,"pid":)" + std::to_string(*pid) + R"(,"node":)" +
                                        json_quoted(w.node_id) + R"(,"desired":)" +
                                        std::to_string(desired));
  }
  // The surplus: those not serving yet first (nothing to drain), the newest first.
  while (active > desired) {
    Worker *victim = nullptr;
    for (auto &w : workers_) {
      if (w.draining)
        continue;
      if (!victim || (victim->live && !w.live) ||
          (victim->live == w.live && w.started >= victim->started))
        victim = &w;
    }
    if (!victim)
      break;
    processes_.signal(victim->pid, SIGTERM);
    victim->draining = true;
    victim->stopped = now;
    --active;
    log("autoscale_worker_stopping",
        R"(,"pid":)" + std::to_string(victim->pid) + R"(,"desired":)" + std::to_string(desired));
  }
}

void LocalExecutor::stop_all(std::chrono::milliseconds grace) {
  for (auto &w : workers_)
    if (!w.draining) {
      processes_.signal(w.pid, SIGTERM);
      w.draining = true;
      w.stopped = clock_.now();
    }
  // Shutdown only: a short poll for `grace` (the workers' drains are what take time).
  for (int64_t polls = grace / kPoll + 1; polls > 0 && !workers_.empty(); --polls) {
    std::erase_if(workers_, [&](const Worker &w) { return processes_.poll_exit(w.pid); });
    if (!workers_.empty())
      std::this_thread::sleep_for(kPoll);
  }
  for (auto &w : workers_) {
    processes_.signal(w.pid, SIGKILL);
    while (!processes_.poll_exit(w.pid))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  workers_.clear();
}

// --- CommandExecutor

autoscale::ReplicaCounts CommandExecutor::observe(const std::set<std::string> &live_nodes,
                                                  int live_workers) {
  (void)live_nodes;
  const auto now = clock_.now();
  if (pid_ != 0) {
    if (auto code = processes_.poll_exit(pid_)) {
      if (killed_) {
        fail("command_timeout", "scale_command for " + std::to_string(running_for_) +
                                    " replicas ran over command_timeout_s (" +
                                    std::to_string(o_.spec.command_timeout.count() / 1000) +
                                    " s) and was killed");
      } else if (*code != 0) {
        fail("command_failed", "scale_command for " + std::to_string(running_for_) +
                                   " replicas exited with " + std::to_string(*code));
      } else {
        succeeded();
        applied_ = running_for_;
        log("autoscale_command_applied", R"(,"desired":)" + std::to_string(running_for_));
      }
      pid_ = 0;
      killed_ = false;
    } else if (!killed_ && now - started_ >= o_.spec.command_timeout) {
      processes_.signal(pid_, SIGKILL); // reaped and counted at a later observe
      killed_ = true;
    }
  }
  autoscale::ReplicaCounts c;
  c.ready = live_workers;
  c.starting = std::max(0, asked_ - live_workers);
  return c;
}

void CommandExecutor::reconcile(int desired) {
  desired = std::clamp(desired, 0, o_.max_replicas);
  if (pid_ != 0 || (applied_ && *applied_ == desired) || backing_off())
    return;
  std::vector<std::string> argv = o_.spec.scale_command;
  argv.push_back(std::to_string(desired));
  auto pid = processes_.spawn(
      argv, {"GANTRY_MODEL=" + o_.model, "GANTRY_DESIRED_REPLICAS=" + std::to_string(desired)});
  if (!pid) {
    fail("spawn", pid.error().message);
    return;
  }
  pid_ = *pid;
  running_for_ = desired;
  asked_ = desired;
  started_ = clock_.now();
  log("autoscale_command_started",
      R"(,"desired":)" + std::to_string(desired) + R"(,"pid":)" + std::to_string(pid_));
}

void CommandExecutor::stop_all(std::chrono::milliseconds grace) {
  if (pid_ == 0)
    return;
  for (int64_t polls = grace / kPoll + 1; !processes_.poll_exit(pid_); --polls) {
    if (polls <= 0) {
      processes_.signal(pid_, SIGKILL);
      while (!processes_.poll_exit(pid_))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      break;
    }
    std::this_thread::sleep_for(kPoll);
  }
  pid_ = 0;
}

autoscale::ReplicaCounts ExternalExecutor::observe(const std::set<std::string> &live_nodes,
                                                   int live_workers) {
  (void)live_nodes;
  autoscale::ReplicaCounts c;
  c.ready = live_workers;
  c.starting = std::max(0, asked_ - live_workers);
  return c;
}

} // namespace gantry::server
