// The engine thread and exceptions (issue 15, item 4): a sink that throws is reported and ends
// only its own request; every other request keeps streaming and the worker keeps serving.
#include "backend/local/model_worker.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "core/thread_guard.h"

namespace gantry::backend {
namespace {

using namespace std::chrono_literals;

class Sink final : public TokenSink {
public:
  explicit Sink(bool throw_on_first_token) : throw_(throw_on_first_token) {}
  void on_event(Ticket, const engine::TokenEvent &e) override {
    {
      std::lock_guard lk(mu_);
      if (e.token >= 0)
        ++tokens_;
      if (e.finish != engine::FinishReason::kNone) {
        finish_ = e.finish;
        done_ = true;
        cv_.notify_all();
      }
    }
    if (throw_ && e.token >= 0) {
      throw_ = false;
      throw std::runtime_error("sink bug");
    }
  }
  void on_rejected(Ticket, const Error &) override {
    std::lock_guard lk(mu_);
    rejected_ = true;
    done_ = true;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 30s, [&] { return done_; });
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool throw_;
  bool done_ = false, rejected_ = false;
  int tokens_ = 0;
  engine::FinishReason finish_ = engine::FinishReason::kNone;
};

engine::GenerationRequest request(int max_tokens) {
  engine::GenerationRequest r;
  r.prompt = {1, 50, 100};
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

TEST(ModelWorker, ASinkThatThrowsEndsOnlyItsOwnRequestAndIsReported) {
  std::mutex mu;
  std::vector<std::string> reported;
  ScopedFailureReporter scope([&](std::string_view site, const std::exception &e) {
    std::lock_guard lk(mu);
    reported.push_back(std::string(site) + ": " + e.what());
  });
  auto model = engine::Model::load(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
  ASSERT_TRUE(model) << model.error().message;
  SystemClock clock;
  WorkerConfig wc;
  wc.name = "m";
  wc.engine.n_threads = 1;
  {
    ModelWorker worker(std::move(model).value(), wc, clock);
    auto bad = std::make_shared<Sink>(true);
    auto good = std::make_shared<Sink>(false);
    ASSERT_TRUE(worker.submit(request(200), bad));
    ASSERT_TRUE(worker.submit(request(24), good));
    ASSERT_TRUE(bad->wait());
    ASSERT_TRUE(good->wait());
    EXPECT_EQ(bad->finish_, engine::FinishReason::kCancelled) << "cancelled after it threw";
    EXPECT_LT(bad->tokens_, 200);
    EXPECT_EQ(good->finish_, engine::FinishReason::kLength);
    EXPECT_EQ(good->tokens_, 24) << "the other request streamed to its end";

    auto after = std::make_shared<Sink>(false);
    ASSERT_TRUE(worker.submit(request(8), after));
    ASSERT_TRUE(after->wait());
    EXPECT_EQ(after->tokens_, 8) << "the worker keeps serving";
    EXPECT_TRUE(worker.wait_idle(5s));
  }
  std::lock_guard lk(mu);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], "engine: m: sink bug");
}

} // namespace
} // namespace gantry::backend
