// Beast implementation of the asynchronous upstream client. Each connection lives on one executor
// of the loop's io_context for its whole life: its own strand when the loop runs several threads,
// the io_context's plain executor when one thread runs it (a server I/O thread: a strand there
// only added a lock and a queue to every step). A call runs its steps as handlers on the executor
// of the connection it holds, and a cancel from another thread is a handler posted to it.
#include "http/async_upstream.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "http/client.h"
#include "http/io_loop_impl.h"
#include "http/transport.h"
#include "http/wire.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Deadline = transport::Deadline;

// An outbound request written once, by hand (Beast's serializer cost about 19,000 instructions
// per call): request line, Host, User-Agent, the caller's headers (a later one replaces an
// earlier one of the same name, as Beast's fields.set did), Content-Length, body. Framing
// headers are Gantry's alone, and a name or value with CR/LF is dropped, never sent.
std::string serialize_request(Method method, std::string_view target, std::string_view host,
                              const Headers &headers, std::string_view body) {
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  fields.reserve(2 + headers.size());
  fields.emplace_back("Host", host);
  fields.emplace_back("User-Agent", "gantry");
  for (const Header &h : headers) {
    if (h.name.empty() || beast::iequals(h.name, "Content-Length") ||
        beast::iequals(h.name, "Transfer-Encoding") || !detail::safe_header_text(h.name) ||
        !detail::safe_header_text(h.value))
      continue;
    auto same = std::find_if(fields.begin(), fields.end(),
                             [&](const auto &f) { return beast::iequals(f.first, h.name); });
    if (same != fields.end())
      same->second = h.value;
    else
      fields.emplace_back(h.name, h.value);
  }
  std::string w;
  w.reserve(128 + target.size() + body.size() + 64 * fields.size());
  w += to_string(method);
  w += ' ';
  w += target;
  w += " HTTP/1.1\r\n";
  for (const auto &[name, value] : fields) {
    w += name;
    w += ": ";
    w += value;
    w += "\r\n";
  }
  if (!body.empty() || method == Method::kPost || method == Method::kPut ||
      method == Method::kPatch) {
    w += "Content-Length: ";
    detail::append_number(w, body.size());
    w += "\r\n";
  }
  w += "\r\n";
  w += body;
  return w;
}

namespace {

constexpr std::size_t kPiece = 16 * 1024;

// One connection, bound to its executor (of one io_context) for life.
struct Conn {
  // The buffer starts with room for a whole small response: an empty flat_buffer makes Beast
  // read 512 bytes at a time, one more recvmsg for nearly every response head and event batch.
  Conn(asio::io_context &ioc, bool one_thread)
      : ioc(&ioc), ex(one_thread ? asio::any_io_executor(ioc.get_executor())
                                 : asio::any_io_executor(asio::make_strand(ioc))) {
    buffer.reserve(8192);
  }
  ~Conn() { close(); }
  asio::io_context *ioc;             // where it lives: it goes back to that io_context's idle set
  asio::any_io_executor ex;          // a strand unless one thread runs ioc
  std::shared_ptr<ssl::context> ctx; // declared before the streams: outlives them
  std::optional<beast::tcp_stream> tcp;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream &lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }
  bool open() const { return tcp.has_value() || tls.has_value(); }
  template <typename F> void with(F &&f) {
    if (tls)
      f(*tls);
    else
      f(*tcp);
  }
  void close() {
    if (open()) {
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      lowest().socket().close(ec);
    }
    tls.reset();
    tcp.reset();
  }
};

using transport::Phase;
using transport::phase;

Error failed(const Phase &ph, bool cancelled, std::string_view cls, const std::string &what,
             beast::error_code ec) {
  return transport::step_failed(ph, cancelled, cls, what, ec);
}

} // namespace

