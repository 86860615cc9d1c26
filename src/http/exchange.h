// The per-request ResponseWriter behind HttpServer, internal to src/http. Kept free of Asio:
// it reaches its connection only through FlushTarget.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "http/response_writer.h"
#include "http/wire.h"

namespace gantry::http::detail {

// Implemented by the server's connection. post_flush() may be called from any thread and
// schedules a flush on the connection's I/O thread.
class FlushTarget {
public:
  virtual void post_flush() = 0;

protected:
  ~FlushTarget() = default;
};

// Server-wide settings an exchange reads. The pointees belong to the server, which outlives
// every exchange that is still attached to a connection.
struct ExchangeContext {
  std::size_t max_pending_write_bytes = 0;
  const ErrorRenderer *render = nullptr;
  const std::atomic<bool> *draining = nullptr;
};

// Calls f(line) for each line of `data`, without line terminators.
void for_each_line(std::string_view data, const std::function<void(std::string_view)> &f);

// The per-request ResponseWriter. Shared between the connection's I/O thread and producer
// threads; every field is guarded by mu_. Holds only a weak reference to the connection, so
// a producer that keeps a writer past the server's lifetime touches no Asio object.
class Exchange final : public ResponseWriter {
public:
  enum class State { kFresh, kStreaming, kSourcing, kDone };

  Exchange(std::weak_ptr<FlushTarget> conn, const ExchangeContext &ctx, std::string request_id,
           std::string buffer, bool keep_alive, bool http10, bool head)
      : conn_(std::move(conn)), ctx_(ctx), request_id_(std::move(request_id)),
        pending_(std::move(buffer)), keep_alive_(keep_alive), http10_(http10), head_(head) {
    pending_.clear();
  }

  void respond(Response response) override {
    std::lock_guard lock(mu_);
    if (state_ != State::kFresh || closed_locked())
      return;
    append_response_locked(response);
    state_ = State::kDone;
    schedule_locked();
  }

  void respond_stream(int status, std::string content_type, Headers headers, std::uint64_t length,
                      BodySource next) override {
    std::lock_guard lock(mu_);
    if (state_ != State::kFresh || closed_locked())
      return;
    append_head(pending_, status, content_type, headers, Framing::kLength,
                static_cast<std::size_t>(length), keep_alive_locked(), http10_, request_id_);
    if (head_ || length == 0) {
      state_ = State::kDone;
    } else {
      source_ = std::move(next);
      state_ = State::kSourcing;
    }
    schedule_locked();
  }

  void start_sse(Headers headers) override {
    std::lock_guard lock(mu_);
    if (state_ != State::kFresh || closed_locked())
      return;
    headers.push_back({"Cache-Control", "no-cache"});
    // Tells nginx (deploy/) not to buffer the stream.
    headers.push_back({"X-Accel-Buffering", "no"});
    if (http10_)
      keep_alive_ = false; // no chunked encoding in 1.0: the close ends the body
    append_head(pending_, 200, "text/event-stream", headers,
                http10_ ? Framing::kUntilClose : Framing::kChunked, 0, keep_alive_locked(), http10_,
                request_id_);
    state_ = State::kStreaming;
    schedule_locked();
  }

  bool send_event(std::string data) override { return send(std::string_view(), data); }
  bool send_comment(std::string_view text) override {
    std::string line = ": ";
    for (char c : text)
      line += c == '\r' || c == '\n' ? ' ' : c;
    line += "\n\n";
    return send_raw(line);
  }
  bool send_named_event(std::string_view name, std::string data) override {
    return send(name, data);
  }

  void end() override {
    std::lock_guard lock(mu_);
    if (state_ == State::kStreaming && !closed_locked()) {
      if (!http10_)
        pending_ += "0\r\n\r\n";
      state_ = State::kDone;
      schedule_locked();
    }
  }

  bool is_closed() const override {
    std::lock_guard lock(mu_);
    return closed_locked();
  }

  void on_close(std::function<void()> callback) override {
    {
      std::lock_guard lock(mu_);
      if (finished_)
        return;
      if (!aborted_) {
        callbacks_.push_back(std::move(callback));
        return;
      }
    }
    callback();
  }

  const std::string &request_id() const override { return request_id_; }

  // --- Called on the connection's I/O thread only. ---

  // While the handler runs inline on the I/O thread, nothing is posted: the connection
  // flushes right after the handler returns, which saves a post per request.
  void set_inline(bool on) {
    std::lock_guard lock(mu_);
    inline_ = on;
  }

  // An event stream is open (its head queued or written, its end not yet).
  bool streaming() const {
    std::lock_guard lock(mu_);
    return state_ == State::kStreaming && !closed_locked();
  }

  struct Batch {
    bool done = false;     // the response is complete once these bytes are written
    bool overflow = false; // the writer exceeded max_pending_write_bytes
    bool abandoned = false;
    bool cut = false; // a streamed body's source failed: close without finishing
  };
  // True once a writer exceeded max_pending_write_bytes (checked even while a write is stuck).
  bool overflowed() const {
    std::lock_guard lock(mu_);
    return overflow_;
  }

  // Swaps the queued bytes into `out` (which must be empty) and says what they complete.
  Batch take(std::string &out) {
    pull_source();
    std::lock_guard lock(mu_);
    flush_scheduled_ = false;
    out.swap(pending_);
    Batch b{state_ == State::kDone, overflow_, abandoned_, cut_};
    abandoned_ = false;
    return b;
  }

