// A small blocking HTTP/1.1 client (plain TCP) for tests, webhooks and upstream backends.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "http/request.h"

namespace gantry::http {

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;

  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers, name);
  }
};

// A Server-Sent Events stream opened by HttpClient::open_sse. Owned by one thread at a time.
// Destroying it closes the connection, which the server sees as a client disconnect.
class SseStream {
public:
  SseStream(SseStream &&) noexcept;
  SseStream &operator=(SseStream &&) noexcept;
  ~SseStream();

  int status() const;
  const Headers &headers() const;
  // The data of the next event (multi-line data joined with '\n'), std::nullopt at the end of
  // the stream, or an error (timeout, connection reset).
  Result<std::optional<std::string>> next_event();
  void close();

private:
  friend class HttpClient;
  struct Impl;
  explicit SseStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::chrono::milliseconds timeout{10'000}; // per operation: connect, write, read
};

// Owned by one thread at a time. Keeps one keep-alive connection and reconnects when the
// server closed it.
class HttpClient {
public:
  explicit HttpClient(ClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient &) = delete;
  HttpClient &operator=(const HttpClient &) = delete;

  Result<ClientResponse> request(Method method, std::string_view target, std::string body = {},
                                 Headers headers = {});
  Result<ClientResponse> get(std::string_view target, Headers headers = {}) {
    return request(Method::kGet, target, {}, std::move(headers));
  }
  Result<ClientResponse> post(std::string_view target, std::string body, Headers headers = {}) {
    return request(Method::kPost, target, std::move(body), std::move(headers));
  }

  // Sends a request on a fresh connection and returns once the response head arrived; read
  // events with SseStream::next_event(). A non-2xx response is still returned (body unread).
  Result<SseStream> open_sse(Method method, std::string_view target, std::string body = {},
                             Headers headers = {});

  // Number of TCP connections this client has opened (keep-alive tests assert on it).
  int connections_opened() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace gantry::http
