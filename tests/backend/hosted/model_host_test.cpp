#include "backend/hosted/model_host.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "backend/hosted/hosted_backend.h"
#include "backend/local/local_backend.h"
#include "engine/model/model.h"

namespace gantry::backend {
namespace {

using namespace std::chrono_literals;

const std::string kStories = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
const std::string kTiny = std::string(GANTRY_TEST_DATA_DIR) + "/llama-2-tiny-random.gguf";

// Whether this process maps `path` now (/proc/self/maps): an unloaded model must not be.
bool mapped(const std::string &path) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(path) != std::string::npos)
      return true;
  return false;
}

// A real engine for `path` served as `name`; `loads` counts the calls.
ModelLoader loader(const std::string &name, const std::string &path, const Clock &clock,
                   std::atomic<int> *loads = nullptr) {
  return [=, &clock]() -> Result<std::unique_ptr<ModelBackend>> {
    if (loads)
      ++*loads;
    GANTRY_ASSIGN_OR_RETURN(auto model, engine::Model::load(path));
    WorkerConfig wc;
    wc.name = name;
    wc.engine.n_threads = 1;
    wc.engine.kv_bytes = size_t{4} << 20;
    LocalBackendConfig bc;
    bc.name = name;
    bc.digest = name;
    auto worker = std::make_unique<ModelWorker>(std::move(model), wc, clock);
    return std::unique_ptr<ModelBackend>(
        std::make_unique<LocalBackend>(std::move(worker), std::move(bc), clock));
  };
}

HostedModelSpec spec(const std::string &name, const std::string &path, const Clock &clock,
                     std::atomic<int> *loads = nullptr, uint64_t bytes = 100) {
  HostedModelSpec s;
  s.info.name = name;
  s.info.kind = "local";
  s.bytes = bytes;
  s.load = loader(name, path, clock, loads);
  return s;
}

HostOptions options(int max_loaded, std::chrono::milliseconds wait = 30s) {
  HostOptions o;
  o.max_loaded = max_loaded;
  o.load_wait = wait;
  return o;
}

std::map<std::string, HostedModelState> by_name(const ModelHost &h) {
  std::map<std::string, HostedModelState> out;
  for (auto &s : h.states())
    out[s.name] = s;
  return out;
}

struct Logs {
  std::mutex mu;
  std::vector<std::string> lines;
  ModelHost::Log fn() {
    return [this](const std::string &l) {
      std::lock_guard lk(mu);
      lines.push_back(l);
    };
  }
};

TEST(ModelHost, UnloadsTheLeastRecentlyUsedIdleModelFirst) {
  SystemClock clock;
  Logs logs;
  ModelHost host(options(2), clock, logs.fn());
  const int a = *host.add(spec("a", kStories, clock));
  const int b = *host.add(spec("b", kStories, clock));
  const int c = *host.add(spec("c", kStories, clock));
  ASSERT_TRUE(host.acquire(a));
  ASSERT_TRUE(host.acquire(b));
  ASSERT_TRUE(host.acquire(a)); // a is now more recent than b
  EXPECT_EQ(host.loaded_count(), 2);
  (void)host.stats(b); // reading b's counters (/metrics, heartbeats) is not a use
  EXPECT_TRUE(host.pin_if_loaded(b));
  ASSERT_TRUE(host.acquire(c));
  auto st = by_name(host);
  EXPECT_TRUE(st["a"].loaded);
  EXPECT_FALSE(st["b"].loaded) << "b was the least recently used";
  EXPECT_TRUE(st["c"].loaded);
  EXPECT_EQ(st["b"].unloads, 1u);
  EXPECT_EQ(st["a"].loads, 1u) << "a stayed loaded: no reload";
  EXPECT_EQ(host.loaded_count(), 2);
  std::lock_guard lk(logs.mu);
  const bool logged = std::any_of(logs.lines.begin(), logs.lines.end(), [](const auto &l) {
    return l.find(R"("event":"model_unloaded","model":"b","reason":"lru")") != std::string::npos;
  });
  EXPECT_TRUE(logged);
}

