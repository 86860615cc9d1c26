// The Beast/Asio implementation of HttpServer: the only translation unit that includes them
// for the server side.
//
// Threading: one io_context per I/O thread (concurrency hint 1, so no strands are needed); a
// connection is bound to one thread for its whole life. The acceptor lives on thread 0 and
// hands each socket to the thread with the fewest open connections (its own on a tie). Producers on
// other threads reach a connection only through its Exchange (the ResponseWriter), which queues
// bytes under a mutex and posts one flush per batch onto the connection's thread.
//
// Parsing feeds Beast's parser by hand (put() over a per-connection flat_buffer) instead of
// using http::async_read: that keeps a single outstanding read per connection, lets the same
// read double as the disconnect detector while a handler runs, and gives exact control over
// the header/body/idle deadlines. Responses are serialized by hand into one flat string per
// batch, which is then written with one async_write.
#include "http/server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/url/parse.hpp>

#include "http/exchange.h"
#include "http/io_loop_impl.h"
#include "http/request_id.h"
#include "http/wire.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

using detail::append_head;
using detail::append_number;
using detail::Exchange;
using detail::ExchangeContext;
using detail::Framing;

namespace {

// The body Beast's parser fills: the whole body, or for a body streamed to a BodySink the bytes
// not yet handed over (then nothing is reserved for the declared length). string_body reserves
// Content-Length up front, which for a 200 MB upload is the allocation streaming avoids.
struct SinkableBody {
  struct value_type {
    std::string data;
    bool streaming = false;
  };
  class reader {
  public:
    template <bool isRequest, class Fields>
    reader(bhttp::header<isRequest, Fields> &, value_type &b) : b_(b) {}
    void init(const boost::optional<std::uint64_t> &length, beast::error_code &ec) {
      if (length && !b_.streaming)
        b_.data.reserve(static_cast<std::size_t>(*length)); // checked against the limit first
      ec = {};
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence &buffers, beast::error_code &ec) {
      std::size_t n = 0;
      for (auto b : beast::buffers_range_ref(buffers)) {
        b_.data.append(static_cast<const char *>(b.data()), b.size());
        n += b.size();
      }
      ec = {};
      return n;
    }
    void finish(beast::error_code &ec) { ec = {}; }

  private:
    value_type &b_;
  };
};

// While a handler runs, the connection keeps reading to notice a disconnect; bytes the client
// pipelines meanwhile are kept for the next request, up to this much.
constexpr std::size_t kWatchBufferCap = 64 * 1024;
constexpr std::size_t kReadChunk = 8 * 1024;
// After a failed accept (EMFILE, ENFILE, ENOBUFS) the pending connection stays in the backlog,
// so retrying at once fails the same way in a tight loop (audit H2).
constexpr auto kAcceptBackoff = std::chrono::milliseconds(75);
constexpr std::size_t kFdReserve = 128; // SQLite, logs, outbound clients
constexpr std::size_t kMaxConnectionsDefault = 10'000;

// Collapses runs of '/' so that "/v1//x" routes and is labelled as "/v1/x" (audit L1), and
// refuses "." and ".." segments, which no route uses. False: refuse with 400.
bool normalize_path(std::string &path) {
  std::string out;
  out.reserve(path.size());
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      if (out.empty() || out.back() != '/')
        out += '/';
      ++i;
      continue;
    }
    std::size_t end = path.find('/', i);
    if (end == std::string::npos)
      end = path.size();
    std::string_view seg(path.data() + i, end - i);
    if (seg == "." || seg == "..")
      return false;
    out += seg;
    i = end;
  }
  path = std::move(out);
  return true;
}
// Buffers that grew for a large response are not kept for the next one.
constexpr std::size_t kKeepBufferCapacity = 256 * 1024;

struct Counters {
  std::atomic<std::uint64_t> active_connections{0};
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> requests_served{0};
  std::atomic<std::uint64_t> requests_in_flight{0};
  std::atomic<std::uint64_t> header_timeouts{0};
  std::atomic<std::uint64_t> body_timeouts{0};
  std::atomic<std::uint64_t> idle_timeouts{0};
  std::atomic<std::uint64_t> write_timeouts{0};
  std::atomic<std::uint64_t> payload_too_large{0};
  std::atomic<std::uint64_t> headers_too_large{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> client_disconnects{0};
  std::atomic<std::uint64_t> slow_client_overflows{0};
  std::atomic<std::uint64_t> abandoned_responses{0};
  std::atomic<std::uint64_t> accept_pauses{0};
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> body_budget_refusals{0};
  std::atomic<std::uint64_t> head_refusals{0};
  std::atomic<std::uint64_t> unsupported_encodings{0};
};

// Shared, read-mostly state of one server. Outlives every connection (see Impl's member
// order). Written only by the control thread before start, except the atomics.
struct Core {
  ServerOptions options;
  Handler handler;
  ErrorRenderer render;
  Counters counters;
  std::atomic<bool> draining{false};
  ExchangeContext exchange{0, &render, &draining};
  std::mutex idle_mu;                              // guards the wait for requests_in_flight == 0
  std::size_t max_connections = 0;                 // resolved by start()
  std::atomic<std::size_t> open_sockets{0};        // accepted, not yet closed
  std::atomic<bool> accept_paused{false};          // listener waits for a close
  std::function<void()> resume_accept;             // set by Impl, safe from any thread
  std::atomic<std::size_t> inflight_body_bytes{0}; // reserved by bodies being read

