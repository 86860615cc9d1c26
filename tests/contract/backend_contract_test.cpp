// The backend::ModelBackend contract: every adapter passes the same suite. Adding an adapter (a
// remote OpenAI-compatible engine, a hosted API, a worker node) means adding a factory to
// BackendAdapters below; the factory serves the bundled tiny model under the name "m".
#include <gtest/gtest.h>

#include <condition_variable>
#include <memory>
#include <mutex>

#include "backend/local/local_backend.h"
#include "backend/model_backend.h"
#include "core/clock.h"

namespace gantry::backend {
namespace {

using namespace std::chrono_literals;

struct LocalBackendFactory {
  std::unique_ptr<ModelBackend> make(const Clock &clock) {
    auto model = engine::Model::load(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
    EXPECT_TRUE(model) << (model ? "" : model.error().message);
    if (!model)
      return nullptr;
    WorkerConfig wc;
    wc.name = "m";
    wc.engine.n_threads = 1;
    auto worker = std::make_unique<ModelWorker>(std::move(model).value(), wc, clock);
    LocalBackendConfig bc;
    bc.name = "m";
    bc.digest = "test-digest";
    return std::make_unique<LocalBackend>(std::move(worker), bc, clock);
  }
};

// Collects one call's events; checks the ordering rules of the port as they arrive.
class Recorder final : public CallSink {
public:
  void on_event(const ChoiceEvent &e) override {
    std::lock_guard<std::mutex> lk(mu_);
    EXPECT_FALSE(summary_) << "an event after on_done";
    events_.push_back(e);
  }
  void on_done(const CallSummary &s) override {
    std::lock_guard<std::mutex> lk(mu_);
    EXPECT_FALSE(summary_) << "on_done twice";
    summary_ = s;
    cv_.notify_all();
  }
  CallSummary wait() {
    std::unique_lock<std::mutex> lk(mu_);
    EXPECT_TRUE(cv_.wait_for(lk, 60s, [&] { return summary_.has_value(); })) << "no on_done";
    return summary_.value_or(CallSummary{});
  }
  std::vector<ChoiceEvent> events() {
    std::lock_guard<std::mutex> lk(mu_);
    return events_;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ChoiceEvent> events_;
  std::optional<CallSummary> summary_;
};

api::InferenceRequest chat(int max_tokens) {
  api::InferenceRequest r;
  r.endpoint = api::Endpoint::kChatCompletions;
  r.model = "m";
  r.messages = {{"user", "Once upon a time"}};
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  return r;
}

template <typename Factory> class BackendContract : public ::testing::Test {
protected:
  void SetUp() override {
    backend_ = Factory().make(clock_);
    ASSERT_TRUE(backend_);
  }
  SystemClock clock_;
  std::unique_ptr<ModelBackend> backend_;
};

using BackendAdapters = ::testing::Types<LocalBackendFactory>;
TYPED_TEST_SUITE(BackendContract, BackendAdapters);

TYPED_TEST(BackendContract, InfoNamesTheModel) {
  const BackendInfo &info = this->backend_->info();
  EXPECT_EQ(info.name, "m");
  EXPECT_FALSE(info.kind.empty());
  EXPECT_GE(info.context_length, 0);
}

TYPED_TEST(BackendContract, AGreedyCallStreamsEventsThenOneSummary) {
  auto p = this->backend_->prepare(chat(8), {});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_GT(p->prompt_tokens, 0);
  EXPECT_EQ(p->max_output_tokens, 8);
  auto rec = std::make_shared<Recorder>();
  auto h = this->backend_->start(*p, rec);
  ASSERT_TRUE(h) << h.error().message;
  const CallSummary s = rec->wait();
  ASSERT_FALSE(s.error) << s.error->error.message;
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_EQ(s.usage.completion_tokens, 8);
  if (!p->prompt_tokens_estimated) {
    EXPECT_EQ(s.usage.prompt_tokens, p->prompt_tokens);
  }
  EXPECT_FALSE(s.served_by.empty());
  const auto events = rec->events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish_reason, "length");
  int tokens = 0;
  for (const auto &e : events) {
    EXPECT_EQ(e.choice, 0);
    tokens += e.tokens;
  }
  EXPECT_EQ(tokens, 8);
}

TYPED_TEST(BackendContract, EveryChoiceFinishes) {
  auto req = chat(4);
  req.n = 2;
  req.sampling.temperature = 1;
  req.sampling.seed = 7;
  auto p = this->backend_->prepare(req, {});
  ASSERT_TRUE(p) << p.error().message;
  auto rec = std::make_shared<Recorder>();
  ASSERT_TRUE(this->backend_->start(*p, rec));
  const CallSummary s = rec->wait();
  ASSERT_FALSE(s.error);
  EXPECT_EQ(s.usage.completion_tokens, 8);
  int finished[2] = {0, 0};
  for (const auto &e : rec->events()) {
    ASSERT_TRUE(e.choice == 0 || e.choice == 1);
    finished[e.choice] += e.finish_reason.empty() ? 0 : 1;
  }
  EXPECT_EQ(finished[0], 1);
  EXPECT_EQ(finished[1], 1);
}

TYPED_TEST(BackendContract, CacheMaterialIdentifiesReproducibleOutputOnly) {
  auto a = this->backend_->prepare(chat(8), {});
  auto b = this->backend_->prepare(chat(8), {});
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(a->cache_material.empty());
  EXPECT_EQ(a->cache_material, b->cache_material);
  auto longer = this->backend_->prepare(chat(9), {});
  ASSERT_TRUE(longer);
  EXPECT_NE(a->cache_material, longer->cache_material);
  auto sampled = chat(8);
  sampled.sampling.temperature = 1; // no seed: not reproducible
  auto c = this->backend_->prepare(sampled, {});
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->cache_material.empty());
}

TYPED_TEST(BackendContract, BadInputIsAnErrorValueBeforeAnythingRuns) {
  if (this->backend_->info().context_length == 0)
    GTEST_SKIP() << "the context length is unknown";
  auto p = this->backend_->prepare(chat(this->backend_->info().context_length * 2), {});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kContextLengthExceeded);
}

TYPED_TEST(BackendContract, CancelEndsTheCallWithAnErrorSummary) {
  auto p = this->backend_->prepare(chat(400), {});
  ASSERT_TRUE(p) << p.error().message;
  auto rec = std::make_shared<Recorder>();
  auto h = this->backend_->start(*p, rec);
  ASSERT_TRUE(h);
  (*h)->cancel();
  (*h)->cancel(); // idempotent
  const CallSummary s = rec->wait();
  ASSERT_TRUE(s.error);
  EXPECT_LT(s.usage.completion_tokens, 400);
}

TYPED_TEST(BackendContract, EmbeddingsOfTheAskedInputsInOrder) {
  api::EmbeddingRequest req;
  req.model = "m";
  req.texts = {"Once upon a time", "The sun was warm", "She liked to play"};
  auto p = this->backend_->prepare_embeddings(req);
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_EQ(p->input_tokens.size(), 3u);
  EXPECT_GT(p->total_tokens(), 0);
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<EmbedResult>> got;
  auto st = this->backend_->embed(*p, {2, 0}, [&](Result<EmbedResult> r) {
    std::lock_guard<std::mutex> lk(mu);
    got = std::move(r);
    cv.notify_all();
  });
  ASSERT_TRUE(st) << st.error().message;
  std::unique_lock<std::mutex> lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 60s, [&] { return got.has_value(); }));
  ASSERT_TRUE(*got) << got->error().message;
  ASSERT_EQ((*got)->vectors.size(), 2u);
  if (const int dims = this->backend_->info().embedding_dims; dims > 0) {
    EXPECT_EQ((*got)->vectors[0].size(), static_cast<size_t>(dims));
  }
  EXPECT_NE((*got)->vectors[0], (*got)->vectors[1]);
}

TYPED_TEST(BackendContract, AProbeReportsReady) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<ProbeResult> got;
  this->backend_->probe([&](ProbeResult r) {
    std::lock_guard<std::mutex> lk(mu);
    got = std::move(r);
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 60s, [&] { return got.has_value(); }));
  EXPECT_TRUE(got->ok) << got->error;
  // The probe's callback may run just before the worker counts the request finished, so the
  // backend must become idle soon after, not necessarily at the callback.
  lk.unlock();
  EXPECT_TRUE(this->backend_->wait_idle(std::chrono::milliseconds(5000)));
  EXPECT_EQ(this->backend_->stats().in_flight, 0);
}

} // namespace
} // namespace gantry::backend
