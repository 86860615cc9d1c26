// Name resolution for outbound webhooks, off the HTTP I/O threads (audit H7). Resolver is the
// port (tests inject fakes that delay or rebind); AsioResolver runs asio's async_resolve on
// io_contexts of its own, each with one thread, and gives up on a lookup at its deadline.
//
// A getaddrinfo call cannot be interrupted: a lookup past its deadline keeps its io_context busy
// until the system resolver returns. Other lookups then use another io_context (at most
// `max_contexts`), so one slow name does not queue every later lookup behind it.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "core/result.h"

namespace gantry::http {

class Resolver {
public:
  virtual ~Resolver() = default;
  // The addresses of the DNS name `host`, or an error with param kTimeout past `deadline`, or
  // kConnectFailed when the name does not resolve. Thread-safe.
  virtual Result<std::vector<boost::asio::ip::address>>
  resolve(const std::string &host, std::chrono::milliseconds deadline) = 0;
};

class AsioResolver final : public Resolver {
public:
  explicit AsioResolver(int max_contexts = 8);
  ~AsioResolver() override;
  AsioResolver(const AsioResolver &) = delete;
  AsioResolver &operator=(const AsioResolver &) = delete;

  Result<std::vector<boost::asio::ip::address>>
  resolve(const std::string &host, std::chrono::milliseconds deadline) override;

private:
  struct Context;
  const int max_contexts_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Context>> contexts_; // at most max_contexts_
};

} // namespace gantry::http
