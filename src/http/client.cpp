// Beast implementation of the outbound client. Each blocking call runs asynchronous Beast
// operations on the connection's own io_context, because only the asynchronous tcp_stream
// operations honour timeouts; a connection can therefore move between threads (the pool) while
// it is idle.
#include "http/client.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include "http/transport.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using BeastRequest = bhttp::request<bhttp::string_body>;

// A transport plus the total-deadline timer HttpClient arms around each request.
struct Connection : transport::Transport {
  asio::steady_timer total{ioc};
  uint64_t total_generation = 0; // a stale total-deadline handler must not cancel a later request
  bool total_expired = false;
};

namespace {

constexpr size_t kReadChunk = 16 * 1024;

using transport::classed;
using transport::run;
using transport::to_verb;

// Arms the total deadline of one request on `c`: when it fires, the pending operation is
// cancelled and reported as a timeout.
class TotalDeadline {
public:
  TotalDeadline(Connection &c, std::chrono::milliseconds total) : c_(c) {
    c.total_expired = false;
    const uint64_t gen = ++c.total_generation;
    if (total.count() <= 0)
      return;
    c.total.expires_after(total);
    c.total.async_wait([&c, gen](beast::error_code ec) {
      if (ec || gen != c.total_generation)
        return;
      c.total_expired = true;
      if (c.open())
        c.lowest().cancel();
    });
  }
  ~TotalDeadline() {
    ++c_.total_generation;
    c_.total.cancel();
  }
  TotalDeadline(const TotalDeadline &) = delete;
  TotalDeadline &operator=(const TotalDeadline &) = delete;

private:
  Connection &c_;
};

std::chrono::milliseconds phase(const ClientOptions &o, std::chrono::milliseconds p) {
  return p.count() > 0 ? p : o.timeout;
}

Error fail(const Connection &c, std::string_view cls, std::string what, beast::error_code ec) {
  if (ec == beast::error::timeout || c.total_expired)
    return classed(kTimeout, what + ": timed out");
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category() &&
      ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message)
    return classed(kBadResponse, what + ": " + ec.message());
  return classed(cls, what + ": " + ec.message());
}

Status open(Connection &c, const ClientOptions &o) {
  // Blocking resolution unless connect_address is set: callers that pass a name trust it (tests
  // on 127.0.0.1, the operator's Sentry DSN); webhooks resolve on their own resolver and pin it.
  GANTRY_ASSIGN_OR_RETURN(auto to, transport::endpoints(c, o.host, o.port, o.connect_address));
  const transport::ConnectSpec spec{o.host, o.port, o.tls, o.tls_ca_file,
                                    phase(o, o.connect_timeout)};
  return transport::connect(c, to, spec,
                            [&c](std::string_view cls, std::string what, beast::error_code ec) {
                              return fail(c, cls, std::move(what), ec);
                            });
}

