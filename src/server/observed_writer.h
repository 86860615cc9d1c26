// The HTTP side of the per-call record: a ResponseWriter decorator that sees how the response
// really ended (the status it answered, a client gone, a handler that dropped it) and emits
// exactly one CallOutcome when it ends, whichever path the handler took — 400s, 401s, 429s and
// cache hits included. What the call was, used and cost is filled in by the handlers and the
// InferenceService as typed values; nothing here parses a body.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "core/clock.h"
#include "http/response_writer.h"
#include "server/call_outcome.h"

namespace gantry::server {

class ObservedWriter final : public http::ResponseWriter {
public:
  using Done = std::function<void(CallOutcome &)>;
  ObservedWriter(std::shared_ptr<http::ResponseWriter> inner, std::shared_ptr<CallOutcome> rec,
                 const Clock &clock, Done done)
      : inner_(std::move(inner)), rec_(std::move(rec)), clock_(clock), done_(std::move(done)) {}
  ~ObservedWriter() override {
    if (!finished_.load()) {
      rec_->status = rec_->status ? rec_->status : 500;
      finish();
    }
  }

  void respond(http::Response r) override {
    rec_->status = r.status;
    finish();
    inner_->respond(std::move(r));
  }
  void start_sse(http::Headers headers) override {
    rec_->status = 200;
    inner_->start_sse(std::move(headers));
  }
  bool send_event(std::string data) override { return inner_->send_event(std::move(data)); }
  bool send_comment(std::string_view text) override { return inner_->send_comment(text); }
  bool send_named_event(std::string_view name, std::string data) override {
    return inner_->send_named_event(name, std::move(data));
  }
  void end() override {
    rec_->client_gone = inner_->is_closed();
    finish();
    inner_->end();
  }
  bool is_closed() const override { return inner_->is_closed(); }
  void on_close(std::function<void()> cb) override { inner_->on_close(std::move(cb)); }
  const std::string &request_id() const override { return inner_->request_id(); }

private:
  void finish() {
    if (finished_.exchange(true))
      return;
    rec_->latency_ms =
        std::chrono::duration<double, std::milli>(clock_.now() - rec_->arrived).count();
    if (done_)
      done_(*rec_);
  }

  std::shared_ptr<http::ResponseWriter> inner_;
  std::shared_ptr<CallOutcome> rec_;
  const Clock &clock_;
  Done done_;
  std::atomic<bool> finished_{false};
};

} // namespace gantry::server
