#include "backend/remote/fallback.h"

#include <mutex>

namespace gantry::backend::remote {

bool falls_back_on(const Error &e) {
  switch (e.code) {
  case ErrorCode::kUnavailable:
  case ErrorCode::kQueueFull:
  case ErrorCode::kRateLimited:
  case ErrorCode::kContextLengthExceeded:
  case ErrorCode::kResourceExhausted:
  case ErrorCode::kInternal:
  case ErrorCode::kIo: return true;
  default: return false;
  }
}

namespace {

// What prepare() hands to start(): the request (re-prepared for each fallback) and the index of
// the backend it was prepared for (-1: the primary; i: fallbacks_[i]).
struct FallbackState {
  api::InferenceRequest request;
  PrepareOptions options;
  int at = -1;
  PreparedCall inner;
};

} // namespace

// One client call across the primary and its fallbacks. Shared by the handle and the sinks.
struct FallbackBackend::Attempt : CallSink, std::enable_shared_from_this<Attempt> {
  FallbackBackend *owner = nullptr;
  std::shared_ptr<CallSink> client;
  api::InferenceRequest request;
  PrepareOptions options;
  int at = -1;
  std::mutex mu;
  std::shared_ptr<CallHandle> handle; // of the backend running now
  bool cancelled = false;

  void on_event(const ChoiceEvent &e) override { client->on_event(e); }

  void on_done(const CallSummary &s) override {
    if (s.error && s.error->before_output && falls_back_on(s.error->error)) {
      std::unique_lock<std::mutex> lk(mu);
      if (!cancelled && next(lk))
        return;
    }
    if (at < 0 || !s.served_model.empty()) {
      client->on_done(s);
      return;
    }
    CallSummary served = s;
    served.served_model = owner->fallbacks_[at];
    client->on_done(served);
  }

  // Starts the next fallback that accepts the request; false when none is left.
  bool next(std::unique_lock<std::mutex> &lk) {
    while (++at < static_cast<int>(owner->fallbacks_.size())) {
      ModelBackend *b = owner->find_(owner->fallbacks_[at]);
      if (!b)
        continue;
      api::InferenceRequest r = request;
      r.model = owner->fallbacks_[at];
      auto p = b->prepare(r, options);
      if (!p)
        continue;
      // Counted before start(): the fallback may finish on its own thread, and its client read
      // fallbacks_taken(), before start() returns here.
      ++owner->taken_;
      auto h = b->start(*p, shared_from_this());
      if (!h) {
        --owner->taken_;
        continue;
      }
      handle = std::move(*h);
      lk.unlock();
      return true;
    }
    return false;
  }
};

namespace {
class FallbackHandle final : public CallHandle {
public:
  explicit FallbackHandle(std::shared_ptr<FallbackBackend::Attempt> a) : a_(std::move(a)) {}
  void cancel() override {
    std::shared_ptr<CallHandle> h;
    {
      std::lock_guard<std::mutex> lk(a_->mu);
      a_->cancelled = true;
      h = a_->handle;
    }
    if (h) // outside the lock: a backend may finish the call from inside cancel()
      h->cancel();
  }

private:
  std::shared_ptr<FallbackBackend::Attempt> a_;
};
} // namespace

FallbackBackend::FallbackBackend(std::unique_ptr<ModelBackend> primary,
                                 std::vector<std::string> fallbacks, FindBackend find)
    : primary_(std::move(primary)), fallbacks_(std::move(fallbacks)), find_(std::move(find)) {}

Result<PreparedCall> FallbackBackend::prepare(const api::InferenceRequest &request,
                                              const PrepareOptions &options) {
  auto st = std::make_shared<FallbackState>();
  st->request = request;
  st->options = options;
  auto p = primary_->prepare(request, options);
  // A prompt too long for this model may fit a fallback's context.
  while (!p && p.error().code == ErrorCode::kContextLengthExceeded &&
         st->at + 1 < static_cast<int>(fallbacks_.size())) {
    ModelBackend *b = find_(fallbacks_[++st->at]);
    if (!b)
      continue;
    api::InferenceRequest r = request;
    r.model = fallbacks_[st->at];
    auto q = b->prepare(r, options);
    if (q || q.error().code != ErrorCode::kContextLengthExceeded)
      p = std::move(q);
  }
  if (!p)
    return p;
  PreparedCall out = *p; // the numbers admission needs; the inner call is kept whole
  st->inner = std::move(*p);
  out.state = st;
  return out;
}

Result<std::unique_ptr<CallHandle>> FallbackBackend::start(const PreparedCall &prepared,
                                                           std::shared_ptr<CallSink> sink) {
  auto st = std::static_pointer_cast<FallbackState>(prepared.state);
  auto a = std::make_shared<Attempt>();
  a->owner = this;
  a->client = std::move(sink);
  a->request = st->request;
  a->options = st->options;
  a->at = st->at;
  ModelBackend *first = st->at < 0 ? primary_.get() : find_(fallbacks_[st->at]);
  if (!first)
    return Err(Error{ErrorCode::kUnavailable, "fallback model is gone", {}});
  std::unique_lock<std::mutex> lk(a->mu); // on_done cannot run before the handle is stored
  auto h = first->start(st->inner, a);
  if (!h) {
    if (!falls_back_on(h.error()) || !a->next(lk))
      return Err(h.take_error());
  } else {
    a->handle = std::move(*h);
  }
  return std::unique_ptr<CallHandle>(std::make_unique<FallbackHandle>(a));
}

} // namespace gantry::backend::remote
