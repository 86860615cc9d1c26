#include "server/remote_models.h"

#include <cstdlib>

#include "backend/remote/remote_backend.h"

namespace gantry::server {

Result<std::vector<std::unique_ptr<backend::ModelBackend>>>
create_remote_backends(const ServerConfig &config, const Clock &clock,
                       backend::remote::FindBackend find) {
  std::vector<std::unique_ptr<backend::ModelBackend>> out;
  for (const auto &spec : config.remote_models) {
    GANTRY_ASSIGN_OR_RETURN(auto rc, resolve_remote_model(spec, ::getenv, config.tls_ca_file));
    auto b = backend::remote::RemoteBackend::create(std::move(rc), clock);
    if (!b) {
      Error e = b.take_error();
      if (!e.message.starts_with("model '"))
        e.message = "model '" + spec.name + "': " + e.message;
      return Err(std::move(e));
    }
    if (spec.fallbacks.empty())
      out.push_back(std::move(*b));
    else
      out.push_back(
          std::make_unique<backend::remote::FallbackBackend>(std::move(*b), spec.fallbacks, find));
  }
  return out;
}

std::vector<control::ModelControl> remote_model_controls(const ServerConfig &config) {
  std::vector<control::ModelControl> out;
  for (const auto &spec : config.remote_models) {
    control::ModelControl mc;
    mc.name = spec.name;
    mc.price = {spec.price_input_per_mtok, spec.price_output_per_mtok, 0};
    out.push_back(std::move(mc));
  }
  return out;
}

std::vector<control::BreakerSpec> remote_model_breakers(const ServerConfig &config) {
  std::vector<control::BreakerSpec> out;
  for (const auto &spec : config.remote_models) {
    control::BreakerConfig b;
    b.usd_per_minute = spec.breaker_usd_per_minute;
    b.window = std::chrono::seconds(spec.breaker_window_s);
    b.cooldown = std::chrono::seconds(spec.breaker_cooldown_s);
    out.push_back({spec.name, b});
  }
  return out;
}

const backend::remote::RemoteBackend *as_remote(const backend::ModelBackend &b) {
  if (auto *r = dynamic_cast<const backend::remote::RemoteBackend *>(&b))
    return r;
  if (auto *f = dynamic_cast<const backend::remote::FallbackBackend *>(&b))
    return dynamic_cast<const backend::remote::RemoteBackend *>(&f->primary());
  return nullptr;
}

} // namespace gantry::server
