#include "http/resolver.h"

#include <future>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "http/client.h"

namespace gantry::http {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct AsioResolver::Context {
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> guard{ioc.get_executor()};
  std::thread thread;
  bool busy = false; // guarded by AsioResolver::mu_

  Context() {
    thread = std::thread([this] { ioc.run(); });
  }
  ~Context() {
    guard.reset();
    ioc.stop();
    if (thread.joinable())
      thread.join();
  }
};

AsioResolver::AsioResolver(int max_contexts) : max_contexts_(std::max(1, max_contexts)) {}

AsioResolver::~AsioResolver() = default;

Result<std::vector<asio::ip::address>> AsioResolver::resolve(const std::string &host,
                                                             std::chrono::milliseconds deadline) {
  Context *ctx = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &c : contexts_) {
      if (!c->busy) {
        ctx = c.get();
        break;
      }
    }
    if (!ctx && static_cast<int>(contexts_.size()) < max_contexts_) {
      contexts_.push_back(std::make_unique<Context>());
      ctx = contexts_.back().get();
    }
    if (!ctx) // every context is stuck in a slow lookup
      return Err(classed_error(kTimeout, "Resolving " + host + ": resolver busy"));
    ctx->busy = true;
  }
  using Answer = Result<std::vector<asio::ip::address>>;
  auto promise = std::make_shared<std::promise<Answer>>();
  auto answer = promise->get_future();
  auto resolver = std::make_shared<tcp::resolver>(ctx->ioc);
  resolver->async_resolve(
      host, "",
      [this, ctx, promise, resolver](const boost::system::error_code &ec,
                                     tcp::resolver::results_type results) {
        {
          std::lock_guard<std::mutex> lk(mu_);
          ctx->busy = false;
        }
        if (ec) {
          promise->set_value(Err(classed_error(kConnectFailed, "Cannot resolve: " + ec.message())));
          return;
        }
        std::vector<asio::ip::address> out;
        for (const auto &r : results)
          out.push_back(r.endpoint().address());
        if (out.empty())
          promise->set_value(Err(classed_error(kConnectFailed, "Cannot resolve: no address")));
        else
          promise->set_value(std::move(out));
      });
  if (answer.wait_for(deadline) != std::future_status::ready) {
    asio::post(ctx->ioc, [resolver] { resolver->cancel(); });
    return Err(classed_error(kTimeout, "Resolving " + host + ": timed out"));
  }
  return answer.get();
}

} // namespace gantry::http
