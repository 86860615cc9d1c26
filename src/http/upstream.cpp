// Beast implementation of the upstream client. Like client.cpp, each blocking call runs
// asynchronous Beast operations on the connection's own io_context (only those honour
// timeouts), so an idle connection can move between threads through the pool, and a cancel
// from another thread is a handler posted to that io_context.
#include "http/upstream.h"

#include <algorithm>
#include <limits>
#include <map>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "http/client.h"
#include "http/transport.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

struct UpstreamConnection : transport::Transport {};

struct UpstreamCall::Parser {
  bhttp::response_parser<bhttp::buffer_body> p;
};

// --- CancelSignal

void CancelSignal::cancel() {
  std::lock_guard<std::mutex> lk(mu_);
  if (cancelled_)
    return;
  cancelled_ = true;
  if (abort_)
    abort_();
}

bool CancelSignal::cancelled() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cancelled_;
}

void CancelSignal::attach(std::function<void()> abort) {
  std::lock_guard<std::mutex> lk(mu_);
  abort_ = std::move(abort);
  if (cancelled_)
    abort_();
}

void CancelSignal::detach() {
  std::lock_guard<std::mutex> lk(mu_);
  abort_ = nullptr;
}

namespace {

constexpr std::size_t kPiece = 16 * 1024;

using transport::classed;
using transport::run;
using transport::to_verb;

using Deadline = transport::Deadline;
using transport::Phase;
using transport::phase;

Error failed(const Phase &ph, const CancelSignal *cancel, std::string_view cls, std::string what,
             beast::error_code ec) {
  return transport::step_failed(ph, cancel && cancel->cancelled(), cls, what, ec);
}

Status connect(UpstreamConnection &c, const UpstreamOptions &o, const Phase &ph,
               const CancelSignal *cancel) {
  // Backends are configured by the operator: their names are trusted and resolved here.
  GANTRY_ASSIGN_OR_RETURN(auto to, transport::endpoints(c, o.host, o.port));
  const transport::ConnectSpec spec{o.host, o.port, o.tls, o.tls_ca_file, ph.limit};
  return transport::connect(c, to, spec,
                            [&](std::string_view cls, std::string what, beast::error_code ec) {
                              return failed(ph, cancel, cls, std::move(what), ec);
                            });
}

template <typename Fields> Headers to_headers(const Fields &fields) {
  Headers out;
  for (const auto &f : fields)
    out.push_back({std::string(f.name_string()), std::string(f.value())});
  return out;
}

} // namespace

// --- UpstreamCall

UpstreamCall::UpstreamCall(UpstreamClient &client, std::unique_ptr<UpstreamConnection> conn,
                           std::unique_ptr<Parser> parser, std::shared_ptr<CancelSignal> cancel,
                           Deadline deadline)
    : client_(client), conn_(std::move(conn)), parser_(std::move(parser)),
      cancel_(std::move(cancel)), deadline_(deadline) {
  status_ = static_cast<int>(parser_->p.get().result_int());
  headers_ = to_headers(parser_->p.get().base());
  done_ = parser_->p.is_done();
}

UpstreamCall::~UpstreamCall() {
  if (cancel_)
    cancel_->detach();
  const bool reusable = conn_ && done_ && !failed_ && parser_->p.get().keep_alive() &&
                        !(cancel_ && cancel_->cancelled());
  if (reusable)
    client_.put_back(std::move(conn_));
}

Result<std::optional<std::string>> UpstreamCall::read_some() {
  if (done_)
    return std::optional<std::string>();
  if (failed_ || !conn_)
    return Err(classed(kUpstreamReset, "upstream response already failed"));
  UpstreamConnection &c = *conn_;
  auto &p = parser_->p;
  std::string out(kPiece, '\0');
  while (true) {
    // A cancel that arrived between two reads posted its abort while no operation was pending;
    // a read that then completes from buffered bytes would not see it. Checked on every read, so
    // a cancel ends the call at the next piece at the latest.
    if (cancel_ && cancel_->cancelled()) {
      failed_ = true;
      return Err(classed(kCancelledCall, "Reading upstream response: cancelled"));
    }
    p.get().body().data = out.data();
    p.get().body().size = out.size();
    const Phase ph = phase(client_.options_.idle_timeout, kIdleTimeout, deadline_, client_.clock_);
    c.lowest().expires_after(ph.limit);
    beast::error_code ec;
    try {
      ec = c.with([&](auto &s) {
        return run(
            c, [&](auto handler) { bhttp::async_read_some(s, c.buffer, p, std::move(handler)); });
      });
    } catch (const std::exception &e) {
      failed_ = true;
      return Err(classed(kUpstreamReset, std::string("upstream read: ") + e.what()));
    }
    if (ec == bhttp::error::need_buffer)
      ec = {};
    if (ec == bhttp::error::end_of_stream && p.is_done())
      ec = {};
    if (ec) {
      failed_ = true;
      return Err(failed(ph, cancel_.get(), kUpstreamReset, "Reading upstream response", ec));
    }
    const std::size_t n = out.size() - p.get().body().size;
    if (p.is_done())
      done_ = true;
    if (n > 0) {
      out.resize(n);
      return std::optional<std::string>(std::move(out));
    }
    if (done_)
      return std::optional<std::string>();
  }
}

Result<std::string> UpstreamCall::read_all(std::size_t max_bytes) {
  std::string body;
  while (true) {
    GANTRY_ASSIGN_OR_RETURN(auto piece, read_some());
    if (!piece)
      return body;
    if (body.size() + piece->size() > max_bytes) {
      failed_ = true;
      return Err(classed(kResponseTooLarge,
                         "upstream response larger than " + std::to_string(max_bytes) + " bytes"));
    }
    body += *piece;
  }
}