  // Returns false when the global body budget cannot take `n` more bytes.
  bool reserve_body(std::size_t n) {
    std::size_t cur = inflight_body_bytes.load();
    do {
      if (n > options.max_inflight_body_bytes || cur > options.max_inflight_body_bytes - n)
        return false;
    } while (!inflight_body_bytes.compare_exchange_weak(cur, cur + n));
    return true;
  }

  void socket_closed() {
    open_sockets.fetch_sub(1);
    if (accept_paused.load() && resume_accept)
      resume_accept();
  }
  std::condition_variable idle_cv;

  void request_finished() {
    if (counters.requests_in_flight.fetch_sub(1) == 1) {
      std::lock_guard lock(idle_mu);
      idle_cv.notify_all();
    }
  }
};

Method to_method(bhttp::verb v) {
  switch (v) {
  case bhttp::verb::get: return Method::kGet;
  case bhttp::verb::head: return Method::kHead;
  case bhttp::verb::post: return Method::kPost;
  case bhttp::verb::put: return Method::kPut;
  case bhttp::verb::delete_: return Method::kDelete;
  case bhttp::verb::patch: return Method::kPatch;
  case bhttp::verb::options: return Method::kOptions;
  default: return Method::kOther;
  }
}

class Connection;

// Everything one I/O thread owns.
struct Worker {
  asio::io_context ioc{1};
  // Stands for `ioc` (IoLoop::current() on this thread): outbound calls a handler starts run
  // here too. Declared after `ioc`: destroyed first, it drops the connections kept on it.
  std::unique_ptr<IoLoop> loop = wrap_io_context(ioc);
  std::list<std::shared_ptr<Connection>> connections; // owners until close
  // Connections accepted for this thread and not yet closed: read by the acceptor to place the
  // next one (the list above is this thread's alone).
  std::atomic<std::size_t> load{0};
  RequestIdGenerator ids;
  std::thread thread;
};

// One TCP connection. Owned by its Worker's list and touched only on that worker's thread.
class Connection final : public std::enable_shared_from_this<Connection>,
                         public detail::FlushTarget {
public:
  // `peer` is the address accept() returned (asking the socket again was one more syscall on
  // every new connection).
  Connection(tcp::socket socket, Core &core, Worker &worker, const tcp::endpoint &peer)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), core_(core), worker_(worker),
        remote_(peer.address().to_string() + ":" + std::to_string(peer.port())) {}

  // Any thread: the executor is fixed at construction.
  void post_flush() override {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->flush(); });
  }

  void start(std::list<std::shared_ptr<Connection>>::iterator self) {
    self_ = self;
    core_.counters.active_connections.fetch_add(1);
    core_.counters.connections_accepted.fetch_add(1);
    // A client that connects and stays silent is treated like a slow header.
    set_deadline(core_.options.header_timeout, Deadline::kHeader);
    if (core_.draining.load())
      keep_alive_default_ = false;
    do_read();
  }

  // Graceful shutdown: drop connections that are between requests.
  void drain() {
    keep_alive_default_ = false;
    if (phase_ == Phase::kIdle && buffer_.size() == 0)
      close(Why::kShutdown);
  }

  enum class Why { kPeer, kTimeout, kOverflow, kShutdown, kDone };

  void close(Why why) {
    if (phase_ == Phase::kClosed)
      return;
    auto self = shared_from_this(); // erasing from the worker's list may drop the last owner
    phase_ = Phase::kClosed;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    timer_.cancel();
    if (current_) {
      if (why == Why::kPeer)
        core_.counters.client_disconnects.fetch_add(1);
      auto callbacks = current_->abort();
      current_.reset();
      core_.request_finished();
      for (auto &cb : callbacks) {
        try {
          cb();
        } catch (...) {
          // A producer's callback must not take the I/O thread down.
        }
      }
    }
    abort_sink();
    release_body();
    core_.counters.active_connections.fetch_sub(1);
    core_.socket_closed();
    worker_.load.fetch_sub(1);
    worker_.connections.erase(self_);
  }

  void flush() {
    if (phase_ == Phase::kClosed || !current_)
      return;
    if (writing_) {
      // A reader that stopped reading leaves our write pending forever; the producer's
      // overflow must still end the connection now, not at the write timeout.
      if (current_->overflowed()) {
        core_.counters.slow_client_overflows.fetch_add(1);
        close(Why::kOverflow); // out_ stays alive until the aborted write's handler runs
      }
      return;
    }
    Exchange::Batch batch = current_->take(out_);
    if (batch.abandoned)
      core_.counters.abandoned_responses.fetch_add(1);
    if (batch.overflow) {
      core_.counters.slow_client_overflows.fetch_add(1);
      out_.clear();
      close(Why::kOverflow);
      return;
    }
    if (batch.cut && out_.empty()) {
      close(Why::kDone); // a streamed body's source failed: the client sees it cut short
      return;
    }
    if (out_.empty()) {
      if (batch.done)
        finish_exchange();
      return;
    }
    write(batch.done);
  }

