// A scripted HTTP/1.1 server for the upstream clients' tests (upstream_test.cpp,
// async_upstream_test.cpp): each connection reads one request head (and its Content-Length
// body) and then plays a script of writes and pauses. One thread per connection.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "http/upstream.h"

namespace gantry::http::scripted {

using namespace std::chrono_literals;

struct Step {
  std::string bytes;
  std::chrono::milliseconds pause{0}; // before writing
};

// Serves each accepted connection with `script(request_index)`; a connection stays open for
// the next request while `keep_alive`.
class ScriptServer {
public:
  using Script = std::function<std::vector<Step>(int request)>;
  explicit ScriptServer(Script script, bool keep_alive = true)
      : script_(std::move(script)), keep_alive_(keep_alive) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~ScriptServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto &t : conns_)
      t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

private:
  void loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        return;
      ++accepted_;
      conns_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string buf;
    char tmp[4096];
    while (!stop_) {
      size_t head_end;
      while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        buf.append(tmp, n);
      }
      size_t body = 0;
      if (auto p = buf.find("Content-Length: "); p != std::string::npos && p < head_end)
        body = std::stoul(buf.substr(p + 16));
      while (buf.size() < head_end + 4 + body) {
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        buf.append(tmp, n);
      }
      buf.erase(0, head_end + 4 + body);
      for (const Step &s : script_(requests_++)) {
        if (s.pause.count() > 0)
          std::this_thread::sleep_for(s.pause);
        if (stop_ || ::send(c, s.bytes.data(), s.bytes.size(), MSG_NOSIGNAL) < 0) {
          ::close(c);
          return;
        }
      }
      if (!keep_alive_)
        break;
    }
    ::close(c);
  }

  Script script_;
  bool keep_alive_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::thread thread_;
  std::vector<std::thread> conns_;
};

inline std::string fixed(std::string body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline UpstreamOptions opts(uint16_t port) {
  UpstreamOptions o;
  o.port = port;
  o.connect_timeout = 2s;
  o.first_byte_timeout = 2s;
  o.idle_timeout = 2s;
  o.total_timeout = 10s;
  return o;
}

} // namespace gantry::http::scripted