BeastRequest make_request(const ClientOptions &o, Method method, std::string_view target,
                          std::string body, Headers &headers) {
  BeastRequest req{to_verb(method), target, 11};
  req.set(bhttp::field::host, transport::authority(o.host, o.port, o.tls));
  req.set(bhttp::field::user_agent, "gantry");
  for (Header &h : headers)
    req.set(h.name, h.value);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

template <typename Fields> Headers to_headers(const Fields &fields) {
  Headers out;
  for (const auto &f : fields)
    out.push_back({std::string(f.name_string()), std::string(f.value())});
  return out;
}

struct Exchange {
  std::optional<Result<ClientResponse>> result;
  bool stale = false;    // a reused connection the server had closed: retry on a fresh one
  bool reusable = false; // the connection may carry another request
};

// Writes `req` and reads the response, keeping at most max_response_body bytes of the body.
Exchange exchange(Connection &c, const ClientOptions &o, Method method, const BeastRequest &req,
                  bool fresh) {
  Exchange x;
  c.lowest().expires_after(phase(o, o.write_timeout));
  const beast::error_code write_ec = c.with([&](auto &s) {
    return run(c, [&](auto handler) { bhttp::async_write(s, req, std::move(handler)); });
  });
  if (write_ec && !fresh && !c.total_expired) {
    x.stale = true;
    return x;
  }
  // Even after a failed write (the server may answer 413 and close before reading the whole
  // body) a response may be waiting.
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  beast::error_code ec;
  do { // interim 1xx responses (100 Continue) precede the real one
    parser.emplace();
    parser->body_limit(std::numeric_limits<std::uint64_t>::max()); // capped while reading
    if (method == Method::kHead)
      parser->skip(true);
    c.lowest().expires_after(phase(o, o.first_byte_timeout));
    ec = c.with([&](auto &s) {
      return run(c, [&](auto handler) {
        bhttp::async_read_header(s, c.buffer, *parser, std::move(handler));
      });
    });
  } while (!ec && parser->get().result_int() / 100 == 1);
  if (ec) {
    if (!fresh && !parser->got_some() && !c.total_expired) {
      x.stale = true;
      return x;
    }
    x.result = write_ec ? Err(fail(c, kConnectFailed, "Writing request", write_ec))
                        : Err(fail(c, kConnectFailed, "Reading response", ec));
    return x;
  }
  ClientResponse out;
  char chunk[kReadChunk];
  while (!parser->is_done()) {
    parser->get().body().data = chunk;
    parser->get().body().size = sizeof chunk;
    c.lowest().expires_after(o.timeout);
    ec = c.with([&](auto &s) {
      return run(
          c, [&](auto handler) { bhttp::async_read(s, c.buffer, *parser, std::move(handler)); });
    });
    if (ec == bhttp::error::need_buffer)
      ec = {};
    if (ec == bhttp::error::end_of_stream && parser->is_done())
      ec = {};
    if (ec) {
      x.result = Err(fail(c, kConnectFailed, "Reading response body", ec));
      return x;
    }
    const size_t n = sizeof chunk - parser->get().body().size;
    const size_t room =
        o.max_response_body - std::min<uint64_t>(out.body.size(), o.max_response_body);
    out.body.append(chunk, std::min(n, room));
    if (n > room) { // the rest is never read: the connection closes instead
      out.body_truncated = true;
      break;
    }
  }
  const auto &res = parser->get();
  out.status = static_cast<int>(res.result_int());
  out.headers = to_headers(res.base());
  x.reusable = !out.body_truncated && parser->is_done() && res.keep_alive() && !write_ec;
  x.result = std::move(out);
  return x;
}

// One request over `conn` (kept or pooled; null opens a fresh one). On return `conn` holds the
// connection only when it may carry another request.
Result<ClientResponse> perform(std::unique_ptr<Connection> &conn, const ClientOptions &o,
                               Method method, const BeastRequest &req, int &opened) {
  try {
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool fresh = !conn;
      if (fresh)
        conn = std::make_unique<Connection>();
      Exchange x;
      {
        TotalDeadline deadline(*conn, o.total_timeout);
        if (fresh) {
          if (auto st = open(*conn, o); !st)
            x.result = Err(st.take_error());
          else
            ++opened;
        }
        if (!x.result)
          x = exchange(*conn, o, method, req, fresh);
      }
      if (!x.reusable)
        conn.reset();
      if (x.stale)
        continue;
      return std::move(*x.result);
    }
    return Err(classed(kConnectFailed, "Connection closed by server"));
  } catch (const std::exception &e) {
    // Asio may throw (e.g. resource exhaustion); callers expect values.
    conn.reset();
    return Err(classed(kConnectFailed, std::string("HTTP client: ") + e.what()));
  }
}

} // namespace