// Kept-alive connections are kept per io_context: a call started on an HTTP server I/O thread
// (IoLoop::current()) runs on that thread's io_context and takes a connection living there, so
// no step of it hops threads. Each io_context's idle set is bounded by max_idle.
struct AsyncUpstreamClient::Pool : std::enable_shared_from_this<AsyncUpstreamClient::Pool> {
  Pool(asio::io_context &ioc, bool one_thread, UpstreamOptions o, const Clock &c)
      : ioc(ioc), one_thread(one_thread), options(std::move(o)), clock(c) {}
  asio::io_context &ioc; // the client's own loop's
  const bool one_thread; // only one thread runs it
  const UpstreamOptions options;
  const Clock &clock;
  std::mutex mu;
  struct Idle {
    asio::io_context *ioc;
    std::vector<std::pair<std::unique_ptr<Conn>, Deadline>> conns; // bounded by max_idle
  };
  // One per io_context calls ran on: the client's own and the server's I/O threads (a few).
  std::vector<Idle> idle;
  std::optional<std::vector<tcp::endpoint>> resolved; // the first lookup's answer
  int opened = 0;
  // read_some()'s buffers, handed from finished calls to new ones: a fresh 16 KiB allocation per
  // call (zero-filled, and large enough to make glibc consolidate its fast bins) was a visible
  // part of a proxied request's CPU. Bounded: beyond kMaxSparePieces they are freed.
  static constexpr std::size_t kMaxSparePieces = 64;
  std::vector<std::unique_ptr<char[]>> spare_pieces;

  std::unique_ptr<char[]> take_piece() {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!spare_pieces.empty()) {
        auto p = std::move(spare_pieces.back());
        spare_pieces.pop_back();
        return p;
      }
    }
    return std::unique_ptr<char[]>(new char[kPiece]); // not zero-filled: the parser writes it
  }
  void give_piece(std::unique_ptr<char[]> p) {
    std::lock_guard<std::mutex> lk(mu);
    if (spare_pieces.size() < kMaxSparePieces)
      spare_pieces.push_back(std::move(p));
  }

  Idle *idle_of(asio::io_context *on) {
    for (auto &i : idle)
      if (i.ioc == on)
        return &i;
    return nullptr;
  }
  std::unique_ptr<Conn> take(asio::io_context *on) {
    std::vector<std::unique_ptr<Conn>> expired; // closed outside the lock
    std::lock_guard<std::mutex> lk(mu);
    Idle *set = idle_of(on);
    if (!set)
      return nullptr;
    const auto now = clock.now();
    while (!set->conns.empty()) {
      auto [conn, since] = std::move(set->conns.back());
      set->conns.pop_back();
      if (now - since > options.keep_idle)
        expired.push_back(std::move(conn));
      else
        return std::move(conn);
    }
    return nullptr;
  }
  void put_back(std::unique_ptr<Conn> conn, IoLoop *loop) {
    std::lock_guard<std::mutex> lk(mu);
    Idle *set = idle_of(conn->ioc);
    if (!set) {
      if (loop && loop->impl().ioc == conn->ioc && conn->ioc != &ioc) {
        // Another's io_context (a server I/O thread's): its connections are dropped before
        // it goes.
        std::weak_ptr<Pool> weak = weak_from_this();
        asio::io_context *gone = conn->ioc;
        loop->at_close(weak, [weak, gone] {
          if (auto p = weak.lock())
            p->drop(gone);
        });
      } else if (conn->ioc != &ioc) {
        return; // nobody would close it in time: not kept
      }
      idle.push_back({conn->ioc, {}});
      set = &idle.back();
    }
    if (static_cast<int>(set->conns.size()) < options.max_idle)
      set->conns.emplace_back(std::move(conn), clock.now());
  }
  void drop(asio::io_context *gone) {
    std::vector<Idle> dropped; // closed outside the lock
    std::lock_guard<std::mutex> lk(mu);
    for (auto it = idle.begin(); it != idle.end();)
      if (it->ioc == gone) {
        dropped.push_back(std::move(*it));
        it = idle.erase(it);
      } else {
        ++it;
      }
  }
};

