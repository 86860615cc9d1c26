// Local HTTP(S) receivers for the outbound client's tests, all on 127.0.0.1 port 0:
// - Receiver: answers every request with a fixed status and body (plain or TLS, keep-alive), or
//   with a huge declared body written until the client goes away (it counts what it sent);
// - SilentReceiver: listens and never answers (a blackhole);
// - TestCerts: a throw-away CA and a "localhost" server certificate made with the openssl CLI.
#pragma once

#include <gtest/gtest.h>

#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace gantry::testing {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

class TestCerts {
public:
  TestCerts() {
    std::string tmpl = ::testing::TempDir() + "gantry-tls-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    const std::string cmd =
        "(cd " + dir_ + " && openssl req -x509 " + ec +
        " -keyout ca.key -out ca.pem -days 2 -subj '/CN=Gantry Test CA' -addext "
        "'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' && "
        "openssl req " +
        ec +
        " -keyout server.key -out server.csr -subj '/CN=localhost' && "
        "printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n"
        "extendedKeyUsage=serverAuth\\n' > ext.cnf && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile ext.cnf) >/dev/null 2>&1";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  ~TestCerts() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  std::string ca() const { return dir_ + "/ca.pem"; }
  std::string cert() const { return dir_ + "/server.pem"; }
  std::string key() const { return dir_ + "/server.key"; }

private:
  std::string dir_;
  bool ok_ = false;
};

class Receiver {
public:
  struct Options {
    int status = 200;
    std::string body = "ok";
    uint64_t huge_body = 0; // > 0: declare this Content-Length and stream 'x' until the peer goes
    const TestCerts *tls = nullptr;
  };
  explicit Receiver(Options o)
      : o_(std::move(o)), acceptor_(ioc_, {asio::ip::make_address("127.0.0.1"), 0}) {
    if (o_.tls) {
      ctx_.use_certificate_chain_file(o_.tls->cert());
      ctx_.use_private_key_file(o_.tls->key(), asio::ssl::context::pem);
    }
    thread_ = std::thread([this] { loop(); });
  }
  ~Receiver() {
    stopping_ = true;
    boost::system::error_code ec;
    tcp::socket wake(ioc_);
    wake.connect(acceptor_.local_endpoint(), ec);
    wake.close(ec);
    thread_.join();
    {
      // Ends connections the client still keeps alive (a pool outliving the receiver).
      std::lock_guard<std::mutex> lk(mu_);
      for (int fd : fds_)
        ::shutdown(fd, SHUT_RDWR);
    }
    for (auto &t : conns_)
      t.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int requests() const { return requests_; }
  int connections() const { return connections_; }
  int handshakes_failed() const { return handshakes_failed_; }
  uint64_t body_bytes_sent() const { return sent_; }
  bool huge_done() const { return huge_done_; }
  std::vector<std::string> hosts() {
    std::lock_guard<std::mutex> lk(mu_);
    return hosts_;
  }

private:
  template <typename Stream> void serve(Stream &s) {
    boost::beast::flat_buffer buf;
    for (;;) {
      bhttp::request<bhttp::string_body> req;
      boost::system::error_code ec;
      bhttp::read(s, buf, req, ec);
      if (ec)
        return;
      ++requests_;
      {
        std::lock_guard<std::mutex> lk(mu_);
        hosts_.push_back(std::string(req[bhttp::field::host]));
      }
      if (o_.huge_body > 0) {
        const std::string head = "HTTP/1.1 " + std::to_string(o_.status) +
                                 " OK\r\nContent-Length: " + std::to_string(o_.huge_body) +
                                 "\r\n\r\n";
        asio::write(s, asio::buffer(head), ec);
        const std::string chunk(1 << 20, 'x');
        while (!ec && sent_ < o_.huge_body) {
          const size_t n = asio::write(s, asio::buffer(chunk), ec);
          sent_ += n;
        }
        huge_done_ = true;
        return;
      }
      bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(o_.status), 11};
      res.body() = o_.body;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      bhttp::write(s, res, ec);
      if (ec || !req.keep_alive())
        return;
    }
  }
  void loop() {
    for (;;) {
      auto sock = std::make_shared<tcp::socket>(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(*sock, ec);
      if (stopping_ || ec)
        return;
      ++connections_;
      {
        std::lock_guard<std::mutex> lk(mu_);
        fds_.push_back(sock->native_handle());
      }
      conns_.emplace_back([this, sock] { connection(std::move(*sock)); });
    }
  }
  void connection(tcp::socket sock) {
    const int fd = sock.native_handle();
    if (!o_.tls) {
      serve(sock);
    } else {
      boost::system::error_code ec;
      asio::ssl::stream<tcp::socket> s(std::move(sock), ctx_);
      s.handshake(asio::ssl::stream_base::server, ec);
      if (ec)
        ++handshakes_failed_;
      else
        serve(s);
      forget(fd); // while the socket is still open, so the number is not reused yet
      return;
    }
    forget(fd);
  }
  void forget(int fd) {
    std::lock_guard<std::mutex> lk(mu_);
    std::erase(fds_, fd);
  }

  Options o_;
  asio::io_context ioc_;
  asio::ssl::context ctx_{asio::ssl::context::tls_server};
  tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0}, connections_{0}, handshakes_failed_{0};
  std::atomic<uint64_t> sent_{0};
  std::atomic<bool> huge_done_{false};
  std::mutex mu_;
  std::vector<std::string> hosts_;
  std::vector<int> fds_; // of accepted connections (closed by their sockets' owners)
  std::vector<std::thread> conns_;
  std::thread thread_;
};

// Listens but never accepts or answers: the kernel completes the handshake, nothing else comes.
class SilentReceiver {
public:
  SilentReceiver() : acceptor_(ioc_, {asio::ip::make_address("127.0.0.1"), 0}) {}
  uint16_t port() const { return acceptor_.local_endpoint().port(); }

private:
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
};

} // namespace gantry::testing
