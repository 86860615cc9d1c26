// stream_load: a streaming load generator for `gantry serve` (or any OpenAI-compatible server).
//
// For each concurrency level N it starts N client threads; each sends `--rounds` (one value,
// or one per level) streaming chat requests one after another (stream:true, temperature 0,
// ignore_eos, max_tokens fixed, prompts varied slightly per client and round) and measures the
// time to the first content chunk (TTFT) and the completion tokens (usage.completion_tokens,
// else the content chunks). Per level it prints one JSON line:
//   {"clients":N,"requests":R,"errors":E,"wall_s":..,"completion_tokens":..,
//    "agg_tokens_per_s":..,"ttft_p50_s":..,"ttft_p99_s":..,"per_request_tokens_per_s_p50":..}
// Aggregate tok/s = all completion tokens / wall time of the level (first send to last [DONE]).
//
// Threads: main thread spawns the clients and joins them; each client thread owns its
// HttpClient and SseStream for life and writes only its own result slot.
#include <algorithm>
#include <boost/json.hpp>
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
  std::string host = "127.0.0.1";
  int port = 0;
  std::string model = "tiny";
  std::vector<int> levels{1, 4, 8, 16};
  std::vector<int> rounds{2}; // per level; one value applies to every level
  int max_tokens = 64;
  int timeout_s = 300;
  gantry::http::Headers headers{{"Content-Type", "application/json"}}; // plus each --header
};

struct RequestResult {
  bool ok = false;
  std::string error;
  double ttft_s = 0;  // send -> first non-empty content chunk
  double total_s = 0; // send -> end of stream
  long tokens = 0;
};

// A few sentence shapes and topics so that no two concurrent prompts are identical (no prefix
// cache flattering the numbers) while their lengths stay within a few tokens of each other.
std::string prompt_for(int client, int round) {
  static const char *kTopics[] = {"a lighthouse", "a dragon",   "the ocean", "a small robot",
                                  "a garden",     "a mountain", "a city",    "an old clock"};
  static const char *kShapes[] = {"Tell me a short story about %s, number %d.",
                                  "Write a few sentences about %s (take %d).",
                                  "Describe %s in simple words, version %d."};
  const int i = client * 7 + round * 3;
  char buf[160];
  std::snprintf(buf, sizeof buf, kShapes[i % 3], kTopics[(client + round) % 8],
                client * 10 + round);
  return buf;
}

std::string request_body(const Options &o, int client, int round) {
  boost::json::object msg{{"role", "user"}, {"content", prompt_for(client, round)}};
  boost::json::object body{
      {"model", o.model},
      {"messages", boost::json::array{msg}},
      {"stream", true},
      {"stream_options", boost::json::object{{"include_usage", true}}},
      {"max_tokens", o.max_tokens},
      {"temperature", 0},
      {"ignore_eos", true},
  };
  return boost::json::serialize(body);
}

RequestResult one_request(const Options &o, int client, int round) {
  RequestResult r;
  gantry::http::ClientOptions co;
  co.host = o.host;
  co.port = static_cast<std::uint16_t>(o.port);
  co.timeout = std::chrono::seconds(o.timeout_s);
  gantry::http::HttpClient http(co);
  const auto t0 = Clock::now();
  auto stream = http.open_sse(gantry::http::Method::kPost, "/v1/chat/completions",
                              request_body(o, client, round), o.headers);
  if (!stream) {
    r.error = stream.error().message;
    return r;
  }
  if (stream->status() != 200) {
    r.error = "HTTP " + std::to_string(stream->status());
    return r;
  }
  long content_chunks = 0;
  long usage_tokens = -1;
  bool first = true;
  for (;;) {
    auto ev = stream->next_event();
    if (!ev) {
      r.error = ev.error().message;
      return r;
    }
    if (!ev->has_value() || **ev == "[DONE]")
      break;
    boost::system::error_code ec;
    auto j = boost::json::parse(**ev, ec);
    if (ec || !j.is_object())
      continue;
    const auto &obj = j.as_object();
    if (auto *u = obj.if_contains("usage"); u && u->is_object()) {
      if (auto *ct = u->as_object().if_contains("completion_tokens"); ct && ct->is_int64()) {
        usage_tokens = ct->as_int64();
      }
    }
    auto *choices = obj.if_contains("choices");
    if (!choices || !choices->is_array() || choices->as_array().empty())
      continue;
    const auto &c0 = choices->as_array()[0];
    if (!c0.is_object())
      continue;
    auto *delta = c0.as_object().if_contains("delta");
    if (!delta || !delta->is_object())
      continue;
    auto *content = delta->as_object().if_contains("content");
    if (!content || !content->is_string() || content->as_string().empty())
      continue;
    ++content_chunks;
    if (first) {
      r.ttft_s = std::chrono::duration<double>(Clock::now() - t0).count();
      first = false;
    }
  }
  r.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  r.tokens = usage_tokens >= 0 ? usage_tokens : content_chunks;
  r.ok = true;
  return r;
}

