// autoscale_sim: the autoscale policy against fixed max_replicas and fixed 1 over a synthetic day
// (simulation.h states the model). Prints one table; --check exits 1 unless the policy meets the
// goal (meets_goal) and has fewer late requests than fixed 1.
//
//   autoscale_sim [--hours 24] [--cold-start-s 30] [--spike-ramp-s 120] [--seed 1]
//                 [--max-replicas 8] [--min-replicas 0] [--target-ongoing 4]
//                 [--upscale-delay-s S] [--downscale-delay-s S] [--to-zero-delay-s S]
//                 [--step N] [--wait-target-s 5] [--check]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "autoscale/policy_config.h"
#include "autoscale_sim/simulation.h"

using namespace gantry::autoscale;

namespace {

void row(const sim::Result &r, const sim::Result &base) {
  std::printf("| %-10s | %8.1f | %5.2f | %7lld | %5lld | %6.2f%% | %6.2f | %6.2f | %7.1f | %6.2f | "
              "%4d | %5lld |\n",
              r.name.c_str(), r.replica_hours, r.replica_hours / base.replica_hours,
              static_cast<long long>(r.requests), static_cast<long long>(r.late),
              100 * r.late_share, r.p50_wait_s, r.p99_wait_s, r.max_wait_s, r.p99_latency_s,
              r.peak_replicas, static_cast<long long>(r.scale_changes));
}

std::chrono::milliseconds secs(const char *v) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::atof(v) * 1000));
}

} // namespace

int main(int argc, char **argv) {
  sim::Options o;
  PolicyConfig p;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") {
      check = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "autoscale_sim: %s needs a value\n", a.c_str());
      return 2;
    }
    const char *v = argv[++i];
    if (a == "--hours")
      o.traffic.day_hours = std::atof(v);
    else if (a == "--cold-start-s")
      o.replica.cold_start_s = std::atof(v);
    else if (a == "--spike-ramp-s")
      o.traffic.spike_ramp_s = std::atof(v);
    else if (a == "--seed")
      o.seed = std::strtoull(v, nullptr, 10);
    else if (a == "--wait-target-s")
      o.wait_target_s = std::atof(v);
    else if (a == "--max-replicas")
      p.max_replicas = std::atoi(v);
    else if (a == "--min-replicas")
      p.min_replicas = std::atoi(v);
    else if (a == "--target-ongoing")
      p.target_ongoing_requests = std::atof(v);
    else if (a == "--upscale-delay-s")
      p.upscale_delay = secs(v);
    else if (a == "--downscale-delay-s")
      p.downscale_delay = secs(v);
    else if (a == "--to-zero-delay-s")
      p.downscale_to_zero_delay = secs(v);
    else if (a == "--queue-wait-s")
      p.target_queue_wait = secs(v);
    else if (a == "--step")
      p.max_scale_step = std::atoi(v);
    else {
      std::fprintf(stderr, "autoscale_sim: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (auto st = validate(p); !st) {
    std::fprintf(stderr, "autoscale_sim: %s: %s\n", st.error().param.c_str(),
                 st.error().message.c_str());
    return 2;
  }
  const sim::Result fixed_max = sim::run_fixed(p.max_replicas, o);
  const sim::Result fixed_one = sim::run_fixed(1, o);
  const sim::Result policy = sim::run_policy(p, o);
  std::printf("day %.1f h, peak %.2f req/s, spike x%.0f for %.0f min (ramp %.0f s), replica: %d "
              "slots, service %.1f s mean, cold start %.0f s; late = waited > %.0f s\n",
              o.traffic.day_hours, o.traffic.peak_rps, o.traffic.spike_factor,
              o.traffic.spike_minutes * o.traffic.day_hours / 24,
              o.traffic.spike_ramp_s * o.traffic.day_hours / 24, o.replica.slots,
              o.replica.mean_service_s, o.replica.cold_start_s, o.wait_target_s);
  std::printf("policy: min %d max %d target_ongoing %.2g queue_wait %.0f s up %.0f s down %.0f s "
              "to_zero %.0f s step %d\n",
              p.min_replicas, p.max_replicas, p.target_ongoing_requests,
              p.target_queue_wait.count() / 1000.0, p.upscale_delay.count() / 1000.0,
              p.downscale_delay.count() / 1000.0, p.downscale_to_zero_delay.count() / 1000.0,
              p.max_scale_step);
  std::printf(
      "| run        | replica-h | vs max | requests | late | late %% | p50 wait | p99 wait | "
      "max wait | p99 latency | peak | changes |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  row(fixed_max, fixed_max);
  row(fixed_one, fixed_max);
  row(policy, fixed_max);
  const bool goal = sim::meets_goal(policy, fixed_max);
  const bool beats_one = policy.late < fixed_one.late;
  std::printf("goal (p99 latency <= 1.1 x fixed max at < 0.5 x its replica-hours): %s; fewer late "
              "requests than fixed 1: %s\n",
              goal ? "met" : "NOT met", beats_one ? "yes" : "NO");
  return check && !(goal && beats_one) ? 1 : 0;
}