TEST(ModelHost, NeverUnloadsAModelInUseAndLoadsOnceItIsIdle) {
  SystemClock clock;
  ModelHost host(options(1, 300ms), clock, nullptr);
  const int a = *host.add(spec("a", kStories, clock));
  const int b = *host.add(spec("b", kTiny, clock));
  auto pin = host.acquire(a);
  ASSERT_TRUE(pin);
  auto refused = host.acquire(b);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_GT(refused.error().retry_after_ms, 0);
  EXPECT_TRUE(by_name(host)["a"].loaded) << "a request in flight keeps its model";
  EXPECT_FALSE(by_name(host)["b"].loaded);

  // A caller waiting for room gets it once the pin goes (however the two threads interleave).
  ModelHost patient(options(1, 30s), clock, nullptr);
  const int pa = *patient.add(spec("a", kStories, clock));
  const int pb = *patient.add(spec("b", kTiny, clock));
  auto held = patient.acquire(pa);
  ASSERT_TRUE(held);
  Result<std::shared_ptr<ModelPin>> got = Err(Error::invalid("not yet"));
  std::thread waiter([&] { got = patient.acquire(pb); });
  held->reset();
  waiter.join();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(by_name(patient)["a"].loaded);
  EXPECT_TRUE(by_name(patient)["b"].loaded);
}

TEST(ModelHost, ConcurrentRequestsForAnUnloadedModelShareOneLoad) {
  SystemClock clock;
  std::atomic<int> loads{0};
  ModelHost host(options(1), clock, nullptr);
  const int a = *host.add(spec("a", kTiny, clock, &loads));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      if (auto pin = host.acquire(a))
        ++ok;
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(by_name(host)["a"].loads, 1u);
}

TEST(ModelHost, AFailedLoadIsReportedCountedAndRetriedByTheNextRequest) {
  SystemClock clock;
  std::atomic<int> loads{0};
  ModelHost host(options(1), clock, nullptr);
  const int bad = *host.add(spec("bad", "/nonexistent/model.gguf", clock, &loads));
  auto r = host.acquire(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("nonexistent"), std::string::npos) << r.error().message;
  ASSERT_FALSE(host.acquire(bad));
  EXPECT_EQ(loads.load(), 2);
  EXPECT_EQ(by_name(host)["bad"].load_failures, 2u);
  EXPECT_EQ(host.loaded_count(), 0);
}

TEST(ModelHost, UnloadingReleasesTheMapping) {
  SystemClock clock;
  ASSERT_FALSE(mapped(kStories));
  {
    ModelHost host(options(1), clock, nullptr);
    const int a = *host.add(spec("a", kStories, clock));
    const int b = *host.add(spec("b", kTiny, clock));
    ASSERT_TRUE(host.acquire(a));
    EXPECT_TRUE(mapped(kStories));
    ASSERT_TRUE(host.acquire(b));
    EXPECT_FALSE(mapped(kStories)) << "the unloaded model's file is unmapped";
    EXPECT_TRUE(mapped(kTiny));
  }
  EXPECT_FALSE(mapped(kTiny)) << "the host's destruction unloads the rest";
}

TEST(ModelHost, TheByteBudgetBoundsTheLoadedModels) {
  SystemClock clock;
  HostOptions o;
  o.max_bytes = 250;
  ModelHost host(o, clock, nullptr);
  const int a = *host.add(spec("a", kStories, clock, nullptr, 100));
  const int b = *host.add(spec("b", kStories, clock, nullptr, 100));
  const int c = *host.add(spec("c", kStories, clock, nullptr, 100));
  const int huge = *host.add(spec("huge", kStories, clock, nullptr, 300));
  ASSERT_TRUE(host.acquire(a));
  ASSERT_TRUE(host.acquire(b));
  ASSERT_TRUE(host.acquire(c));
  EXPECT_EQ(host.loaded_count(), 2);
  EXPECT_EQ(host.loaded_bytes(), 200u);
  auto r = host.acquire(huge);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("models_max_bytes"), std::string::npos);
  EXPECT_EQ(host.loaded_count(), 2) << "nothing unloaded for a model that can never fit";
}