private:
  enum class Phase { kIdle, kHeader, kBody, kHandling, kLinger, kClosed };
  enum class Deadline { kNone, kIdle, kHeader, kBody, kWrite, kLinger };

  // --- Deadlines: one timer per connection, re-armed lazily. Moving a deadline later (the
  // common case: every keep-alive request) only stores it; the timer re-arms when it fires.

  void set_deadline(std::chrono::milliseconds in, Deadline kind) {
    deadline_kind_ = kind;
    deadline_ = SteadyClock::now() + in;
    if (!timer_armed_ || deadline_ < timer_expiry_)
      arm(deadline_);
  }
  void clear_deadline() { deadline_kind_ = Deadline::kNone; }

  void arm(SteadyClock::time_point at) {
    timer_armed_ = true;
    timer_expiry_ = at;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->on_timer(ec); });
  }

  void on_timer(beast::error_code ec) {
    if (ec == asio::error::operation_aborted || phase_ == Phase::kClosed)
      return;
    timer_armed_ = false;
    if (deadline_kind_ == Deadline::kNone)
      return;
    if (SteadyClock::now() < deadline_) {
      arm(deadline_);
      return;
    }
    auto &c = core_.counters;
    if (deadline_kind_ == Deadline::kBody && sink_) {
      c.body_timeouts.fetch_add(1);
      Response r = core_.render(Error::invalid("The upload stalled: no body bytes arrived for " +
                                               std::to_string(core_.options.body_timeout.count()) +
                                               " ms; nothing was stored"));
      r.status = 408;
      reject_with(r);
      return;
    }
    switch (deadline_kind_) {
    case Deadline::kIdle: c.idle_timeouts.fetch_add(1); break;
    case Deadline::kHeader: c.header_timeouts.fetch_add(1); break;
    case Deadline::kBody: c.body_timeouts.fetch_add(1); break;
    case Deadline::kWrite: c.write_timeouts.fetch_add(1); break;
    case Deadline::kLinger:
    case Deadline::kNone: break;
    }
    close(Why::kTimeout);
  }

  // --- Reading: at most one read in flight, whatever the phase.

  void do_read() {
    if (reading_ || phase_ == Phase::kClosed)
      return;
    reading_ = true;
    socket_.async_read_some(
        buffer_.prepare(kReadChunk),
        [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, std::size_t n) {
    reading_ = false;
    if (phase_ == Phase::kClosed)
      return;
    if (ec) {
      close(phase_ == Phase::kLinger ? Why::kDone : Why::kPeer);
      return;
    }
    buffer_.commit(n);
    switch (phase_) {
    case Phase::kLinger:
      buffer_.consume(buffer_.size());
      do_read();
      return;
    case Phase::kHandling:
      if (buffer_.size() < kWatchBufferCap)
        do_read();
      return;
    case Phase::kIdle:
    case Phase::kHeader:
    case Phase::kBody: parse(); return;
    case Phase::kClosed: return;
    }
  }

  void parse() {
    while (true) {
      if (buffer_.size() == 0) {
        do_read();
        return;
      }
      if (!parser_) {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(core_.options.max_header_bytes));
        // Set by accept_head() once the route is known (a streamed body has its own limit);
        // Beast would otherwise refuse a large Content-Length before the head is routed.
        parser_->body_limit(boost::none);
      }
      if (phase_ == Phase::kIdle) {
        phase_ = Phase::kHeader;
        set_deadline(core_.options.header_timeout, Deadline::kHeader);
      }
      beast::error_code ec;
      std::size_t n = parser_->put(buffer_.data(), ec);
      buffer_.consume(n);
      if (ec == bhttp::error::need_more) {
        // Body data is consumed as it arrives and an oversized head fails with header_limit,
        // so unconsumed bytes beyond the header limit can only be a chunk-size line (with
        // extensions) or a trailer section that never ends (audit H1): refuse it rather
        // than buffer it.
        if (buffer_.size() > core_.options.max_header_bytes) {
          core_.counters.headers_too_large.fetch_add(1);
          Response r = core_.render(
              Error::invalid("Chunk header or trailer section exceeds the limit of " +
                             std::to_string(core_.options.max_header_bytes) + " bytes"));
          r.status = 431;
          reject_with(r);
          return;
        }
        do_read();
        return;
      }
      if (ec) {
        reject(ec);
        return;
      }
      if (parser_->is_header_done() && !head_) {
        if (!accept_head())
          return;
      }
      if (sink_ && !pump_sink(parser_->is_done()))
        return;
      if (parser_->is_done()) {
        on_request();
        return;
      }
      if (parser_->is_header_done() && phase_ == Phase::kHeader) {
        phase_ = Phase::kBody;
        set_deadline(core_.options.body_timeout, Deadline::kBody);
        maybe_send_continue();
      }
      if (n == 0) {
        do_read();
        return;
      }
    }
  }

  // Clients such as curl send "Expect: 100-continue" with large bodies and wait (curl: 1 s)
  // for permission before sending the body. The body limit was already checked.
  void maybe_send_continue() {
    auto expect = parser_->get().find(bhttp::field::expect);
    if (expect == parser_->get().end() || !beast::iequals(expect->value(), "100-continue")) {
      return;
    }
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true; // no exchange exists yet, so nothing else can be writing
    asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->writing_ = false;
                        if (self->phase_ == Phase::kClosed)
                          return;
                        if (ec) {
                          self->close(Why::kPeer);
                          return;
                        }
                        // The handler may already have answered while this was in flight.
                        self->flush();
                      });
  }

  // Answers a request we could not parse or accept, then closes.
  void reject(beast::error_code ec) {
    Error err;
    int status = 400;
    if (ec == bhttp::error::body_limit) {
      core_.counters.payload_too_large.fetch_add(1);
      err = Error{ErrorCode::kPayloadTooLarge,
                  "Request body exceeds the limit of " + std::to_string(body_limit_) + " bytes",
                  {}};
      status = 413;
    } else if (ec == bhttp::error::header_limit) {
      core_.counters.headers_too_large.fetch_add(1);
      err = Error::invalid("Request headers exceed the limit of " +
                           std::to_string(core_.options.max_header_bytes) + " bytes");
      status = 431;
    } else {
      core_.counters.bad_requests.fetch_add(1);
      err = Error::invalid("Malformed HTTP request: " + ec.message());
    }
    Response r = core_.render(err);
    r.status = status;
    reject_with(r);
  }

  void reject_with(const Response &r) {
    abort_sink();
    parser_.reset();
    head_.reset();
    release_body();
    phase_ = Phase::kHandling;
    clear_deadline();
    out_.clear();
    append_head(out_, r.status, r.content_type, r.headers, Framing::kLength, r.body.size(), false,
                false, worker_.ids.next());
    out_ += r.body;
    keep_alive_ = false;
    write(/*final=*/true);
  }

  void abort_sink() {
    if (sink_) {
      auto sink = std::move(sink_);
      sink->abort();
    }
  }

  // Hands the body's bytes to the sink in pieces of kBodyPieceBytes (all of them once the body
  // is complete). False: the sink refused a piece, answered and closing.
  bool pump_sink(bool last) {
    std::string &data = parser_->get().body().data;
    if (data.size() < kBodyPieceBytes && !last)
      return true;
    std::size_t at = 0;
    while (at < data.size() && (last || data.size() - at >= kBodyPieceBytes)) {
      const std::size_t n = std::min(kBodyPieceBytes, data.size() - at);
      Status st = sink_->write(std::string_view(data).substr(at, n));
      if (!st) {
        reject_with(core_.render(st.error()));
        return false;
      }
      at += n;
    }
    data.erase(0, at);
    // Progress: the stall deadline starts again (a 200 MB body may take longer than
    // body_timeout in all; a client that stops sending is still cut off).
    if (!last)
      set_deadline(core_.options.body_timeout, Deadline::kBody);
    return true;
  }

  void release_body() {
    if (body_reserved_ != 0) {
      core_.inflight_body_bytes.fetch_sub(body_reserved_);
      body_reserved_ = 0;
    }
  }

  Response refusal(int status, Error err) {
    Response r = core_.render(err);
    r.status = status;
    return r;
  }

  // Runs once per request when its head is complete, before any body byte is read. Builds
  // head_ and applies the checks that must not wait for the body. False: answered, closing.
  bool accept_head() {
    auto &msg = parser_->get();
    // RFC 9112 §6.3: only "chunked" frames a request body here. Beast treats any other coding
    // as "no body", which would parse the body as a pipelined request (audit L5).
    if (auto te = msg.find(bhttp::field::transfer_encoding); te != msg.end()) {
      std::string_view v = te->value();
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
      if (!beast::iequals(v, "chunked") || msg.count(bhttp::field::transfer_encoding) != 1) {
        core_.counters.unsupported_encodings.fetch_add(1);
        reject_with(refusal(
            501, Error::unsupported("Transfer-Encoding other than \"chunked\" is not supported")));
        return false;
      }
    }
    // "Upgrade" (h2c, websocket) is ignored: we never answer 101, so the connection stays
    // HTTP/1.1 and the request is served as an ordinary one (RFC 9110 §7.8 allows ignoring it).
    Request req;
    req.method = to_method(msg.method());
    std::string_view target = msg.target();
    req.target.assign(target);
    if (target.find_first_of("?%") == std::string_view::npos) {
      req.path.assign(target);
    } else {
      auto url = boost::urls::parse_origin_form(target);
      if (!url) {
        core_.counters.bad_requests.fetch_add(1);
        reject_with(refusal(400, Error::invalid("Malformed request target")));
        return false;
      }
      // An encoded "/" would reach the handler as a separator the client did not send.
      std::string_view raw_path = url->encoded_path();
      for (std::size_t i = 0; i + 2 < raw_path.size(); ++i) {
        if (raw_path[i] == '%' && raw_path[i + 1] == '2' &&
            (raw_path[i + 2] == 'f' || raw_path[i + 2] == 'F')) {
          core_.counters.bad_requests.fetch_add(1);
          reject_with(refusal(400, Error::invalid("Encoded '/' in the request path")));
          return false;
        }
      }
      req.path = url->path();
      for (auto p : url->params())
        req.query.emplace_back(p.key, p.value);
    }
    if (!normalize_path(req.path)) {
      core_.counters.bad_requests.fetch_add(1);
      reject_with(refusal(400, Error::invalid("'.' or '..' segment in the request path")));
      return false;
    }
    req.headers.reserve(static_cast<std::size_t>(std::distance(msg.begin(), msg.end())));
    std::string_view client_id;
    for (const auto &f : msg) {
      std::string_view name = f.name_string();
      if (f.name() == bhttp::field::unknown && beast::iequals(name, "x-request-id")) {
        client_id = f.value();
      }
      req.headers.push_back({std::string(name), std::string(f.value())});
    }
    if (!client_id.empty())
      req.request_id = sanitize_request_id(client_id);
    if (req.request_id.empty())
      req.request_id = worker_.ids.next();
    req.call_id = next_call_id();
    req.remote_address = remote_;
    req.keep_alive = msg.keep_alive();
    head_ = std::move(req);
    if (parser_->is_done())
      return true; // no body to protect
    const std::size_t streamed =
        core_.options.streamed_body_limit ? core_.options.streamed_body_limit(*head_) : 0;
    body_limit_ = streamed > 0 ? streamed : core_.options.max_body_bytes;
    const auto declared = parser_->content_length();
    if (declared && *declared > body_limit_) {
      reject(bhttp::error::body_limit);
      return false;
    }
    parser_->body_limit(body_limit_);
    if (core_.options.on_headers) {
      std::optional<Response> early;
      try {
        early = core_.options.on_headers(*head_);
      } catch (const std::exception &e) {
        early = refusal(500, Error{ErrorCode::kInternal, e.what(), {}});
      }
      if (early) {
        core_.counters.head_refusals.fetch_add(1);
        reject_with(*early);
        return false;
      }
    }
    if (streamed > 0) {
      std::optional<Response> refused;
      sink_ = core_.options.body_sink ? core_.options.body_sink(*head_, refused) : nullptr;
      if (!sink_) {
        core_.counters.head_refusals.fetch_add(1);
        reject_with(refused ? *refused : refusal(500, Error::internal("No sink for the body")));
        return false;
      }
      parser_->get().body().streaming = true;
    }
    // A streamed body holds at most two pieces at a time (one being handed over).
    const std::size_t want =
        streamed > 0 ? std::min<std::size_t>(declared.value_or(streamed), 2 * kBodyPieceBytes)
        : declared   ? static_cast<std::size_t>(*declared)
                     : core_.options.max_body_bytes;
    if (!core_.reserve_body(want)) {
      core_.counters.body_budget_refusals.fetch_add(1);
      Response r = refusal(
          503,
          Error{ErrorCode::kUnavailable, "Too many request bodies in flight; retry later", {}});
      r.headers.push_back({"Retry-After", "1"});
      reject_with(r);
      return false;
    }
    body_reserved_ = want;
    return true;
  }

  void on_request() {
    auto &msg = parser_->get();
    Request req = std::move(*head_);
    head_.reset();
    req.body = std::move(msg.body().data);
    release_body();
    std::unique_ptr<BodySink> sink = std::move(sink_);
    const bool http10 = msg.version() == 10;
    parser_.reset();

    phase_ = Phase::kHandling;
    clear_deadline();
    keep_alive_ = req.keep_alive && keep_alive_default_ && !core_.draining.load();
    core_.counters.requests_in_flight.fetch_add(1);
    current_ = std::make_shared<Exchange>(weak_from_this(), core_.exchange, req.request_id,
                                          std::move(spare_), keep_alive_, http10,
                                          req.method == Method::kHead);
    current_->set_inline(true);
    Exchange *exchange = current_.get();
    {
      // The handler's reference is a second owner whose release tells the exchange that no
      // answer can come any more.
      std::shared_ptr<ResponseWriter> handle(current_.get(),
                                             [ex = current_](ResponseWriter *) { ex->release(); });
      try {
        if (sink)
          sink->finish(std::move(req), std::move(handle));
        else
          core_.handler(std::move(req), std::move(handle));
      } catch (const std::exception &e) {
        exchange->respond_internal_error(e.what());
      } catch (...) {
        exchange->respond_internal_error("Unknown error in handler");
      }
    }
    // Before the answer is written: a client that reads it then finds the sink's cleanup done.
    sink.reset();
    exchange->set_inline(false);
    if (exchange->streaming()) {
      // An event stream's head is not what its client waits for; its first token is. What the
      // handler queued on this thread (a remote model's upstream request) runs first, the
      // head's write after it.
      asio::post(socket_.get_executor(), [self = shared_from_this()] { self->after_handler(); });
      return;
    }
    after_handler();
  }

  void after_handler() {
    if (phase_ == Phase::kClosed)
      return;
    flush();
    // Watch the socket for a disconnect while an asynchronous handler or a stream runs. A
    // response already being written will notice a dead peer through the write.
    if (phase_ == Phase::kHandling && !writing_final_)
      do_read();
  }

  // --- Writing.

  void write(bool final) {
    writing_ = true;
    writing_final_ = final;
    set_deadline(core_.options.write_timeout, Deadline::kWrite);
    asio::async_write(
        socket_, asio::buffer(out_),
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (phase_ == Phase::kClosed)
      return;
    if (ec) {
      close(Why::kPeer);
      return;
    }
    if (out_.capacity() > kKeepBufferCapacity) {
      std::string().swap(out_);
    } else {
      out_.clear();
    }
    if (writing_final_) {
      writing_final_ = false;
      finish_exchange();
      return;
    }
    clear_deadline();
    flush();
  }

  void finish_exchange() {
    if (current_) {
      current_->finish(spare_);
      if (spare_.capacity() > kKeepBufferCapacity)
        std::string().swap(spare_);
      current_.reset();
      core_.counters.requests_served.fetch_add(1);
      core_.request_finished();
    }
    if (!keep_alive_ || !keep_alive_default_ || core_.draining.load()) {
      linger();
      return;
    }
    phase_ = Phase::kIdle;
    set_deadline(core_.options.idle_timeout, Deadline::kIdle);
    parse();
  }

  // Half-closes and drains what the client still sends, so that it reads our last response
  // instead of a reset caused by unread data.
  void linger() {
    phase_ = Phase::kLinger;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    buffer_.consume(buffer_.size());
    set_deadline(core_.options.linger_timeout, Deadline::kLinger);
    do_read();
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  Core &core_;
  Worker &worker_;
  std::list<std::shared_ptr<Connection>>::iterator self_;
  std::string remote_;

  Phase phase_ = Phase::kIdle;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<SinkableBody>> parser_;
  std::unique_ptr<BodySink> sink_; // the current request's body streams here
  std::size_t body_limit_ = 0;     // the current request's
  std::optional<Request> head_;    // the current request's head, once accept_head() passed
  std::size_t body_reserved_ = 0;  // share of Core::inflight_body_bytes held by this body
  bool reading_ = false;

  std::shared_ptr<Exchange> current_;
  std::string out_;   // bytes of the write in flight
  std::string spare_; // capacity lent to the next exchange
  bool writing_ = false;
  bool writing_final_ = false;
  bool keep_alive_ = true;
  bool keep_alive_default_ = true; // false once the server drains

  Deadline deadline_kind_ = Deadline::kNone;
  SteadyClock::time_point deadline_{};
  SteadyClock::time_point timer_expiry_{};
  bool timer_armed_ = false;
};

} // namespace

