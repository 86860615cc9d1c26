// A ResponseWriter decorator that forwards everything to the real connection and keeps a copy
// of what was sent, handing it to `done` once the response is complete. Idempotency-Key replays
// are built from it. A response that never completed (client gone, server shutdown) reports
// complete = false, so it is not replayed.
//
// The copy is bounded: past `max_bytes` of encoded response (the store's per-entry cap) it stops
// copying, drops what it holds and reports the response as truncated, so a large stream costs no
// memory here and its key is remembered as "not stored" (security audit H8).
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

  RecordingWriter(std::shared_ptr<http::ResponseWriter> inner, Done done,
                  size_t max_bytes = control::kIdempotencyMaxEntryBytes)
      : inner_(std::move(inner)), done_(std::move(done)), max_bytes_(max_bytes) {}
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
      check_size();
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
      check_size();
    }
    inner_->start_sse(std::move(headers));
  }
  bool send_event(std::string data) override {
    const bool last = data == "[DONE]";
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!rec_.truncated) {
        size_ += 4 + data.size();
        rec_.events.push_back(data);
        check_size();
      } else if (data.starts_with("{\"error\"")) {
        // Kept past the cap: a stream that failed is abandoned (retried for real), not "too
        // large".
        rec_.events.push_back(data);
      }
    }
    // An OpenAI stream is complete at [DONE]; record it before the client can read it.
    if (last)
      finish(!inner_->is_closed());
    return inner_->send_event(std::move(data));
  }
  // Named events are not replayable (StoredResponse keeps each event's data only): the record
  // stops, as past its cap, and the key is remembered as "not stored". The routes that stream
  // named events (/v1/responses, /v1/messages) take no Idempotency-Key.
  bool send_named_event(std::string_view name, std::string data) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      rec_.truncated = true;
      rec_.events = {};
    }
    return inner_->send_named_event(name, std::move(data));
  }
  // Comments are signs of life (a cold start's progress), not content: relayed, not recorded.
  bool send_comment(std::string_view text) override { return inner_->send_comment(text); }
  void end() override {
    finish(!inner_->is_closed());
    inner_->end();
  }
  bool is_closed() const override { return inner_->is_closed(); }
  void on_close(std::function<void()> cb) override { inner_->on_close(std::move(cb)); }
  const std::string &request_id() const override { return inner_->request_id(); }

private:
  // Called with mu_ held after the record grew.
  void check_size() {
    if (rec_.truncated)
      return;
    if (!rec_.sse || size_ == 0)
      size_ = control::encoded_size(rec_);
    if (size_ > max_bytes_) {
      rec_.truncated = true;
      rec_.body.clear();
      rec_.body.shrink_to_fit();
      rec_.events = {};
    }
  }

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
  const size_t max_bytes_;
  control::StoredResponse rec_;
  size_t size_ = 0; // encoded size of rec_ so far
  bool finished_ = false;
};

} // namespace gantry::server