TEST(ModelHost, PreloadFillsTheBudgetInOrder) {
  SystemClock clock;
  ModelHost host(options(2), clock, nullptr);
  (void)*host.add(spec("a", kStories, clock));
  (void)*host.add(spec("b", kTiny, clock));
  (void)*host.add(spec("c", kStories, clock));
  ASSERT_TRUE(host.preload());
  auto st = by_name(host);
  EXPECT_TRUE(st["a"].loaded);
  EXPECT_TRUE(st["b"].loaded);
  EXPECT_FALSE(st["c"].loaded);
  EXPECT_EQ(st["c"].unloads + st["a"].unloads + st["b"].unloads, 0u);
}

class Collect final : public CallSink {
public:
  void on_event(const ChoiceEvent &e) override {
    std::lock_guard lk(mu_);
    text_ += e.text;
    tokens_ += e.tokens;
  }
  void on_done(const CallSummary &s) override {
    std::lock_guard lk(mu_);
    done_ = true;
    ok_ = !s.error;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 30s, [&] { return done_; }) && ok_;
  }
  int tokens() {
    std::lock_guard lk(mu_);
    return tokens_;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  int tokens_ = 0;
  bool done_ = false, ok_ = false;
};

api::InferenceRequest completion(const std::string &model) {
  api::InferenceRequest r;
  r.endpoint = api::Endpoint::kCompletions;
  r.model = model;
  r.prompts.push_back(api::Prompt{"Once upon a time", std::nullopt});
  r.max_tokens = 8;
  r.ignore_eos = true;
  return r;
}

TEST(HostedBackend, ACallKeepsItsModelLoadedUntilItsLastEvent) {
  SystemClock clock;
  ModelHost host(options(1, 200ms), clock, nullptr);
  HostedModelSpec sa = spec("a", kStories, clock);
  HostedModelSpec sb = spec("b", kTiny, clock);
  BackendInfo ia = sa.info, ib = sb.info;
  HostedBackend a(host, *host.add(std::move(sa)), ia);
  HostedBackend b(host, *host.add(std::move(sb)), ib);

  // A probe passes without loading anything.
  std::atomic<bool> probed{false};
  a.probe([&](ProbeResult r) { probed = r.ok; });
  EXPECT_TRUE(probed.load());
  EXPECT_FALSE(a.loaded());

  auto prepared = a.prepare(completion("a"), PrepareOptions{});
  ASSERT_TRUE(prepared) << prepared.error().message;
  EXPECT_TRUE(a.loaded()) << "prepare loads on demand";
  EXPECT_FALSE(b.prepare(completion("b"), PrepareOptions{}))
      << "a prepared call pins its model: no room for b";
  auto sink = std::make_shared<Collect>();
  auto handle = a.start(*prepared, sink);
  ASSERT_TRUE(handle) << handle.error().message;
  prepared = Err(Error::invalid("dropped")); // only the running call holds the pin now
  ASSERT_TRUE(sink->wait());
  EXPECT_EQ(sink->tokens(), 8);
  // The engine publishes its counters after the step that ended the call: polled.
  for (int i = 0; i < 500 && a.stats().generated_tokens < 8; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(a.stats().generated_tokens, 8u);

  auto pb = b.prepare(completion("b"), PrepareOptions{});
  ASSERT_TRUE(pb) << "the finished call released a: " << pb.error().message;
  EXPECT_FALSE(a.loaded());
  EXPECT_EQ(a.stats().generated_tokens, 8u) << "counters survive the unload";
}

} // namespace
} // namespace gantry::backend
