// HostedBackend: the permanent ModelBackend of one model a ModelHost hosts (placement, issue 14).
// The server's registry holds it whether the model is loaded or not; prepare() and
// prepare_embeddings() pin the model — loading it on demand — and the pin travels with the
// PreparedCall into the running call, released after its on_done (or when a call that never
// started is dropped). So a model is never unloaded under a request, and a probe or a stats
// read never loads one.
//
// Threading: as ModelBackend. prepare() may block for a load (it runs on the prepare pool,
// off the I/O threads).
#pragma once

#include "backend/hosted/model_host.h"
#include "backend/model_backend.h"

namespace gantry::backend {

class HostedBackend final : public ModelBackend {
public:
  // `info` is what the host registered for `index` (the facade's fixed identity).
  HostedBackend(ModelHost &host, int index, BackendInfo info)
      : host_(host), index_(index), info_(std::move(info)) {}

  const BackendInfo &info() const override { return info_; }
  Result<PreparedCall> prepare(const api::InferenceRequest &request,
                               const PrepareOptions &options) override;
  Result<std::unique_ptr<CallHandle>> start(const PreparedCall &prepared,
                                            std::shared_ptr<CallSink> sink) override;
  Result<PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &request) override;
  Status embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
               EmbedDone done) override;
  // A loaded model is probed; one not loaded passes (it loads on demand: probing must not
  // load it, and its file was checked at start-up).
  void probe(ProbeDone done) override;
  BackendStats stats() const override { return host_.stats(index_); }
  void stop_accepting() override { host_.stop_accepting(index_); }
  bool wait_idle(std::chrono::milliseconds timeout) override {
    return host_.wait_idle(index_, timeout);
  }
  void cancel_all() override { host_.cancel_all(index_); }

  bool loaded() const;

private:
  ModelHost &host_;
  const int index_;
  const BackendInfo info_;
};

} // namespace gantry::backend