struct AsyncUpstreamCall::Impl {
  ~Impl() {
    if (piece && pool)
      pool->give_piece(std::move(piece));
  }
  std::shared_ptr<AsyncUpstreamClient::Pool> pool;
  asio::io_context *ioc = nullptr; // where the call runs (its connections live there)
  IoLoop *loop = nullptr;          // the loop standing for it, when not the client's own
  std::string wire;                // the whole request as sent
  Deadline deadline;
  std::mutex mu;              // guards `conn` against cancel() from other threads
  std::unique_ptr<Conn> conn; // touched on its executor only
  bool fresh = false;         // `conn` was opened for this call
  int tries = 0;              // a stale kept-alive connection costs one more
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  beast::error_code write_ec;
  Phase ph{};
  std::unique_ptr<char[]> piece; // read_some()'s buffer of kPiece bytes, from the pool
  std::string body;              // read_all()'s accumulation
  bool done = false;             // the body was read to its end
  bool failed = false;
  HeadDone head_done;

  // Whether only one thread runs `ioc` (then connections made there need no strand).
  bool one_thread() const { return loop ? loop->impl().one_thread : pool->one_thread; }
};

// The steps of a call, each a handler on the executor of the call's connection.
struct Steps {
  using Call = AsyncUpstreamCall;

  static void begin(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (c->cancelled())
      return fail_head(c, transport::classed(kCancelledCall, "cancelled"));
    if (!m.fresh)
      return write(c);
    const auto &o = m.pool->options;
    std::vector<tcp::endpoint> to;
    {
      std::lock_guard<std::mutex> lk(m.pool->mu);
      if (m.pool->resolved)
        to = *m.pool->resolved;
    }
    if (to.empty()) {
      // Backends are configured by the operator: their names are trusted. Looked up once
      // (a name's addresses rarely move; a restart picks up a change).
      tcp::resolver resolver(*m.ioc);
      beast::error_code ec;
      auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
      if (ec)
        return fail_head(c, transport::classed(kConnectFailed,
                                               "Cannot resolve " + o.host + ": " + ec.message()));
      for (const auto &r : results)
        to.push_back(r.endpoint());
      std::lock_guard<std::mutex> lk(m.pool->mu);
      m.pool->resolved = to;
    }
    m.ph = phase(o.connect_timeout, kConnectTimeout, m.deadline, m.pool->clock);
    Conn &conn = *m.conn;
    conn.tcp.emplace(conn.ex);
    conn.tcp->expires_after(m.ph.limit);
    conn.tcp->async_connect(to, [c](beast::error_code ec, const tcp::endpoint &) {
      auto &m = *c->impl_;
      if (ec)
        return fail_head(
            c, failed(m.ph, c->cancelled(), kConnectFailed, "Cannot connect to " + where(m), ec));
      m.conn->tcp->socket().set_option(tcp::no_delay(true), ec);
      if (!m.pool->options.tls) {
        count_open(m);
        return write(c);
      }
      handshake(c);
    });
  }

  static std::string where(const Call::Impl &m) {
    return m.pool->options.host + ":" + std::to_string(m.pool->options.port);
  }
  static void count_open(Call::Impl &m) {
    std::lock_guard<std::mutex> lk(m.pool->mu);
    ++m.pool->opened;
  }

  static void handshake(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (c->cancelled())
      return fail_head(c, transport::classed(kCancelledCall, "cancelled"));
    Conn &conn = *m.conn;
    const auto &o = m.pool->options;
    auto ctx = transport::tls_context(o.tls_ca_file);
    if (!ctx)
      return fail_head(c, ctx.take_error());
    conn.ctx = *ctx;
    conn.tls.emplace(std::move(*conn.tcp), *conn.ctx);
    conn.tcp.reset();
    transport::prepare_tls(*conn.tls, o.host);
    conn.lowest().expires_after(m.ph.limit);
    conn.tls->async_handshake(ssl::stream_base::client, [c](beast::error_code ec) {
      auto &m = *c->impl_;
      if (ec)
        return fail_head(
            c, failed(m.ph, c->cancelled(), kTlsFailed, "TLS handshake with " + where(m), ec));
      count_open(m);
      write(c);
    });
  }

