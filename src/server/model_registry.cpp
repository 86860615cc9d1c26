#include "server/model_registry.h"

#include <algorithm>

namespace gantry::server {

ModelRegistry::ModelRegistry()
    : slots_(std::make_unique<std::unique_ptr<ServedModel>[]>(kMaxModels)) {}

ServedModel *ModelRegistry::add(std::unique_ptr<backend::ModelBackend> backend,
                                std::function<int()> live_workers) {
  std::lock_guard<std::mutex> lk(add_mu_);
  const std::size_t n = count_.load(std::memory_order_relaxed);
  if (n >= kMaxModels || find(backend->info().name))
    return nullptr;
  auto m = std::make_unique<ServedModel>();
  m->backend = std::move(backend);
  m->live_workers = std::move(live_workers);
  ServedModel *out = m.get();
  slots_[n] = std::move(m);
  count_.store(n + 1, std::memory_order_release); // publishes the slot to readers
  return out;
}

backend::ModelBackend *ModelRegistry::find(std::string_view name) const {
  for (const auto &m : models()) {
    if (m->name() == name)
      return m->backend.get();
  }
  return nullptr;
}

void ModelRegistry::stop_accepting() {
  for (const auto &m : models())
    m->backend->stop_accepting();
}

bool ModelRegistry::wait_idle(std::chrono::milliseconds grace, const Clock &clock) {
  // The grace is shared by all models: each waits for what is left of it.
  const auto deadline = clock.now() + grace;
  bool clean = true;
  for (const auto &m : models()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock.now());
    clean = m->backend->wait_idle(std::max(left, std::chrono::milliseconds(0))) && clean;
  }
  return clean;
}

void ModelRegistry::cancel_all() {
  for (const auto &m : models())
    m->backend->cancel_all();
}

void ModelRegistry::clear() {
  std::lock_guard<std::mutex> lk(add_mu_);
  const std::size_t n = count_.exchange(0);
  for (std::size_t i = 0; i < n; ++i)
    slots_[i].reset();
}

} // namespace gantry::server
