// Fuzzes what a backend can send back: the real UpstreamClient (Beast's incremental response
// parser — status line, headers, Content-Length and chunked bodies with extensions and trailers,
// bodies read piece by piece or whole under a cap) against a loopback "upstream" that answers
// every request with the fuzz input and closes, and the SSE parser fed the pieces as they come.
// The first input byte picks the reading mode; the rest is the raw response.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/remote/sse_parser.h"
#include "core/clock.h"
#include "http/upstream.h"

using namespace gantry;

namespace {

// One connection at a time: reads the request (head and Content-Length body), writes the
// current response bytes, half-closes, and waits for the client to close.
class FakeUpstream {
public:
  FakeUpstream() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        ::listen(fd_, 16) != 0)
      std::abort();
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len);
    port_ = ntohs(a.sin_port);
    std::thread([this] { serve(); }).detach(); // lives as long as the process
  }
  std::uint16_t port() const { return port_; }
  void set_response(std::string bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    response_ = std::move(bytes);
  }

private:
  void serve() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        continue;
      timeval tv{0, 300'000};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      std::string req;
      char buf[4096];
      std::size_t need = std::string::npos;
      while (need == std::string::npos || req.size() < need) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0)
          break;
        req.append(buf, static_cast<std::size_t>(n));
        if (need == std::string::npos) {
          const auto end = req.find("\r\n\r\n");
          if (end == std::string::npos)
            continue;
          std::size_t body = 0;
          if (auto cl = req.find("Content-Length: "); cl != std::string::npos && cl < end)
            body = std::strtoul(req.c_str() + cl + 16, nullptr, 10);
          need = end + 4 + body;
        }
      }
      std::string out;
      {
        std::lock_guard<std::mutex> lk(mu_);
        out = response_;
      }
      for (std::size_t off = 0; off < out.size();) {
        const ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (n <= 0)
          break;
        off += static_cast<std::size_t>(n);
      }
      ::shutdown(c, SHUT_WR);
      while (::recv(c, buf, sizeof buf, 0) > 0) {
      }
      ::close(c);
    }
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mu_;
  std::string response_;
};

struct Harness {
  FakeUpstream upstream;
  SystemClock clock;
  std::unique_ptr<http::UpstreamClient> client;
  Harness() {
    http::UpstreamOptions o;
    o.port = upstream.port();
    o.connect_timeout = std::chrono::milliseconds(300);
    o.first_byte_timeout = std::chrono::milliseconds(300);
    o.idle_timeout = std::chrono::milliseconds(300);
    o.total_timeout = std::chrono::milliseconds(2000);
    o.max_idle = 0; // the fake closes after each response: never reuse a connection
    client = std::make_unique<http::UpstreamClient>(o, clock);
  }
};

Harness &harness() {
  static Harness *h = new Harness();
  return *h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1 << 20))
    return 0;
  Harness &h = harness();
  const uint8_t mode = data[0] % 3;
  h.upstream.set_response(std::string(reinterpret_cast<const char *>(data + 1), size - 1));
  auto call = h.client->start(http::Method::kPost, "/v1/chat/completions", "{}",
                              {{"Content-Type", "application/json"}});
  if (!call)
    return 0;
  if (mode == 0) { // a whole response under a small cap, as a non-streamed body is read
    (void)(*call)->read_all(4096);
    return 0;
  }
  // Piece by piece, as a stream is read; mode 2 also parses the pieces as server-sent events.
  backend::remote::SseLimits limits;
  limits.max_line = 1024;
  limits.max_event = 4096;
  backend::remote::SseParser parser(limits);
  std::vector<backend::remote::SseEvent> events;
  for (int pieces = 0; pieces < 100'000; ++pieces) {
    auto piece = (*call)->read_some();
    if (!piece || !*piece)
      break;
    if (mode == 2) {
      events.clear();
      if (!parser.feed(**piece, events))
        break;
    }
  }
  return 0;
}
