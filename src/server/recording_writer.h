// A ResponseWriter decorator that forwards everything to the real connection and keeps a copy
// of what was sent, handing it to `done` once the response is complete. Idempotency-Key replays
// are built from it. A response that never completed (client gone, server shutdown) reports
// complete = false, so it is not replayed.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "control/idempotency.h"
#include "http/response_writer.h"

namespace gantry::server {

class RecordingWriter final : public http::ResponseWriter {
public:
  using Done = std::function<void(bool complete, control::StoredResponse response)>;

  RecordingWriter(std::shared_ptr<http::ResponseWriter> inner, Done done)
      : inner_(std::move(inner)), done_(std::move(done)) {}
  ~RecordingWriter() override {
    // Dropped without answering: the inner writer sends its 500; nothing to replay.
    if (!finished_ && done_)
      done_(false, std::move(rec_));
  }

  void respond(http::Response r) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      rec_.status = r.status;
      rec_.content_type = r.content_type;
      for (const auto &h : r.headers)
        rec_.headers.emplace_back(h.name, h.value);
      rec_.body = r.body;
    }
    // Recorded before the client can see the response, so its immediate retry is a replay.
    finish(!inner_->is_closed());
    inner_->respond(std::move(r));
  }
  void start_sse(http::Headers headers) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      rec_.sse = true;
      rec_.status = 200;
      for (const auto &h : headers)
        rec_.headers.emplace_back(h.name, h.value);
    }
    inner_->start_sse(std::move(headers));
  }
  bool send_event(std::string data) override {
    const bool last = data == "[DONE]";
    {
      std::lock_guard<std::mutex> lk(mu_);
      rec_.events.push_back(data);
    }
    // An OpenAI stream is complete at [DONE]; record it before the client can read it.
    if (last)
      finish(!inner_->is_closed());
    return inner_->send_event(std::move(data));
  }
  void end() override {
    finish(!inner_->is_closed());
    inner_->end();
  }
  bool is_closed() const override { return inner_->is_closed(); }
  void on_close(std::function<void()> cb) override { inner_->on_close(std::move(cb)); }
  const std::string &request_id() const override { return inner_->request_id(); }

private:
  void finish(bool complete) {
    control::StoredResponse r;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (finished_)
        return;
      finished_ = true;
      r = std::move(rec_);
    }
    if (done_)
      done_(complete, std::move(r));
  }

  std::shared_ptr<http::ResponseWriter> inner_;
  Done done_;
  std::mutex mu_;
  control::StoredResponse rec_;
  bool finished_ = false;
};

} // namespace gantry::server