struct HttpServer::Impl {
  // Member order matters: core outlives the workers whose connections point into it.
  Core core;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::optional<tcp::acceptor> acceptor;
  tcp::endpoint accept_peer;                      // the pending accept's peer address
  std::optional<asio::steady_timer> accept_timer; // back-off after an accept error
  std::uint16_t port = 0;
  bool running = false;

  // An accepted connection goes to the thread with the fewest, the acceptor's own (worker 0) on
  // a tie, chosen when it arrives: a lightly loaded server keeps each connection on the thread
  // that accepted it (no hand-off, whose wake-up of another thread was in every new
  // connection's first response), and a busy one spreads them as round-robin did.
  Worker &least_loaded() {
    Worker *best = workers[0].get();
    for (auto &w : workers)
      if (w->load.load() < best->load.load())
        best = w.get();
    return *best;
  }

  // On w's thread.
  void start_connection(Worker &w, tcp::socket socket, const tcp::endpoint &peer) {
    auto conn = std::make_shared<Connection>(std::move(socket), core, w, peer);
    w.connections.push_front(conn);
    conn->start(w.connections.begin());
  }

  void do_accept() {
    Worker &home = *workers[0];
    // One accept is pending at a time: accept_peer is written by it and read in its handler.
    acceptor->async_accept(
        home.ioc, accept_peer, [this, &home](beast::error_code ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !acceptor->is_open())
            return;
          if (ec) {
            core.counters.accept_errors.fetch_add(1);
            accept_timer->expires_after(kAcceptBackoff);
            accept_timer->async_wait([this](beast::error_code tec) {
              if (!tec && acceptor->is_open())
                do_accept();
            });
            return;
          }
          core.open_sockets.fetch_add(1);
          beast::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          Worker &w = least_loaded();
          w.load.fetch_add(1);
          if (&w == &home) {
            start_connection(w, std::move(socket), accept_peer); // this thread: here and now
          } else {
            // Re-homed onto the other thread's reactor (the descriptor moves; Linux allows it).
            const auto protocol = acceptor->local_endpoint(ignored).protocol();
            tcp::socket moved(w.ioc);
            beast::error_code ec2;
            const auto fd = socket.release(ec2); // on failure `socket` still owns (and closes) it
            if (!ec2) {
              moved.assign(protocol, fd, ec2);
              if (ec2)
                ::close(fd); // owned by neither
            }
            if (ec2) {
              core.counters.accept_errors.fetch_add(1);
              w.load.fetch_sub(1);
              core.socket_closed();
            } else {
              asio::post(w.ioc, [this, &w, s = std::move(moved), peer = accept_peer]() mutable {
                start_connection(w, std::move(s), peer);
              });
            }
          }
          if (core.open_sockets.load() < core.max_connections) {
            do_accept();
            return;
          }
          // At the cap: stop accepting until a connection closes (Core::socket_closed). New
          // clients wait in the kernel backlog and are served in order once there is room;
          // accepting and closing would spend a descriptor and a reset on each of them.
          core.counters.accept_pauses.fetch_add(1);
          core.accept_paused.store(true);
          // A close between the check and the store above would have missed the flag.
          if (core.open_sockets.load() < core.max_connections && core.accept_paused.exchange(false))
            do_accept();
        });
  }

  // Any thread: the listener and its handlers live on worker 0.
  void resume() {
    asio::post(workers[0]->ioc, [this] {
      if (core.open_sockets.load() < core.max_connections && core.accept_paused.exchange(false) &&
          acceptor && acceptor->is_open())
        do_accept();
    });
  }

  void on_each_connection(void (*fn)(Connection &)) {
    for (auto &w : workers) {
      asio::post(w->ioc, [&w = *w, fn] {
        // Copy: closing a connection erases it from the list.
        std::vector<std::shared_ptr<Connection>> conns(w.connections.begin(), w.connections.end());
        for (auto &c : conns)
          fn(*c);
      });
    }
  }
};