Result<ParsedUrl> parse_url(std::string_view url, ClientOptions base) {
  auto u = boost::urls::parse_uri(url);
  if (!u)
    return Err(Error::invalid("not a URL: " + std::string(url)));
  if (u->scheme_id() == boost::urls::scheme::https) {
    base.tls = true;
    base.port = 443;
  } else if (u->scheme_id() == boost::urls::scheme::http) {
    base.tls = false;
    base.port = 80;
  } else {
    return Err(Error::invalid("only http:// and https:// URLs are supported"));
  }
  if (u->host_type() == boost::urls::host_type::ipvfuture)
    return Err(Error::invalid("unsupported host in URL: " + std::string(url)));
  base.host = u->host_address(); // without the brackets of an IPv6 literal
  if (base.host.empty())
    return Err(Error::invalid("URL without a host: " + std::string(url)));
  if (u->has_port()) {
    if (u->port().empty() || u->port_number() == 0)
      return Err(Error::invalid("bad port in URL: " + std::string(url)));
    base.port = u->port_number();
  }
  ParsedUrl p;
  p.target = std::string(u->encoded_path());
  if (p.target.empty())
    p.target = "/";
  if (u->has_query())
    p.target += "?" + std::string(u->encoded_query());
  p.options = std::move(base);
  return p;
}

// --- SseStream

struct SseStream::Impl {
  ClientOptions options;
  std::unique_ptr<Connection> conn;
  bhttp::response_parser<bhttp::buffer_body> parser;
  Headers head;
  std::string text; // body bytes not yet split into lines
  std::string data; // data lines of the event being assembled
  bool has_data = false;
  bool done = false;
};

SseStream::SseStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SseStream::SseStream(SseStream &&) noexcept = default;
SseStream &SseStream::operator=(SseStream &&) noexcept = default;
SseStream::~SseStream() { close(); }

int SseStream::status() const { return static_cast<int>(impl_->parser.get().result_int()); }

const Headers &SseStream::headers() const { return impl_->head; }

void SseStream::close() {
  if (impl_)
    impl_->conn.reset();
}

Result<std::optional<std::string>> SseStream::next_event() {
  Impl &m = *impl_;
  while (true) {
    std::size_t nl;
    while ((nl = m.text.find('\n')) != std::string::npos) {
      std::string_view line(m.text.data(), nl);
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      if (line.empty()) {
        if (m.has_data) {
          std::string event = std::move(m.data);
          m.data.clear();
          m.has_data = false;
          m.text.erase(0, nl + 1);
          return std::optional<std::string>(std::move(event));
        }
      } else if (line.substr(0, 5) == "data:") {
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ')
          line.remove_prefix(1);
        if (m.has_data)
          m.data += '\n';
        m.data.append(line);
        m.has_data = true;
      } // other fields (event:, id:, retry:) and ":" comments are ignored
      m.text.erase(0, nl + 1);
    }
    if (m.done || !m.conn)
      return std::optional<std::string>();
    if (m.parser.is_done()) {
      m.done = true;
      continue;
    }
    char chunk[4096];
    m.parser.get().body().data = chunk;
    m.parser.get().body().size = sizeof chunk;
    Connection &c = *m.conn;
    c.lowest().expires_after(m.options.timeout);
    beast::error_code ec = c.with([&](auto &s) {
      return run(c, [&](auto handler) {
        bhttp::async_read_some(s, c.buffer, m.parser, std::move(handler));
      });
    });
    if (ec == bhttp::error::need_buffer)
      ec = {};
    if (ec == bhttp::error::end_of_stream && m.parser.is_done())
      ec = {};
    if (ec)
      return Err(fail(c, kConnectFailed, "Reading event stream", ec));
    m.text.append(chunk, sizeof chunk - m.parser.get().body().size);
    if (m.parser.is_done())
      m.done = true;
  }
}

// --- HttpClient

HttpClient::HttpClient(ClientOptions options) : options_(std::move(options)) {}

HttpClient::~HttpClient() = default;

int HttpClient::connections_opened() const { return opened_; }

