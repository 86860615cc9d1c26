// The per-call record behind the request log and the request metrics: a ResponseWriter
// decorator that sees how the call really ended (the status it answered, an error event inside
// a stream, a client gone) and emits exactly one record when it ends, whichever path the
// handler took — 400s, 401s, 429s and cache hits included.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "http/response_writer.h"

namespace gantry::server {

// Filled by the handler as it learns things; read once by the writer when the call ends.
struct CallRecord {
  std::chrono::steady_clock::time_point arrived = std::chrono::steady_clock::now();
  int64_t arrived_unix_ms = 0;
  std::string request_id, endpoint, model, project, key_id;
  bool stream = false;
  int64_t input_tokens = 0, output_tokens = 0, cached_tokens = 0;
  double ttft_ms = -1, queue_ms = -1, prefill_ms = -1, decode_ms = -1, engine_ms = 0;
  double cost_usd = 0;
  bool cached = false;
  std::string finish_reason;
  // Set by the writer:
  int status = 0;
  std::string error_type, error; // from the error body, when status >= 400 or a stream failed
  double latency_ms = 0;
  bool client_gone = false;
};

class ObservedWriter final : public http::ResponseWriter {
public:
  using Done = std::function<void(CallRecord &)>;
  ObservedWriter(std::shared_ptr<http::ResponseWriter> inner, std::shared_ptr<CallRecord> rec,
                 Done done)
      : inner_(std::move(inner)), rec_(std::move(rec)), done_(std::move(done)) {}
  ~ObservedWriter() override {
    if (!finished_.load()) {
      rec_->status = rec_->status ? rec_->status : 500;
      finish();
    }
  }

  void respond(http::Response r) override {
    rec_->status = r.status;
    if (r.status >= 400)
      note_error(r.body);
    finish();
    inner_->respond(std::move(r));
  }
  void start_sse(http::Headers headers) override {
    rec_->status = 200;
    inner_->start_sse(std::move(headers));
  }
  bool send_event(std::string data) override {
    if (data.starts_with("{\"error\""))
      note_error(data);
    return inner_->send_event(std::move(data));
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
  void note_error(const std::string &body);
  void finish() {
    if (finished_.exchange(true))
      return;
    rec_->latency_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - rec_->arrived)
            .count();
    if (done_)
      done_(*rec_);
  }

  std::shared_ptr<http::ResponseWriter> inner_;
  std::shared_ptr<CallRecord> rec_;
  Done done_;
  std::atomic<bool> finished_{false};
};

} // namespace gantry::server
