#include "backend/hosted/hosted_backend.h"

namespace gantry::backend {
namespace {

// PreparedCall::state / PreparedEmbeddings::state of a hosted model: the engine's own state and
// the pin that keeps that engine loaded.
struct PinnedState {
  std::shared_ptr<void> inner;
  std::shared_ptr<ModelPin> pin;
};

// Forwards to the caller's sink and drops the pin after the call's last event.
class PinnedSink final : public CallSink {
public:
  PinnedSink(std::shared_ptr<CallSink> sink, std::shared_ptr<ModelPin> pin)
      : sink_(std::move(sink)), pin_(std::move(pin)) {}
  void on_event(const ChoiceEvent &event) override { sink_->on_event(event); }
  void on_done(const CallSummary &summary) override {
    sink_->on_done(summary);
    pin_.reset();
  }

private:
  std::shared_ptr<CallSink> sink_;
  std::shared_ptr<ModelPin> pin_;
};

} // namespace

Result<PreparedCall> HostedBackend::prepare(const api::InferenceRequest &request,
                                            const PrepareOptions &options) {
  GANTRY_ASSIGN_OR_RETURN(auto pin, host_.acquire(index_));
  GANTRY_ASSIGN_OR_RETURN(PreparedCall call, pin->backend().prepare(request, options));
  auto st = std::make_shared<PinnedState>();
  st->inner = std::move(call.state);
  st->pin = std::move(pin);
  call.state = std::move(st);
  return call;
}

Result<std::unique_ptr<CallHandle>> HostedBackend::start(const PreparedCall &prepared,
                                                         std::shared_ptr<CallSink> sink) {
  auto st = std::static_pointer_cast<PinnedState>(prepared.state);
  if (!st || !st->pin)
    return Err(Error{ErrorCode::kInternal, "hosted model: call was not prepared here", {}});
  PreparedCall inner = prepared;
  inner.state = st->inner;
  return st->pin->backend().start(inner, std::make_shared<PinnedSink>(std::move(sink), st->pin));
}

Result<PreparedEmbeddings> HostedBackend::prepare_embeddings(const api::EmbeddingRequest &request) {
  GANTRY_ASSIGN_OR_RETURN(auto pin, host_.acquire(index_));
  GANTRY_ASSIGN_OR_RETURN(PreparedEmbeddings p, pin->backend().prepare_embeddings(request));
  auto st = std::make_shared<PinnedState>();
  st->inner = std::move(p.state);
  st->pin = std::move(pin);
  p.state = std::move(st);
  return p;
}

Status HostedBackend::embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
                            EmbedDone done) {
  auto st = std::static_pointer_cast<PinnedState>(prepared.state);
  if (!st || !st->pin)
    return Err(Error{ErrorCode::kInternal, "hosted model: embeddings were not prepared here", {}});
  PreparedEmbeddings inner = prepared;
  inner.state = st->inner;
  return st->pin->backend().embed(
      inner, std::move(indices),
      [done = std::move(done), pin = st->pin](Result<EmbedResult> r) { done(std::move(r)); });
}

void HostedBackend::probe(ProbeDone done) {
  auto pin = host_.pin_if_loaded(index_);
  if (!pin) {
    ProbeResult r;
    r.ok = true;
    done(std::move(r));
    return;
  }
  ModelBackend &b = pin->backend();
  b.probe([done = std::move(done), pin = std::move(pin)](ProbeResult r) { done(std::move(r)); });
}

bool HostedBackend::loaded() const { return host_.is_loaded(index_); }

} // namespace gantry::backend