HttpServer::HttpServer(ServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->core.render =
      options.error_renderer ? options.error_renderer : ErrorRenderer(&error_response);
  impl_->core.exchange.max_pending_write_bytes = options.max_pending_write_bytes;
  impl_->core.options = std::move(options);
  impl_->core.handler = std::move(handler);
}

HttpServer::~HttpServer() { shutdown(std::chrono::milliseconds(0)); }

Status HttpServer::start() {
  Impl &m = *impl_;
  const ServerOptions &o = m.core.options;
  if (m.running)
    return Err(ErrorCode::kInternal, "HttpServer already started");
  if (o.io_threads < 1)
    return Error::invalid("io_threads must be at least 1", "io_threads");
  if (!m.core.handler)
    return Error::invalid("HttpServer needs a handler");
  for (int i = 0; i < o.io_threads; ++i)
    m.workers.push_back(std::make_unique<Worker>());
  try {
    asio::io_context &ioc = m.workers[0]->ioc;
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(o.host, std::to_string(o.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service);
    if (results.empty())
      return Error::io("Cannot resolve listen host " + o.host);
    tcp::endpoint ep = results.begin()->endpoint();
    m.acceptor.emplace(ioc);
    m.acceptor->open(ep.protocol());
    m.acceptor->set_option(tcp::acceptor::reuse_address(true));
    m.acceptor->bind(ep);
    m.acceptor->listen(o.backlog);
    m.port = m.acceptor->local_endpoint().port();
  } catch (const boost::system::system_error &e) {
    m.acceptor.reset();
    m.workers.clear();
    return Error::io("Cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " +
                     e.code().message());
  }
  m.core.max_connections = o.max_connections;
  if (m.core.max_connections == 0) {
    m.core.max_connections = kMaxConnectionsDefault;
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      m.core.max_connections = std::min<std::size_t>(
          kMaxConnectionsDefault,
          rl.rlim_cur > kFdReserve * 2 ? rl.rlim_cur - kFdReserve : rl.rlim_cur / 2);
  }
  m.core.resume_accept = [&m] { m.resume(); };
  m.accept_timer.emplace(m.workers[0]->ioc);
  m.do_accept();
  for (auto &w : m.workers) {
    m.guards.push_back(asio::make_work_guard(w->ioc));
    w->thread = std::thread([&w = *w] {
      set_current_loop(w.loop.get());
      w.ioc.run();
      set_current_loop(nullptr);
    });
  }
  m.running = true;
  return Ok();
}

std::uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::stop_accepting() {
  Impl &m = *impl_;
  if (!m.running || m.core.draining.exchange(true))
    return;
  asio::post(m.workers[0]->ioc, [&m] {
    beast::error_code ec;
    m.acceptor->close(ec);
    m.accept_timer->cancel();
  });
  m.on_each_connection([](Connection &c) { c.drain(); });
}

bool HttpServer::shutdown(std::chrono::milliseconds grace) {
  Impl &m = *impl_;
  if (!m.running)
    return true;
  stop_accepting();
  bool drained;
  {
    std::unique_lock lock(m.core.idle_mu);
    drained = m.core.idle_cv.wait_for(
        lock, grace, [&] { return m.core.counters.requests_in_flight.load() == 0; });
  }
  m.on_each_connection([](Connection &c) { c.close(Connection::Why::kShutdown); });
  // Closed connections issue no more I/O and their timers are cancelled, so once the guards
  // are gone each run() returns after the aborted operations' handlers ran.
  m.guards.clear();
  for (auto &w : m.workers)
    w->thread.join();
  m.accept_timer.reset();
  m.acceptor.reset();
  m.core.resume_accept = nullptr;
  m.workers.clear();
  m.running = false;
  return drained;
}

ServerStats HttpServer::stats() const {
  const Counters &c = impl_->core.counters;
  ServerStats s;
  s.active_connections = c.active_connections.load();
  s.connections_accepted = c.connections_accepted.load();
  s.requests_served = c.requests_served.load();
  s.requests_in_flight = c.requests_in_flight.load();
  s.header_timeouts = c.header_timeouts.load();
  s.body_timeouts = c.body_timeouts.load();
  s.idle_timeouts = c.idle_timeouts.load();
  s.write_timeouts = c.write_timeouts.load();
  s.payload_too_large = c.payload_too_large.load();
  s.headers_too_large = c.headers_too_large.load();
  s.bad_requests = c.bad_requests.load();
  s.client_disconnects = c.client_disconnects.load();
  s.slow_client_overflows = c.slow_client_overflows.load();
  s.abandoned_responses = c.abandoned_responses.load();
  s.accept_pauses = c.accept_pauses.load();
  s.accept_errors = c.accept_errors.load();
  s.body_budget_refusals = c.body_budget_refusals.load();
  s.head_refusals = c.head_refusals.load();
  s.unsupported_encodings = c.unsupported_encodings.load();
  return s;
}

} // namespace gantry::http