// Nearest-rank percentile (p in [0, 100]); with few samples p99 is the maximum.
double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

void run_level(const Options &o, int clients, int rounds) {
  std::vector<std::vector<RequestResult>> results(clients);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&o, &results, c, rounds] {
      for (int r = 0; r < rounds; ++r)
        results[c].push_back(one_request(o, c, r));
    });
  }
  for (auto &t : threads)
    t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();

  long tokens = 0;
  int errors = 0, requests = 0;
  std::vector<double> ttft, per_req_rate;
  std::string first_error;
  for (const auto &per_client : results) {
    for (const auto &r : per_client) {
      ++requests;
      if (!r.ok) {
        if (errors++ == 0)
          first_error = r.error;
        continue;
      }
      tokens += r.tokens;
      ttft.push_back(r.ttft_s);
      if (r.total_s > r.ttft_s && r.tokens > 1) {
        per_req_rate.push_back(static_cast<double>(r.tokens - 1) / (r.total_s - r.ttft_s));
      }
    }
  }
  boost::json::object j{
      {"clients", clients},
      {"requests", requests},
      {"errors", errors},
      {"wall_s", wall},
      {"completion_tokens", tokens},
      {"agg_tokens_per_s", wall > 0 ? static_cast<double>(tokens) / wall : 0.0},
      {"ttft_p50_s", percentile(ttft, 50)},
      {"ttft_p99_s", percentile(ttft, 99)},
      {"per_request_tokens_per_s_p50", percentile(per_req_rate, 50)},
  };
  if (errors)
    j["first_error"] = first_error;
  std::printf("%s\n", boost::json::serialize(j).c_str());
  std::fflush(stdout);
}

std::vector<int> parse_list(const std::string &s) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos)
      comma = s.size();
    out.push_back(std::atoi(s.substr(pos, comma - pos).c_str()));
    pos = comma + 1;
  }
  return out;
}

int usage() {
  std::fprintf(stderr,
               "usage: stream_load --port P [--host H] [--model NAME] [--clients 1,4,8,16]\n"
               "                   [--rounds 2|2,2,2,1] [--max-tokens 64] [--timeout-s 300]\n"
               "                   [--header 'Name: value']...\n");
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc)
      return usage();
    const std::string v = argv[++i];
    if (a == "--host") {
      o.host = v;
    } else if (a == "--port") {
      o.port = std::atoi(v.c_str());
    } else if (a == "--model") {
      o.model = v;
    } else if (a == "--clients") {
      o.levels = parse_list(v);
    } else if (a == "--rounds") {
      o.rounds = parse_list(v);
    } else if (a == "--max-tokens") {
      o.max_tokens = std::atoi(v.c_str());
    } else if (a == "--timeout-s") {
      o.timeout_s = std::atoi(v.c_str());
    } else if (a == "--header") { // an API key for a keyed server, say
      auto h = gantry::bench::header_arg(v);
      if (!h)
        return usage();
      o.headers.push_back(std::move(*h));
    } else {
      return usage();
    }
  }
  if (o.port <= 0 || o.levels.empty())
    return usage();
  if (o.rounds.size() != 1 && o.rounds.size() != o.levels.size())
    return usage();
  for (size_t i = 0; i < o.levels.size(); ++i) {
    const int rounds = o.rounds.size() == 1 ? o.rounds[0] : o.rounds[i];
    if (o.levels[i] <= 0 || rounds <= 0)
      return usage();
    run_level(o, o.levels[i], rounds);
  }
  return 0;
}