  static void write(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (c->cancelled()) // a cancel between two steps found nothing pending to abort
      return fail_head(c, transport::classed(kCancelledCall, "cancelled"));
    m.ph = phase(m.pool->options.first_byte_timeout, kFirstByteTimeout, m.deadline, m.pool->clock);
    m.conn->lowest().expires_after(m.ph.limit);
    m.conn->with([&](auto &s) {
      asio::async_write(s, asio::buffer(m.wire), [c](beast::error_code ec, std::size_t) {
        auto &m = *c->impl_;
        if (ec && !m.fresh && !c->cancelled())
          return retry_fresh(c); // a kept-alive connection the server had closed
        m.write_ec = ec;
        read_head(c);
      });
    });
  }

  static void read_head(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (c->cancelled())
      return fail_head(c, transport::classed(kCancelledCall, "cancelled"));
    m.parser.emplace();
    m.parser->body_limit(std::numeric_limits<std::uint64_t>::max()); // read piece by piece
    m.parser->header_limit(64 * 1024);
    m.ph = phase(m.pool->options.first_byte_timeout, kFirstByteTimeout, m.deadline, m.pool->clock);
    m.conn->lowest().expires_after(m.ph.limit);
    m.conn->with([&](auto &s) {
      bhttp::async_read_header(
          s, m.conn->buffer, *m.parser, [c](beast::error_code ec, std::size_t) {
            auto &m = *c->impl_;
            if (ec) {
              const bool stale = !m.fresh && !m.parser->got_some() && ec != beast::error::timeout &&
                                 !c->cancelled();
              if (stale)
                return retry_fresh(c);
              return fail_head(c, m.write_ec ? failed(m.ph, c->cancelled(), kConnectFailed,
                                                      "Writing request", m.write_ec)
                                             : failed(m.ph, c->cancelled(), kUpstreamReset,
                                                      "Reading response head", ec));
            }
            if (m.parser->get().result_int() / 100 == 1)
              return read_head(c); // 1xx interim responses precede the real one
            c->status_ = static_cast<int>(m.parser->get().result_int());
            c->headers_.clear();
            for (const auto &f : m.parser->get().base())
              c->headers_.push_back({std::string(f.name_string()), std::string(f.value())});
            m.done = m.parser->is_done();
            release_if_done(c);
            auto done = std::move(m.head_done);
            done(Ok());
          });
    });
  }

  // The response was read to its end: the connection serves the next call at once (not when
  // the last reference to this one drops).
  static void release_if_done(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (!m.done || m.failed || !m.parser->get().keep_alive() || c->cancelled())
      return;
    std::unique_ptr<Conn> conn;
    {
      std::lock_guard<std::mutex> lk(m.mu);
      conn = std::move(m.conn);
    }
    m.pool->put_back(std::move(conn), m.loop);
  }

  static void retry_fresh(const std::shared_ptr<Call> &c) {
    auto &m = *c->impl_;
    if (++m.tries >= 2)
      return fail_head(c, transport::classed(kConnectFailed, "Connection closed by upstream"));
    auto fresh = std::make_unique<Conn>(*m.ioc, m.one_thread());
    std::unique_ptr<Conn> old;
    {
      std::lock_guard<std::mutex> lk(m.mu);
      old = std::move(m.conn);
      m.conn = std::move(fresh);
    }
    m.fresh = true;
    old.reset();
    asio::post(m.conn->ex, [c] { begin(c); });
  }

  static void fail_head(const std::shared_ptr<Call> &c, Error e) {
    auto &m = *c->impl_;
    m.failed = true;
    auto done = std::move(m.head_done);
    if (done)
      done(Err(std::move(e)));
  }

