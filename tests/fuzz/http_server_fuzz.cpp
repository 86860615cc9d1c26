// Fuzzes the real HTTP/1.1 server (request heads, chunked bodies, trailers, pipelining, limits):
// one in-process HttpServer on 127.0.0.1 for the whole run, each input written to a fresh
// loopback connection that is then half-closed and read to the end. Timeouts are short so a
// partial request costs milliseconds, and the buffers and caps are the production defaults.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "http/router.h"
#include "http/server.h"

using namespace gantry;

namespace {

http::HttpServer *server() {
  static http::HttpServer *s = [] {
    http::ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.io_threads = 1;
    o.header_timeout = std::chrono::milliseconds(300);
    o.body_timeout = std::chrono::milliseconds(300);
    o.idle_timeout = std::chrono::milliseconds(300);
    o.linger_timeout = std::chrono::milliseconds(20);
    http::Router r;
    r.post("/v1/echo", [](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
      w->respond(http::Response{200, "text/plain", {}, std::to_string(req.body.size())});
    });
    r.get("/v1/items/{id}", [](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
      w->respond(http::Response{200, "text/plain", {}, std::string(req.path_param("id"))});
    });
    r.post("/v1/stream", [](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
      w->start_sse();
      w->send_event("{\"a\":1}");
      w->send_event("line1\nline2");
      w->end();
    });
    auto *srv = new http::HttpServer(o, std::move(r).into_handler());
    if (!srv->start().ok())
      std::abort();
    return srv;
  }();
  return s;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint16_t port = server()->port();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return 0;
  }
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  while (::recv(fd, buf, sizeof buf, 0) > 0) {
  }
  ::close(fd);
  return 0;
}
