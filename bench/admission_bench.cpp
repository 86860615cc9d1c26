// Admission cost with shared Redis limits vs in-process (issue 13: goal <= 150 us added p50 on
// loopback, one round trip per admission on the hot path). Both adapters run the same request
// shape side by side in one run: key, project and global RPM/TPM/concurrency rules and a project
// budget, reserve() timed on the request path and settle() timed apart (it runs on the
// settlement thread). Starts its own redis-server on a free loopback port.
//
//   build/bench/admission_bench [iterations per round, default 20000] [rounds, default 5]
//
// Prints per-round p50/p99 and their medians, the Redis-over-in-process difference and ratio,
// and the Redis commands each admission sent (from INFO commandstats).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "control/memory_admission_store.h"
#include "store/redis/redis_admission_store.h"
#include "support/redis_process.h"

namespace {

using namespace gantry;
using namespace gantry::control;
using namespace std::chrono;

struct Round {
  double reserve_p50 = 0, reserve_p99 = 0, settle_p50 = 0;
};

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Round run(AdmissionStore &s, int iterations, int round) {
  Budget b;
  b.owner_kind = OwnerKind::kProject;
  b.owner_id = "p" + std::to_string(round);
  b.spend_limit_usd = 1e12;
  s.set_budgets({b});
  AdmissionAsk a;
  a.key_id = "k" + std::to_string(round);
  a.project = b.owner_id;
  a.model = "m";
  a.tokens = 100;
  a.usd = 0.001;
  const Limits l{.rpm = 1'000'000'000, .tpm = 1'000'000'000'000, .max_concurrent = 1000};
  a.rules = {{"key:" + a.key_id, l}, {"project:" + a.project, l}, {"global", l}};
  std::vector<double> reserve_us, settle_us;
  reserve_us.reserve(static_cast<size_t>(iterations));
  settle_us.reserve(static_cast<size_t>(iterations));
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = steady_clock::now();
    auto lease = s.reserve(a, nullptr);
    const auto t1 = steady_clock::now();
    if (!lease) {
      std::fprintf(stderr, "reserve failed: %s\n", lease.error().message.c_str());
      std::exit(1);
    }
    s.settle(*lease, {80, 0.0008});
    const auto t2 = steady_clock::now();
    reserve_us.push_back(duration<double, std::micro>(t1 - t0).count());
    settle_us.push_back(duration<double, std::micro>(t2 - t1).count());
  }
  return {pct(reserve_us, 0.5), pct(reserve_us, 0.99), pct(settle_us, 0.5)};
}

int64_t evalsha_calls(store::RedisClient &c) {
  auto r = c.command({"INFO", "commandstats"});
  if (!r)
    return -1;
  const auto at = r->str.find("cmdstat_evalsha:calls=");
  if (at == std::string::npos)
    return 0;
  return std::atoll(r->str.c_str() + at + 22);
}

} // namespace

int main(int argc, char **argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20'000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  auto redis = testing::RedisProcess::start_new();
  if (!redis) {
    std::fprintf(stderr, "redis-server did not start (scripts/bootstrap.sh installs it)\n");
    return 1;
  }
  SystemClock clock;
  auto opts = store::parse_redis_url(redis->url());
  auto client = store::RedisClient::connect(*opts, clock);
  if (!client) {
    std::fprintf(stderr, "%s\n", client.error().message.c_str());
    return 1;
  }
  std::shared_ptr<store::RedisClient> shared(std::move(client).value());
  auto no_usage = [](OwnerKind, std::string_view, int64_t) -> Result<UsageTotals> {
    return UsageTotals{};
  };
  MemoryAdmissionStore memory(clock, {{"m", {1e9, seconds(60), seconds(300)}}}, no_usage);
  store::RedisAdmissionStore shared_store(shared, clock, {{"m", {1e9, seconds(60), seconds(300)}}},
                                          no_usage);
  std::printf("admission: reserve (request path) and settle, 3 scopes + a project budget, "
              "%d iterations x %d rounds, alternating adapters\n",
              iterations, rounds);
  std::printf("%-6s %-12s %12s %12s %12s\n", "round", "adapter", "reserve p50", "reserve p99",
              "settle p50");
  std::vector<double> mem50, mem99, red50, red99, memset50, redset50;
  int64_t calls = 0;
  for (int r = 0; r < rounds; ++r) {
    const Round m = run(memory, iterations, r);
    const int64_t before = evalsha_calls(*shared);
    const Round x = run(shared_store, iterations, r);
    calls += evalsha_calls(*shared) - before - 1; // INFO itself is not an EVALSHA
    mem50.push_back(m.reserve_p50);
    mem99.push_back(m.reserve_p99);
    memset50.push_back(m.settle_p50);
    red50.push_back(x.reserve_p50);
    red99.push_back(x.reserve_p99);
    redset50.push_back(x.settle_p50);
    std::printf("%-6d %-12s %10.1fus %10.1fus %10.1fus\n", r + 1, "in-process", m.reserve_p50,
                m.reserve_p99, m.settle_p50);
    std::printf("%-6d %-12s %10.1fus %10.1fus %10.1fus\n", r + 1, "redis", x.reserve_p50,
                x.reserve_p99, x.settle_p50);
  }
  const double m50 = median(mem50), x50 = median(red50);
  std::printf("\nmedian of rounds: in-process reserve p50 %.1f us (p99 %.1f), redis reserve p50 "
              "%.1f us (p99 %.1f); settle p50 %.1f vs %.1f us\n",
              m50, median(mem99), x50, median(red99), median(memset50), median(redset50));
  std::printf("added by Redis on the request path: %.1f us p50 (goal <= 150 us), ratio %.1fx\n",
              x50 - m50, m50 > 0 ? x50 / m50 : 0.0);
  std::printf("Redis scripts per request: %.2f (one reserve on the request path, one settle on "
              "the settlement thread)\n",
              static_cast<double>(calls) / (static_cast<double>(iterations) * rounds));
  return 0;
}
