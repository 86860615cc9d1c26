#include "http/io_loop.h"

#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "http/io_loop_impl.h"

namespace gantry::http {

namespace asio = boost::asio;

namespace {
thread_local IoLoop *current_loop = nullptr;
} // namespace

IoLoop::IoLoop(int threads) : impl_(std::make_unique<Impl>()) {
  impl_->owned = std::make_unique<asio::io_context>();
  impl_->ioc = impl_->owned.get();
  impl_->guard.emplace(impl_->ioc->get_executor());
  impl_->one_thread = threads <= 1;
  for (int i = 0; i < std::max(1, threads); ++i)
    impl_->threads.emplace_back([this] {
      set_current_loop(nullptr); // handlers here are not a server's: no request runs inline
      impl_->ioc->run();
    });
}

IoLoop::IoLoop(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<IoLoop> wrap_io_context(asio::io_context &ioc) {
  auto impl = std::make_unique<IoLoop::Impl>();
  impl->ioc = &ioc;
  impl->one_thread = true;
  return std::make_unique<IoLoop>(std::move(impl));
}

void set_current_loop(IoLoop *loop) { current_loop = loop; }

IoLoop *IoLoop::current() { return current_loop; }

void IoLoop::at_close(std::weak_ptr<void> owner, std::function<void()> fn) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (impl_->at_close.size() >= 8)
    std::erase_if(impl_->at_close, [](const auto &e) { return e.first.expired(); });
  impl_->at_close.emplace_back(std::move(owner), std::move(fn));
}

IoLoop::~IoLoop() {
  std::vector<std::pair<std::weak_ptr<void>, std::function<void()>>> closing;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    closing.swap(impl_->at_close);
  }
  if (!impl_->owned) { // another's io_context: its owner stopped running it
    for (auto &[owner, fn] : closing)
      if (auto alive = owner.lock())
        fn();
    return;
  }
  // Handlers already queued (a timer's cancel, a call's last step) run to their end: an I/O
  // object destroyed with a dropped handler would outlive its io_context. What is still
  // pending after a grace period (an operation nobody cancelled) is dropped.
  impl_->guard.reset();
  for (int i = 0; i < 2000 && !impl_->ioc->stopped(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->ioc->stop();
  for (auto &t : impl_->threads)
    t.join();
  for (auto &[owner, fn] : closing)
    if (auto alive = owner.lock())
      fn();
}

void IoLoop::post(std::function<void()> fn) { asio::post(*impl_->ioc, std::move(fn)); }

// The timer lives on its own strand: wait() and cancel() from any thread are posted there, so
// they never race each other or the expiry handler.
struct Timer::Impl : std::enable_shared_from_this<Timer::Impl> {
  explicit Impl(asio::io_context &ioc) : strand(asio::make_strand(ioc)), timer(strand) {}
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;
  uint64_t generation = 0; // of the latest wait(): an older wait's handler reports a cancel
};

Timer::Timer(IoLoop &loop) : impl_(std::make_shared<Impl>(*loop.impl().ioc)) {}

Timer::~Timer() { cancel(); }

void Timer::wait(std::chrono::steady_clock::duration d, std::function<void(bool)> fn) {
  asio::post(impl_->strand, [self = impl_, d, fn = std::move(fn)]() mutable {
    const uint64_t gen = ++self->generation;
    self->timer.expires_after(d); // cancels a previous wait
    self->timer.async_wait([self, gen, fn = std::move(fn)](boost::system::error_code ec) {
      fn(!ec && gen == self->generation);
    });
  });
}

void Timer::cancel() {
  asio::post(impl_->strand, [self = impl_] {
    ++self->generation;
    self->timer.cancel();
  });
}

} // namespace gantry::http
