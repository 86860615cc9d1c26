// fixed_rate: sends requests at a fixed aggregate rate over keep-alive connections and reports
// latency percentiles, measured from each request's *scheduled* send time (so a stall shows up
// as latency instead of silently lowering the rate: no coordinated omission).
//
//   fixed_rate --port P --rate 5000 --seconds 10 --connections 8 --method POST
//              --path /v1/completions --body '{...}' [--header 'Authorization: Bearer gsk_...']
//
// Prints one JSON line: {"rate":..,"achieved":..,"requests":..,"errors":..,"non_2xx":..,
// "p50_us":..,"p90_us":..,"p99_us":..,"max_us":..}.
//
// The run ends after --seconds even when the schedule is not done (a rate above capacity):
// "achieved" is then the throughput.
//
// Threads: one per connection, each owning its HttpClient and its slice of the schedule
// (request i goes to connection i % connections); results are merged after join.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "header_arg.h"
#include "http/client.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int port = 0;
  double rate = 1000;
  double seconds = 10;
  int connections = 8;
  std::string method = "GET";
  std::string path = "/v1/models";
  std::string body;
  gantry::http::Headers headers;
};

double pct(std::vector<double> &v, double p) {
  if (v.empty())
    return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

} // namespace

int main(int argc, char **argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--port")
      o.port = std::atoi(v.c_str());
    else if (k == "--rate")
      o.rate = std::atof(v.c_str());
    else if (k == "--seconds")
      o.seconds = std::atof(v.c_str());
    else if (k == "--connections")
      o.connections = std::atoi(v.c_str());
    else if (k == "--method")
      o.method = v;
    else if (k == "--path")
      o.path = v;
    else if (k == "--body")
      o.body = v;
    else if (k == "--header") {
      auto h = gantry::bench::header_arg(v);
      if (!h)
        return 2;
      o.headers.push_back(std::move(*h));
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.port <= 0 || o.rate <= 0 || o.connections <= 0) {
    std::fprintf(stderr, "usage: fixed_rate --port P --rate R [--seconds S --connections C "
                         "--method M --path P --body B --header 'K: V']\n");
    return 2;
  }
  if (!o.body.empty())
    o.headers.push_back({"Content-Type", "application/json"});
  const auto method = o.method == "POST" ? gantry::http::Method::kPost : gantry::http::Method::kGet;
  const long total = static_cast<long>(o.rate * o.seconds);
  const auto interval = std::chrono::duration<double>(1.0 / o.rate);
  std::vector<std::vector<double>> lat(o.connections);
  std::vector<long> errors(o.connections, 0), non2xx(o.connections, 0);
  const auto start = Clock::now() + std::chrono::milliseconds(100);
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> ts;
  for (int c = 0; c < o.connections; ++c) {
    ts.emplace_back([&, c] {
      gantry::http::ClientOptions co;
      co.port = static_cast<uint16_t>(o.port);
      gantry::http::HttpClient client(co);
      for (long i = c; i < total; i += o.connections) {
        const auto due =
            start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i));
        // Past the window the run ends even if the schedule is not done: a rate far above
        // capacity measures throughput (achieved) instead of running for total / capacity.
        if (Clock::now() >= end)
          break;
        std::this_thread::sleep_until(due);
        auto r = client.request(method, o.path, o.body, o.headers);
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - due).count();
        if (!r) {
          ++errors[c];
          continue;
        }
        if (r->status < 200 || r->status >= 300)
          ++non2xx[c];
        lat[c].push_back(us);
      }
    });
  }
  for (auto &t : ts)
    t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  long err = 0, bad = 0;
  for (int c = 0; c < o.connections; ++c) {
    all.insert(all.end(), lat[c].begin(), lat[c].end());
    err += errors[c];
    bad += non2xx[c];
  }
  std::sort(all.begin(), all.end());
  std::printf("{\"rate\":%.0f,\"achieved\":%.1f,\"requests\":%zu,\"errors\":%ld,\"non_2xx\":%ld,"
              "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
              o.rate, static_cast<double>(all.size()) / wall, all.size(), err, bad, pct(all, 0.5),
              pct(all, 0.9), pct(all, 0.99), all.empty() ? 0.0 : all.back());
  return err > 0 ? 1 : 0;
}