// --- UpstreamClient

UpstreamClient::UpstreamClient(UpstreamOptions options, const Clock &clock)
    : options_(std::move(options)), clock_(clock) {}

UpstreamClient::~UpstreamClient() = default;

int UpstreamClient::connections_opened() const {
  std::lock_guard<std::mutex> lk(mu_);
  return opened_;
}

int UpstreamClient::idle_connections() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(idle_.size());
}

std::unique_ptr<UpstreamConnection> UpstreamClient::take() {
  std::vector<std::unique_ptr<UpstreamConnection>> expired; // closed outside the lock
  std::unique_ptr<UpstreamConnection> out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const auto now = clock_.now();
    while (!idle_.empty() && !out) {
      auto [conn, since] = std::move(idle_.back());
      idle_.pop_back();
      if (now - since > options_.keep_idle)
        expired.push_back(std::move(conn));
      else
        out = std::move(conn);
    }
  }
  return out;
}

void UpstreamClient::put_back(std::unique_ptr<UpstreamConnection> conn) {
  std::lock_guard<std::mutex> lk(mu_);
  if (static_cast<int>(idle_.size()) >= options_.max_idle)
    return; // closed by the destructor
  idle_.emplace_back(std::move(conn), clock_.now());
}

Result<std::unique_ptr<UpstreamCall>> UpstreamClient::start(Method method, std::string_view target,
                                                            std::string body, Headers headers,
                                                            std::shared_ptr<CancelSignal> cancel) {
  const Deadline deadline =
      options_.total_timeout.count() > 0 ? clock_.now() + options_.total_timeout : Deadline::max();
  bhttp::request<bhttp::string_body> req{to_verb(method), target, 11};
  req.set(bhttp::field::host, transport::authority(options_.host, options_.port, options_.tls));
  req.set(bhttp::field::user_agent, "gantry");
  for (Header &h : headers)
    req.set(h.name, h.value);
  req.body() = std::move(body);
  req.prepare_payload();

  for (int attempt = 0; attempt < 2; ++attempt) {
    if (cancel && cancel->cancelled())
      return Err(classed(kCancelledCall, "cancelled"));
    std::unique_ptr<UpstreamConnection> conn = attempt == 0 ? take() : nullptr;
    const bool fresh = !conn;
    if (fresh)
      conn = std::make_unique<UpstreamConnection>();
    UpstreamConnection *raw = conn.get();
    if (cancel) // a cancel aborts whatever operation is pending on this connection's thread
      cancel->attach([raw] {
        asio::post(raw->ioc, [raw] {
          if (raw->open())
            raw->lowest().cancel();
        });
      });
    struct Detach {
      CancelSignal *c;
      ~Detach() {
        if (c)
          c->detach();
      }
    };
    auto parser = std::make_unique<UpstreamCall::Parser>();
    try {
      Detach detach_on_fail{cancel.get()};
      if (fresh) {
        const Phase ph = phase(options_.connect_timeout, kConnectTimeout, deadline, clock_);
        GANTRY_TRY(connect(*conn, options_, ph, cancel.get()));
        std::lock_guard<std::mutex> lk(mu_);
        ++opened_;
      }
      const Phase wph = phase(options_.first_byte_timeout, kFirstByteTimeout, deadline, clock_);
      conn->lowest().expires_after(wph.limit);
      const beast::error_code write_ec = conn->with([&](auto &s) {
        return run(*conn, [&](auto handler) { bhttp::async_write(s, req, std::move(handler)); });
      });
      if (write_ec && !fresh && !(cancel && cancel->cancelled()))
        continue; // a kept-alive connection the server had closed: once more on a fresh one
      beast::error_code ec;
      Phase ph = phase(options_.first_byte_timeout, kFirstByteTimeout, deadline, clock_);
      while (true) { // 1xx interim responses precede the real one
        parser = std::make_unique<UpstreamCall::Parser>();
        parser->p.body_limit(std::numeric_limits<std::uint64_t>::max()); // read piece by piece
        parser->p.header_limit(64 * 1024);
        ph = phase(options_.first_byte_timeout, kFirstByteTimeout, deadline, clock_);
        conn->lowest().expires_after(ph.limit);
        ec = conn->with([&](auto &s) {
          return run(*conn, [&](auto handler) {
            bhttp::async_read_header(s, conn->buffer, parser->p, std::move(handler));
          });
        });
        if (ec || parser->p.get().result_int() / 100 != 1)
          break;
      }
      if (ec) {
        const bool stale = !fresh && !parser->p.got_some() && ec != beast::error::timeout &&
                           !(cancel && cancel->cancelled());
        if (stale)
          continue; // a kept-alive connection the server had closed: once more on a fresh one
        return Err(write_ec
                       ? failed(ph, cancel.get(), kConnectFailed, "Writing request", write_ec)
                       : failed(ph, cancel.get(), kUpstreamReset, "Reading response head", ec));
      }
      detach_on_fail.c = nullptr; // the call keeps the cancel attached
      return std::unique_ptr<UpstreamCall>(
          new UpstreamCall(*this, std::move(conn), std::move(parser), cancel, deadline));
    } catch (const std::exception &e) {
      return Err(classed(kConnectFailed, std::string("upstream client: ") + e.what()));
    }
  }
  return Err(classed(kConnectFailed, "Connection closed by upstream"));
}

} // namespace gantry::http