  // The response was fully written. Hands the spare buffer back for the next request.
  void finish(std::string &spare) {
    std::lock_guard lock(mu_);
    finished_ = true;
    conn_.reset();
    callbacks_.clear();
    spare.swap(pending_);
  }

  // The connection closed before the response finished. Returns the callbacks to run.
  std::vector<std::function<void()>> abort() {
    std::lock_guard lock(mu_);
    if (finished_)
      return {};
    aborted_ = true;
    conn_.reset();
    pending_.clear();
    return std::move(callbacks_);
  }

  // The handler dropped its last reference (any thread).
  void release() {
    std::lock_guard lock(mu_);
    if (state_ == State::kDone || state_ == State::kSourcing || closed_locked())
      return; // a source goes on producing without the handler
    if (state_ == State::kFresh) {
      Response r = (*ctx_.render)(Error::internal("The handler produced no response"));
      append_response_locked(r);
    } else if (!http10_) {
      pending_ += "0\r\n\r\n";
    }
    state_ = State::kDone;
    abandoned_ = true;
    schedule_locked();
  }

  void respond_internal_error(std::string_view what) {
    std::lock_guard lock(mu_);
    if (state_ != State::kFresh || closed_locked())
      return;
    Response r = (*ctx_.render)(Error::internal(std::string(what)));
    append_response_locked(r);
    state_ = State::kDone;
  }

private:
  // A streamed body: the next piece once the previous one was handed to the socket. Called on
  // the I/O thread without mu_ (the source reads a store).
  void pull_source() {
    BodySource source;
    {
      std::lock_guard lock(mu_);
      if (state_ != State::kSourcing || !pending_.empty() || closed_locked())
        return;
      source = std::move(source_); // moved, not copied: the source keeps its position
    }
    for (;;) {
      auto piece = source();
      std::lock_guard lock(mu_);
      if (!piece) {
        cut_ = true;
        return;
      }
      if (!*piece) {
        state_ = State::kDone;
        return;
      }
      if (!(*piece)->empty()) {
        pending_ += **piece;
        source_ = std::move(source);
        return;
      }
    }
  }

  // One event: "event: <name>" (when named) and a "data: " line per line of `data`.
  // One SSE piece exactly as given (a comment line), in its own chunk.
  bool send_raw(std::string_view piece) {
    std::lock_guard lock(mu_);
    if (state_ != State::kStreaming || closed_locked())
      return false;
    if (!http10_) {
      append_number(pending_, piece.size(), 16);
      pending_ += "\r\n";
    }
    pending_ += piece;
    if (!http10_)
      pending_ += "\r\n";
    return flush_or_overflow_locked();
  }

  bool flush_or_overflow_locked() {
    if (pending_.size() > ctx_.max_pending_write_bytes) {
      overflow_ = true;
      aborted_ = true;
      pending_.clear();
      pending_.shrink_to_fit();
      // A flush may be "scheduled" only in the sense that the connection will look again when
      // its stuck write completes, which a non-reading client never lets happen: post anew.
      flush_scheduled_ = false;
    }
    schedule_locked();
    return !overflow_;
  }

  bool send(std::string_view name, std::string_view data) {
    std::lock_guard lock(mu_);
    if (state_ != State::kStreaming || closed_locked())
      return false;
    // The name is the server's own (a fixed event type); a line break would split the event.
    if (name.find_first_of("\r\n") != std::string_view::npos)
      name = {};
    std::size_t payload = 1; // the blank line ending the event
    if (!name.empty())
      payload += 7 + name.size() + 1;
    for_each_line(data, [&](std::string_view line) { payload += 6 + line.size() + 1; });
    if (!http10_) {
      append_number(pending_, payload, 16);
      pending_ += "\r\n";
    }
    if (!name.empty()) {
      pending_ += "event: ";
      pending_ += name;
      pending_ += '\n';
    }
    for_each_line(data, [&](std::string_view line) {
      pending_ += "data: ";
      pending_ += line;
      pending_ += '\n';
    });
    pending_ += '\n';
    if (!http10_)
      pending_ += "\r\n";
    return flush_or_overflow_locked();
  }

  bool closed_locked() const { return finished_ || aborted_; }
  // Reading `draining` is safe here: mu_ is held and the exchange is not closed, so the
  // connection (and so the server that owns the context) cannot be torn down meanwhile.
  bool keep_alive_locked() const { return keep_alive_ && !ctx_.draining->load(); }

  void append_response_locked(const Response &r) {
    append_head(pending_, r.status, r.content_type, r.headers, Framing::kLength, r.body.size(),
                keep_alive_locked(), http10_, request_id_);
    if (!head_)
      pending_ += r.body;
  }

  void schedule_locked();

  mutable std::mutex mu_;
  std::weak_ptr<FlushTarget> conn_;
  const ExchangeContext ctx_;
  const std::string request_id_;
  std::string pending_;
  State state_ = State::kFresh;
  bool keep_alive_;
  const bool http10_;
  const bool head_;
  bool inline_ = false;
  bool flush_scheduled_ = false;
  bool finished_ = false;
  bool aborted_ = false;
  bool overflow_ = false;
  bool abandoned_ = false;
  bool cut_ = false;
  BodySource source_; // kSourcing: produces the rest of the body
  std::vector<std::function<void()>> callbacks_;
};

} // namespace gantry::http::detail