  static void read_some(const std::shared_ptr<Call> &c, Call::PieceDone done) {
    auto &m = *c->impl_;
    // A cancel that arrived while no step was pending found nothing to abort: checked here, so
    // a cancel ends the call at the next piece at the latest.
    if (!m.done && !m.failed && c->cancelled())
      m.failed = true;
    if (m.done || m.failed || !m.conn) {
      Result<std::optional<std::string_view>> r =
          m.done ? Result<std::optional<std::string_view>>(std::optional<std::string_view>())
                 : Err(transport::classed(c->cancelled() ? kCancelledCall : kUpstreamReset,
                                          c->cancelled() ? "Reading upstream response: cancelled"
                                                         : "upstream response already failed"));
      asio::post(m.conn ? m.conn->ex : asio::any_io_executor(m.ioc->get_executor()),
                 [c, done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
      return;
    }
    if (!m.piece)
      m.piece = m.pool->take_piece();
    m.parser->get().body().data = m.piece.get();
    m.parser->get().body().size = kPiece;
    m.ph = phase(m.pool->options.idle_timeout, kIdleTimeout, m.deadline, m.pool->clock);
    m.conn->lowest().expires_after(m.ph.limit);
    m.conn->with([&](auto &s) {
      bhttp::async_read_some(
          s, m.conn->buffer, *m.parser,
          [c, done = std::move(done)](beast::error_code ec, std::size_t) mutable {
            auto &m = *c->impl_;
            if (ec == bhttp::error::need_buffer)
              ec = {};
            if (ec == bhttp::error::end_of_stream && m.parser->is_done())
              ec = {};
            if (ec) {
              m.failed = true;
              return done(Err(
                  failed(m.ph, c->cancelled(), kUpstreamReset, "Reading upstream response", ec)));
            }
            const std::size_t n = kPiece - m.parser->get().body().size;
            if (m.parser->is_done()) {
              m.done = true;
              release_if_done(c);
            }
            if (n > 0)
              return done(std::optional<std::string_view>(std::string_view(m.piece.get(), n)));
            if (m.done)
              return done(std::optional<std::string_view>());
            read_some(c, std::move(done)); // a chunk header only: read on
          });
    });
  }

  // The body bytes already buffered with the head (a small response arrives whole with it) are
  // parsed here, without an asynchronous read_some whose completion would be posted: that was
  // two more trips through the io_context per proxied request. Returns whether `done` was
  // called: the body ended, failed, or outgrew max_bytes.
  static bool drain_buffered(const std::shared_ptr<Call> &c, std::size_t max_bytes,
                             Call::BodyDone &done) {
    auto &m = *c->impl_;
    if (!m.piece)
      m.piece = m.pool->take_piece();
    while (!m.done && !m.failed && m.conn && m.conn->buffer.size() > 0 && !c->cancelled()) {
      m.parser->get().body().data = m.piece.get();
      m.parser->get().body().size = kPiece;
      beast::error_code ec;
      const std::size_t used = m.parser->put(m.conn->buffer.data(), ec);
      m.conn->buffer.consume(used);
      if (ec == bhttp::error::need_buffer || ec == bhttp::error::need_more)
        ec = {};
      if (ec) {
        m.failed = true;
        done(Err(transport::classed(kUpstreamReset, "Reading upstream response: " + ec.message())));
        return true;
      }
      const std::size_t n = kPiece - m.parser->get().body().size;
      if (m.body.size() + n > max_bytes) {
        m.failed = true;
        done(Err(transport::classed(kResponseTooLarge, "upstream response larger than " +
                                                           std::to_string(max_bytes) + " bytes")));
        return true;
      }
      m.body.append(m.piece.get(), n);
      if (m.parser->is_done()) {
        m.done = true;
        release_if_done(c);
      }
      if (used == 0 && n == 0)
        break; // an incomplete chunk header or line: the socket has the rest
    }
    if (!m.done)
      return false;
    done(std::move(m.body));
    return true;
  }

  static void read_all(const std::shared_ptr<Call> &c, std::size_t max_bytes, Call::BodyDone done) {
    if (drain_buffered(c, max_bytes, done))
      return;
    read_some(c, [c, max_bytes,
                  done = std::move(done)](Result<std::optional<std::string_view>> piece) mutable {
      auto &m = *c->impl_;
      if (!piece)
        return done(Err(piece.take_error()));
      if (!*piece)
        return done(std::move(m.body));
      if (m.body.size() + (*piece)->size() > max_bytes) {
        m.failed = true;
        return done(
            Err(transport::classed(kResponseTooLarge, "upstream response larger than " +
                                                          std::to_string(max_bytes) + " bytes")));
      }
      m.body.append(**piece);
      read_all(c, max_bytes, std::move(done));
    });
  }
};

// --- AsyncUpstreamCall

AsyncUpstreamCall::AsyncUpstreamCall(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AsyncUpstreamCall::~AsyncUpstreamCall() {
  Impl &m = *impl_;
  const bool reusable =
      m.conn && m.done && !m.failed && m.parser && m.parser->get().keep_alive() && !cancelled();
  if (reusable)
    m.pool->put_back(std::move(m.conn), m.loop);
}

void AsyncUpstreamCall::read_some(PieceDone done) {
  Steps::read_some(shared_from_this(), std::move(done));
}

void AsyncUpstreamCall::read_all(std::size_t max_bytes, BodyDone done) {
  impl_->body.clear();
  Steps::read_all(shared_from_this(), max_bytes, std::move(done));
}

void AsyncUpstreamCall::cancel() {
  if (cancelled_.exchange(true))
    return;
  std::lock_guard<std::mutex> lk(impl_->mu);
  Conn *conn = impl_->conn.get();
  if (!conn)
    return;
  asio::post(conn->ex, [self = shared_from_this(), conn] {
    std::lock_guard<std::mutex> lk(self->impl_->mu);
    if (self->impl_->conn.get() == conn && conn->open())
      conn->lowest().cancel();
  });
}

// --- AsyncUpstreamClient

AsyncUpstreamClient::AsyncUpstreamClient(IoLoop &loop, UpstreamOptions options, const Clock &clock)
    : pool_(std::make_shared<Pool>(*loop.impl().ioc, loop.impl().one_thread, std::move(options),
                                   clock)) {}

AsyncUpstreamClient::~AsyncUpstreamClient() = default;

const UpstreamOptions &AsyncUpstreamClient::options() const { return pool_->options; }

int AsyncUpstreamClient::connections_opened() const {
  std::lock_guard<std::mutex> lk(pool_->mu);
  return pool_->opened;
}

int AsyncUpstreamClient::idle_connections() const {
  std::lock_guard<std::mutex> lk(pool_->mu);
  int n = 0;
  for (const auto &i : pool_->idle)
    n += static_cast<int>(i.conns.size());
  return n;
}

std::shared_ptr<AsyncUpstreamCall> AsyncUpstreamClient::call(Method method, std::string_view target,
                                                             std::string body,
                                                             const Headers &headers, IoLoop *on) {
  auto m = std::make_unique<AsyncUpstreamCall::Impl>();
  const auto &o = pool_->options;
  m->pool = pool_;
  m->ioc = on ? on->impl().ioc : &pool_->ioc;
  m->loop = on;
  m->wire =
      serialize_request(method, target, transport::authority(o.host, o.port, o.tls), headers, body);
  return std::make_shared<AsyncUpstreamCall>(std::move(m));
}

void AsyncUpstreamCall::start(HeadDone done) {
  Impl &m = *impl_;
  const auto &o = m.pool->options;
  m.deadline =
      o.total_timeout.count() > 0 ? m.pool->clock.now() + o.total_timeout : Deadline::max();
  m.head_done = std::move(done);
  auto conn = m.pool->take(m.ioc);
  m.fresh = !conn;
  if (m.fresh)
    conn = std::make_unique<Conn>(*m.ioc, m.one_thread());
  auto ex = conn->ex;
  {
    std::lock_guard<std::mutex> lk(m.mu);
    m.conn = std::move(conn);
  }
  // On a server I/O thread's io_context (one thread: nothing else runs beside this) the first
  // step starts here rather than after one more trip through the queue.
  if (m.ioc != &m.pool->ioc && m.ioc->get_executor().running_in_this_thread())
    return Steps::begin(shared_from_this());
  asio::post(ex, [self = shared_from_this()] { Steps::begin(self); });
}

} // namespace gantry::http
