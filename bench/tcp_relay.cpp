// tcp_relay: the least a proxy can add on this host — bytes relayed between a client connection
// and an upstream connection, nothing parsed (bench/remote_overhead.sh's floor for issue 12's
// "added latency" goals). One thread and epoll, as nginx works: a readable socket's bytes are
// sent on to its partner at once, so a request costs the socket calls and wake-ups any proxy
// pays and nothing else (no HTTP parsing, no copies beyond the kernel's). Each accepted
// connection takes an upstream connection opened in advance (as a proxy's kept-alive pool would
// have one), and a new spare is opened after it, off the request's path. Loopback only.
//
//   tcp_relay --upstream PORT [--port P] [--spares N]   # prints the port, then serves
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A blocking connect (loopback: immediate), then non-blocking like every relayed socket.
int open_upstream(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_in to = loopback(port);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr *>(&to), sizeof to) != 0) {
    std::perror("tcp_relay: connect");
    if (fd >= 0)
      close(fd);
    return -1;
  }
  no_delay(fd);
  return fd;
}

// Sends everything, waiting for room if the partner's buffer is full (never here: responses
// are a few hundred bytes).
bool send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN) {
      usleep(50);
      continue;
    }
    if (w <= 0)
      return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

} // namespace

int main(int argc, char **argv) {
  int port = 0, upstream = 0, spares = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--port")
      port = std::atoi(argv[i + 1]);
    else if (a == "--upstream")
      upstream = std::atoi(argv[i + 1]);
    else if (a == "--spares")
      spares = std::atoi(argv[i + 1]);
  }
  if (upstream <= 0 || spares < 0) {
    std::fprintf(stderr, "usage: tcp_relay --upstream PORT [--port P] [--spares N]\n");
    return 2;
  }
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = loopback(port);
  socklen_t len = sizeof addr;
  if (bind(lfd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(lfd, 1024) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
    std::perror("tcp_relay: listen");
    return 1;
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  // fd -> the socket its bytes go to; kIdle when not relayed, kSpare for a spare upstream
  // connection (watched too: one the upstream closes while it waits is replaced).
  constexpr int kIdle = -1, kSpare = -2;
  std::vector<int> partner;
  auto watch = [&](int fd, int to, int op) { // op: EPOLL_CTL_ADD, or _MOD for a spare
    if (partner.size() <= static_cast<size_t>(fd))
      partner.resize(static_cast<size_t>(fd) + 1, kIdle);
    partner[fd] = to;
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.fd = fd;
    epoll_ctl(ep, op, fd, &e);
  };
  std::deque<int> spare;
  auto add_spare = [&] {
    const int fd = open_upstream(upstream);
    if (fd < 0)
      return false;
    spare.push_back(fd);
    watch(fd, kSpare, EPOLL_CTL_ADD);
    return true;
  };
  for (int i = 0; i < spares; ++i)
    add_spare();
  std::printf("%d\n", ntohs(addr.sin_port));
  std::fflush(stdout);
  auto pair_up = [&](int client, int up) {
    watch(client, up, EPOLL_CTL_ADD);
    watch(up, client, EPOLL_CTL_MOD); // watched since it became a spare
  };
  auto drop = [&](int fd) {
    const int other = partner[fd];
    for (int f : {fd, other}) {
      if (f < 0)
        continue;
      epoll_ctl(ep, EPOLL_CTL_DEL, f, nullptr);
      partner[f] = kIdle;
      close(f);
    }
  };
  std::vector<epoll_event> events(256);
  char buf[16 * 1024];
  for (;;) {
    // Spares are opened only when nothing waits (a poll found no event), so that opening one
    // is never on a request's path: a proxy's kept-alive pool has its connection already.
    const bool refill = static_cast<int>(spare.size()) < spares;
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), refill ? 0 : -1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 && refill) {
      if (!add_spare())
        spares = static_cast<int>(spare.size()); // upstream refusing: stop polling for it
      continue;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        const int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0)
          continue;
        if (spare.empty())
          add_spare();
        if (spare.empty()) {
          close(c);
          continue;
        }
        const int up = spare.front();
        spare.pop_front();
        no_delay(c);
        pair_up(c, up);
        continue;
      }
      if (static_cast<size_t>(fd) >= partner.size() || partner[fd] == kIdle)
        continue;                  // its pair was dropped earlier in this batch
      if (partner[fd] == kSpare) { // closed by the upstream while it waited
        std::erase(spare, fd);
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        partner[fd] = kIdle;
        close(fd);
        add_spare();
        continue;
      }
      const ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      if (got <= 0 || !send_all(partner[fd], buf, static_cast<size_t>(got))) {
        drop(fd);
        continue;
      }
    }
  }
}
