// jobs_load: the job queue's cost, against a running `gantry serve`.
//
//   jobs_load --port P [--clients 32] [--seconds 5] [--overhead-jobs 200]
//
// 1. accept: `clients` threads, each with its own keep-alive connection, POST /v1/jobs back to
//    back for `seconds`; reports accepted (202) jobs per second and the POST latency.
// 2. overhead: after the queue drained, `overhead-jobs` jobs one at a time with
//    `Prefer: wait=30` (so the workers are idle when each arrives); reports submit → start from
//    the job's own timestamps (created_at_ms → started_at_ms, millisecond resolution).
//
// Prints one JSON line.
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "http/client.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

double pct(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string job_body(int i) {
  return R"({"endpoint":"/v1/completions","body":{"model":"stories260K","prompt":"Once )" +
         std::to_string(i) + R"(","max_tokens":1}})";
}

} // namespace

int main(int argc, char **argv) {
  int port = 0, clients = 32, overhead_jobs = 200;
  double seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--port")
      port = std::atoi(v.c_str());
    else if (k == "--clients")
      clients = std::atoi(v.c_str());
    else if (k == "--seconds")
      seconds = std::atof(v.c_str());
    else if (k == "--overhead-jobs")
      overhead_jobs = std::atoi(v.c_str());
    else
      return 2;
  }
  if (port == 0) {
    std::fprintf(stderr, "usage: jobs_load --port P [--clients 32] [--seconds 5]\n");
    return 2;
  }
  gantry::http::ClientOptions co;
  co.port = static_cast<uint16_t>(port);
  co.timeout = std::chrono::seconds(30);

  std::atomic<int64_t> accepted{0}, refused{0}, errors{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> ts;
  for (int t = 0; t < clients; ++t) {
    ts.emplace_back([&, t] {
      gantry::http::HttpClient c(co);
      for (int i = 0; Clock::now() < end; ++i) {
        const auto t0 = Clock::now();
        auto r =
            c.post("/v1/jobs", job_body(t * 1'000'000 + i), {{"Content-Type", "application/json"}});
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        if (!r) {
          errors++;
        } else if (r->status == 202) {
          accepted++;
          lat[static_cast<size_t>(t)].push_back(us);
        } else {
          refused++;
        }
      }
    });
  }
  for (auto &t : ts)
    t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto &v : lat)
    all.insert(all.end(), v.begin(), v.end());

  // Let the backlog drain so the workers are idle for the overhead phase.
  gantry::http::HttpClient c(co);
  for (;;) {
    auto r = c.get("/v1/jobs?status=queued&limit=1");
    if (!r || r->status != 200)
      break;
    if (json::parse(r->body).as_object()["data"].as_array().empty())
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<double> overhead;
  for (int i = 0; i < overhead_jobs; ++i) {
    auto r = c.post("/v1/jobs", job_body(-i), {{"Prefer", "wait=30"}});
    if (!r || r->status != 200)
      continue;
    auto o = json::parse(r->body).as_object();
    overhead.push_back(
        static_cast<double>(o["started_at_ms"].as_int64() - o["created_at_ms"].as_int64()));
  }
  std::printf("{\"clients\":%d,\"seconds\":%.2f,\"accepted\":%lld,\"accepted_per_s\":%.0f,"
              "\"refused\":%lld,\"errors\":%lld,\"post_p50_us\":%.0f,\"post_p99_us\":%.0f,"
              "\"overhead_jobs\":%zu,\"submit_to_start_p50_ms\":%.1f,"
              "\"submit_to_start_p99_ms\":%.1f}\n",
              clients, wall, static_cast<long long>(accepted.load()),
              static_cast<double>(accepted.load()) / wall, static_cast<long long>(refused.load()),
              static_cast<long long>(errors.load()), pct(all, 0.5), pct(all, 0.99), overhead.size(),
              pct(overhead, 0.5), pct(overhead, 0.99));
  return 0;
}
