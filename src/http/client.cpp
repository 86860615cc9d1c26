// Beast implementation of HttpClient. Each blocking call runs asynchronous Beast operations on
// a private io_context, because only the asynchronous tcp_stream operations honour timeouts.
#include "http/client.h"

#include <limits>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint64_t kMaxResponseBody = 256ull * 1024 * 1024;

bhttp::verb to_verb(Method m) {
  switch (m) {
  case Method::kGet: return bhttp::verb::get;
  case Method::kHead: return bhttp::verb::head;
  case Method::kPost: return bhttp::verb::post;
  case Method::kPut: return bhttp::verb::put;
  case Method::kDelete: return bhttp::verb::delete_;
  case Method::kPatch: return bhttp::verb::patch;
  case Method::kOptions: return bhttp::verb::options;
  case Method::kOther: return bhttp::verb::unknown;
  }
  return bhttp::verb::unknown;
}

// Runs one asynchronous operation to completion on `ioc` and returns its error code.
template <typename Initiate> beast::error_code run(asio::io_context &ioc, Initiate &&initiate) {
  beast::error_code result = asio::error::would_block;
  initiate([&result](beast::error_code ec, auto &&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

Result<beast::tcp_stream> connect(asio::io_context &ioc, const ClientOptions &o) {
  beast::tcp_stream stream(ioc);
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
  if (ec)
    return Error::io("Cannot resolve " + o.host + ": " + ec.message());
  stream.expires_after(o.timeout);
  ec = run(ioc, [&](auto handler) { stream.async_connect(results, std::move(handler)); });
  if (ec) {
    return Error::io("Cannot connect to " + o.host + ":" + std::to_string(o.port) + ": " +
                     ec.message());
  }
  stream.socket().set_option(tcp::no_delay(true), ec);
  return stream;
}

bhttp::request<bhttp::string_body> make_request(const ClientOptions &o, Method method,
                                                std::string_view target, std::string body,
                                                Headers &headers) {
  bhttp::request<bhttp::string_body> req{to_verb(method), target, 11};
  req.set(bhttp::field::host, o.host + ":" + std::to_string(o.port));
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

Error io_error(std::string_view what, beast::error_code ec) {
  if (ec == beast::error::timeout)
    return Error::io(std::string(what) + ": timed out");
  return Error::io(std::string(what) + ": " + ec.message());
}

} // namespace

// --- SseStream

struct SseStream::Impl {
  ClientOptions options;
  asio::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
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
  if (!impl_ || !impl_->stream)
    return;
  beast::error_code ec;
  impl_->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
  impl_->stream->socket().close(ec);
  impl_->stream.reset();
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
    if (m.done || !m.stream)
      return std::optional<std::string>();
    if (m.parser.is_done()) {
      m.done = true;
      continue;
    }
    char chunk[4096];
    m.parser.get().body().data = chunk;
    m.parser.get().body().size = sizeof chunk;
    m.stream->expires_after(m.options.timeout);
    beast::error_code ec = run(m.ioc, [&](auto handler) {
      bhttp::async_read_some(*m.stream, m.buffer, m.parser, std::move(handler));
    });
    if (ec == bhttp::error::need_buffer)
      ec = {};
    if (ec == bhttp::error::end_of_stream && m.parser.is_done())
      ec = {};
    if (ec)
      return io_error("Reading event stream", ec);
    m.text.append(chunk, sizeof chunk - m.parser.get().body().size);
    if (m.parser.is_done())
      m.done = true;
  }
}

// --- HttpClient

struct HttpClient::Impl {
  ClientOptions options;
  asio::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  int opened = 0;

  void drop() {
    if (!stream)
      return;
    beast::error_code ec;
    stream->socket().shutdown(tcp::socket::shutdown_both, ec);
    stream->socket().close(ec);
    stream.reset();
    buffer.clear();
  }
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

HttpClient::~HttpClient() { impl_->drop(); }

int HttpClient::connections_opened() const { return impl_->opened; }

Result<ClientResponse> HttpClient::request(Method method, std::string_view target, std::string body,
                                           Headers headers) {
  Impl &m = *impl_;
  auto req = make_request(m.options, method, target, std::move(body), headers);
  // A reused keep-alive connection may have been closed by the server meanwhile; then one
  // retry on a fresh connection is safe because the server never saw the request.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool fresh = false;
    if (!m.stream) {
      auto s = connect(m.ioc, m.options);
      if (!s)
        return s.take_error();
      m.stream.emplace(std::move(*s));
      ++m.opened;
      fresh = true;
    }
    m.stream->expires_after(m.options.timeout);
    beast::error_code write_ec =
        run(m.ioc, [&](auto handler) { bhttp::async_write(*m.stream, req, std::move(handler)); });
    if (write_ec && !fresh) {
      m.drop();
      continue;
    }
    // Even after a failed write (the server may answer 413 and close before reading the whole
    // body) a response may be waiting.
    std::optional<bhttp::response_parser<bhttp::string_body>> parser;
    beast::error_code ec;
    do { // interim 1xx responses (100 Continue) precede the real one
      parser.emplace();
      parser->body_limit(kMaxResponseBody);
      if (method == Method::kHead)
        parser->skip(true);
      m.stream->expires_after(m.options.timeout);
      ec = run(m.ioc, [&](auto handler) {
        bhttp::async_read(*m.stream, m.buffer, *parser, std::move(handler));
      });
    } while (!ec && parser->get().result_int() / 100 == 1);
    if (ec) {
      m.drop();
      if (!fresh && !parser->got_some())
        continue;
      return io_error(write_ec ? "Writing request" : "Reading response", write_ec ? write_ec : ec);
    }
    auto &res = parser->get();
    ClientResponse out;
    out.status = static_cast<int>(res.result_int());
    out.headers = to_headers(res.base());
    out.body = std::move(res.body());
    if (!res.keep_alive() || write_ec)
      m.drop();
    return out;
  }
  return Error::io("Connection closed by server");
}

Result<SseStream> HttpClient::open_sse(Method method, std::string_view target, std::string body,
                                       Headers headers) {
  auto impl = std::make_unique<SseStream::Impl>();
  impl->options = impl_->options;
  auto s = connect(impl->ioc, impl->options);
  if (!s)
    return s.take_error();
  impl->stream.emplace(std::move(*s));
  ++impl_->opened;
  headers.push_back({"Accept", "text/event-stream"});
  auto req = make_request(impl->options, method, target, std::move(body), headers);
  impl->stream->expires_after(impl->options.timeout);
  beast::error_code ec = run(
      impl->ioc, [&](auto handler) { bhttp::async_write(*impl->stream, req, std::move(handler)); });
  if (ec)
    return io_error("Writing request", ec);
  impl->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  impl->stream->expires_after(impl->options.timeout);
  ec = run(impl->ioc, [&](auto handler) {
    bhttp::async_read_header(*impl->stream, impl->buffer, impl->parser, std::move(handler));
  });
  if (ec)
    return io_error("Reading response head", ec);
  impl->head = to_headers(impl->parser.get().base());
  return SseStream(std::move(impl));
}

} // namespace gantry::http
