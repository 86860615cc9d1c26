#include "server/remote_models.h"

#include <cstdlib>

#include "backend/remote/remote_backend.h"
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"

namespace gantry::server {

namespace {

// The upstream model's vocabulary from a GGUF file (`tokenizer = "..."`): prompts are counted
// with it instead of estimated. The file stays mapped for the tokenizer's lifetime.
Result<std::function<int64_t(std::string_view)>> load_counter(const RemoteModelSpec &spec) {
  const std::string key = "models." + spec.name + ".tokenizer";
  auto file = gguf::GgufFile::open(spec.tokenizer);
  if (!file)
    return config_error(key, "cannot read '" + spec.tokenizer + "': " + file.error().message);
  auto tok = engine::Tokenizer::from_gguf(**file);
  if (!tok)
    return config_error(key, "'" + spec.tokenizer +
                                 "' has no usable vocabulary: " + tok.error().message);
  std::shared_ptr<gguf::GgufFile> f = std::move(*file);
  std::shared_ptr<engine::Tokenizer> t = std::move(*tok);
  return std::function<int64_t(std::string_view)>([f, t](std::string_view text) {
    return static_cast<int64_t>(t->encode(text, false, false).size());
  });
}

} // namespace

Result<std::vector<std::unique_ptr<backend::ModelBackend>>>
create_remote_backends(const ServerConfig &config, const Clock &clock,
                       backend::remote::FindBackend find) {
  std::vector<std::unique_ptr<backend::ModelBackend>> out;
  for (const auto &spec : config.remote_models) {
    GANTRY_ASSIGN_OR_RETURN(auto rc, resolve_remote_model(spec, ::getenv, config.tls_ca_file));
    if (!spec.tokenizer.empty()) {
      GANTRY_ASSIGN_OR_RETURN(rc.tokenizer, load_counter(spec));
    }
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