Result<ClientResponse> HttpClient::request(Method method, std::string_view target, std::string body,
                                           Headers headers) {
  const BeastRequest req = make_request(options_, method, target, std::move(body), headers);
  return perform(conn_, options_, method, req, opened_);
}

Result<SseStream> HttpClient::open_sse(Method method, std::string_view target, std::string body,
                                       Headers headers) {
  auto impl = std::make_unique<SseStream::Impl>();
  impl->options = options_;
  impl->conn = std::make_unique<Connection>();
  Connection &c = *impl->conn;
  try {
    GANTRY_TRY(open(c, impl->options));
    ++opened_;
    headers.push_back({"Accept", "text/event-stream"});
    const BeastRequest req = make_request(impl->options, method, target, std::move(body), headers);
    c.lowest().expires_after(impl->options.timeout);
    beast::error_code ec = c.with([&](auto &s) {
      return run(c, [&](auto handler) { bhttp::async_write(s, req, std::move(handler)); });
    });
    if (ec)
      return Err(fail(c, kConnectFailed, "Writing request", ec));
    impl->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    c.lowest().expires_after(impl->options.timeout);
    ec = c.with([&](auto &s) {
      return run(c, [&](auto handler) {
        bhttp::async_read_header(s, c.buffer, impl->parser, std::move(handler));
      });
    });
    if (ec)
      return Err(fail(c, kConnectFailed, "Reading response head", ec));
  } catch (const std::exception &e) {
    return Err(classed(kConnectFailed, std::string("HTTP client: ") + e.what()));
  }
  impl->head = to_headers(impl->parser.get().base());
  return SseStream(std::move(impl));
}

// --- OutboundClient

OutboundClient::OutboundClient(Options options, const Clock &clock)
    : options_(options), clock_(clock) {}

OutboundClient::~OutboundClient() = default;

int OutboundClient::connections_opened() const {
  std::lock_guard<std::mutex> lk(mu_);
  return opened_;
}

int OutboundClient::idle_connections() const {
  std::lock_guard<std::mutex> lk(mu_);
  return idle_count_;
}

std::unique_ptr<Connection> OutboundClient::take(const std::string &key) {
  std::unique_ptr<Connection> out;
  std::vector<std::unique_ptr<Connection>> expired; // closed outside the lock
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = idle_.find(key);
    if (it == idle_.end())
      return nullptr;
    const auto now = clock_.now();
    auto &v = it->second;
    while (!v.empty() && !out) {
      Idle i = std::move(v.back());
      v.pop_back();
      --idle_count_;
      if (now - i.since > options_.idle_timeout)
        expired.push_back(std::move(i.conn));
      else
        out = std::move(i.conn);
    }
    if (v.empty())
      idle_.erase(it);
  }
  return out;
}

void OutboundClient::put(const std::string &key, std::unique_ptr<Connection> c) {
  std::lock_guard<std::mutex> lk(mu_);
  auto &v = idle_[key];
  if (static_cast<int>(v.size()) >= options_.max_idle_per_origin ||
      idle_count_ >= options_.max_idle_total) {
    if (v.empty())
      idle_.erase(key);
    return; // closed by the destructor
  }
  v.push_back({std::move(c), clock_.now()});
  ++idle_count_;
}

Result<ClientResponse> OutboundClient::request(const ClientOptions &o, Method method,
                                               std::string_view target, std::string body,
                                               Headers headers) {
  const std::string key = std::string(o.tls ? "https|" : "http|") + o.host + "|" +
                          std::to_string(o.port) + "|" + o.connect_address + "|" + o.tls_ca_file;
  const BeastRequest req = make_request(o, method, target, std::move(body), headers);
  std::unique_ptr<Connection> conn = take(key);
  int opened = 0;
  auto r = perform(conn, o, method, req, opened);
  if (opened > 0) {
    std::lock_guard<std::mutex> lk(mu_);
    opened_ += opened;
  }
  if (conn)
    put(key, std::move(conn));
  return r;
}

} // namespace gantry::http
