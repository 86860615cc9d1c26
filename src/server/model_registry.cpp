#include "server/model_registry.h"

#include <algorithm>

namespace gantry::server {

void ModelRegistry::add(std::unique_ptr<backend::ModelBackend> backend) {
  auto m = std::make_unique<ServedModel>();
  m->backend = std::move(backend);
  models_.push_back(std::move(m));
}

backend::ModelBackend *ModelRegistry::find(std::string_view name) const {
  for (const auto &m : models_) {
    if (m->name() == name)
      return m->backend.get();
  }
  return nullptr;
}

void ModelRegistry::stop_accepting() {
  for (auto &m : models_)
    m->backend->stop_accepting();
}

bool ModelRegistry::wait_idle(std::chrono::milliseconds grace, const Clock &clock) {
  // The grace is shared by all models: each waits for what is left of it.
  const auto deadline = clock.now() + grace;
  bool clean = true;
  for (auto &m : models_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock.now());
    clean = m->backend->wait_idle(std::max(left, std::chrono::milliseconds(0))) && clean;
  }
  return clean;
}

void ModelRegistry::cancel_all() {
  for (auto &m : models_)
    m->backend->cancel_all();
}

} // namespace gantry::server
