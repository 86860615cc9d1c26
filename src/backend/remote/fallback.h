// FallbackBackend: a model with `fallbacks = ["other", ...]`. Wraps the model's own backend and,
// when a call fails before any output reached the client (every retry of the pool spent, an
// upstream outage, context_length_exceeded), runs the same request on the fallback models in
// order. The request log names whichever backend answered (CallSummary::served_by); admission
// and pricing stay those of the model the client asked for.
//
// Threading: thread-safe like every ModelBackend; a fallback starts on the thread that delivered
// the failed summary (never inside start()).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/model_backend.h"

namespace gantry::backend::remote {

// The served models by name (the registry's find); nullptr for an unknown name.
using FindBackend = std::function<ModelBackend *(std::string_view name)>;

// Whether a failure before output may go to a fallback model.
bool falls_back_on(const Error &error);

class FallbackBackend final : public ModelBackend {
public:
  FallbackBackend(std::unique_ptr<ModelBackend> primary, std::vector<std::string> fallbacks,
                  FindBackend find);

  const BackendInfo &info() const override { return primary_->info(); }
  Result<PreparedCall> prepare(const api::InferenceRequest &request,
                               const PrepareOptions &options) override;
  Result<std::unique_ptr<CallHandle>> start(const PreparedCall &prepared,
                                            std::shared_ptr<CallSink> sink) override;
  Result<PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &request) override {
    return primary_->prepare_embeddings(request);
  }
  Status embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
               EmbedDone done) override {
    return primary_->embed(prepared, std::move(indices), std::move(done));
  }
  void probe(ProbeDone done) override { primary_->probe(std::move(done)); }
  BackendStats stats() const override { return primary_->stats(); }
  void stop_accepting() override { primary_->stop_accepting(); }
  bool wait_idle(std::chrono::milliseconds timeout) override {
    return primary_->wait_idle(timeout);
  }
  void cancel_all() override { primary_->cancel_all(); }

  ModelBackend &primary() { return *primary_; }
  const ModelBackend &primary() const { return *primary_; }
  uint64_t fallbacks_taken() const { return taken_.load(); }

  struct Attempt; // fallback.cpp

private:
  std::unique_ptr<ModelBackend> primary_;
  std::vector<std::string> fallbacks_;
  FindBackend find_;
  std::atomic<uint64_t> taken_{0};
};

} // namespace gantry::backend::remote
