#include "server/remote_models_config.h"

#include "backend/remote/remote_backend.h"
#include "server/remote_models_toml.h"
#include "server/toml_keys.h"

namespace gantry::server {
namespace {

Status check_url(const std::string &key, const std::string &url) {
  if (!url.starts_with("http://") && !url.starts_with("https://"))
    return config_error(key, "expected an http:// or https:// URL, got '" + url + "'");
  std::string u = url;
  while (!u.empty() && u.back() == '/')
    u.pop_back();
  if (!u.ends_with("/v1"))
    return config_error(key, "the URL must end in /v1 (the OpenAI API's base), got '" + url + "'");
  return Ok();
}

using toml_keys::Custom;
using toml_keys::Key;
using toml_keys::Range;
using toml_keys::read_table;
using toml_keys::Refused;

constexpr Refused kNoKeys{"API keys never go in the config: use api_key_env or api_key_file"};
constexpr Range kNonNeg = Range::kNonNegative;

const Key<RemoteBackendSpec> kBackendKeys[] = {
    {"url", &RemoteBackendSpec::url},
    {"model", &RemoteBackendSpec::model},
    {"weight", &RemoteBackendSpec::weight, kNonNeg},
    {"max_concurrent", &RemoteBackendSpec::max_concurrent, kNonNeg},
    {"api_key_env", &RemoteBackendSpec::api_key_env},
    {"api_key_file", &RemoteBackendSpec::api_key_file},
    {"kind", &RemoteBackendSpec::kind},
    {"tls_ca_file", &RemoteBackendSpec::tls_ca_file},
    {"api_key", kNoKeys},
};

Status read_fallbacks(const toml::node &n, RemoteModelSpec &s, const std::string &key) {
  const toml::array *a = n.as_array();
  if (!a)
    return config_error(key, "expected a list of model names");
  for (const auto &f : *a) {
    auto v = f.value<std::string>();
    if (!v)
      return config_error(key, "expected a list of model names");
    s.fallbacks.push_back(*v);
  }
  return Ok();
}

Status read_backends(const toml::node &n, RemoteModelSpec &s, const std::string &key) {
  const toml::array *bs = n.as_array();
  if (!bs || bs->empty())
    return config_error(key, "expected a non-empty list of backend tables");
  for (std::size_t i = 0; i < bs->size(); ++i) {
    const std::string bp = key + "[" + std::to_string(i) + "].";
    const toml::table *bt = (*bs)[i].as_table();
    if (!bt)
      return config_error(bp, "expected a table { url = ... }");
    RemoteBackendSpec b;
    GANTRY_TRY(read_table(*bt, std::span(kBackendKeys), b, bp));
    GANTRY_TRY(check_url(bp + "url", b.url));
    s.backends.push_back(std::move(b));
  }
  return Ok();
}

const Key<RemoteModelSpec> kRemoteModelKeys[] = {
    {"name", &RemoteModelSpec::name},
    {"backends", Custom<RemoteModelSpec>{read_backends}},
    {"fallbacks", Custom<RemoteModelSpec>{read_fallbacks}},
    {"routing", &RemoteModelSpec::routing},
    {"price_input_per_mtok", &RemoteModelSpec::price_input_per_mtok},
    {"price_output_per_mtok", &RemoteModelSpec::price_output_per_mtok},
    {"breaker_usd_per_minute", &RemoteModelSpec::breaker_usd_per_minute},
    {"breaker_window_s", &RemoteModelSpec::breaker_window_s, kNonNeg},
    {"breaker_cooldown_s", &RemoteModelSpec::breaker_cooldown_s, kNonNeg},
    {"timeout_connect_s", &RemoteModelSpec::timeout_connect_s},
    {"timeout_first_byte_s", &RemoteModelSpec::timeout_first_byte_s},
    {"timeout_idle_s", &RemoteModelSpec::timeout_idle_s},
    {"timeout_total_s", &RemoteModelSpec::timeout_total_s},
    {"max_attempts", &RemoteModelSpec::max_attempts, kNonNeg},
    {"max_queue", &RemoteModelSpec::max_queue, kNonNeg},
    {"probe_path", &RemoteModelSpec::probe_path},
    {"probe_interval_s", &RemoteModelSpec::probe_interval_s},
    {"eject_after", &RemoteModelSpec::eject_after, kNonNeg},
    {"eject_base_s", &RemoteModelSpec::eject_base_s},
    {"tokenizer", &RemoteModelSpec::tokenizer},
    {"estimate_bytes_per_token", &RemoteModelSpec::estimate_bytes_per_token},
    {"api_key", kNoKeys},
};

} // namespace

bool is_remote_model_arg(const std::string &arg) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos)
    return false;
  const std::string v = arg.substr(eq + 1);
  return v.starts_with("http://") || v.starts_with("https://");
}

Status add_remote_model_arg(const std::string &arg, std::vector<RemoteModelSpec> &models) {
  const auto eq = arg.find('=');
  const std::string name = arg.substr(0, eq);
  const std::string url = arg.substr(eq + 1);
  if (name.empty())
    return config_error("model", "expected NAME=URL, got '" + arg + "'");
  GANTRY_TRY(check_url("model", url));
  RemoteBackendSpec b;
  b.url = url;
  for (auto &m : models) {
    if (m.name == name) {
      m.backends.push_back(std::move(b));
      return Ok();
    }
  }
  RemoteModelSpec m;
  m.name = name;
  m.backends.push_back(std::move(b));
  models.push_back(std::move(m));
  return Ok();
}

Result<RemoteModelSpec> read_remote_model_table(const toml::table &t, const std::string &p) {
  RemoteModelSpec s;
  GANTRY_TRY(read_table(t, std::span(kRemoteModelKeys), s, p));
  if (s.name.empty())
    return config_error(p + "name", "is required for a remote model");
  if (s.backends.empty())
    return config_error(p + "backends", "expected a non-empty list of backend tables");
  return s;
}

Status validate_remote_models(const std::vector<RemoteModelSpec> &models) {
  for (std::size_t i = 0; i < models.size(); ++i) {
    const auto &m = models[i];
    const std::string p = "models." + m.name + ".";
    if (m.routing != "least" && m.routing != "prefix")
      return config_error(p + "routing", "must be \"least\" or \"prefix\"");
    if (m.max_attempts < 1)
      return config_error(p + "max_attempts", "must be at least 1");
    if (m.eject_after < 1)
      return config_error(p + "eject_after", "must be at least 1");
    if (m.breaker_window_s < 1)
      return config_error(p + "breaker_window_s", "must be at least 1");
    if (!(m.estimate_bytes_per_token >= 1 && m.estimate_bytes_per_token <= 16))
      return config_error(p + "estimate_bytes_per_token", "must be between 1 and 16");
    for (std::size_t j = 0; j < m.backends.size(); ++j) {
      const auto &b = m.backends[j];
      const std::string bp = p + "backends[" + std::to_string(j) + "].";
      if (auto k = backend::remote::backend_kind_from_name(b.kind); !k)
        return config_error(bp + "kind", k.error().message);
      if (b.weight < 1)
        return config_error(bp + "weight", "must be at least 1");
      if (!b.api_key_env.empty() && !b.api_key_file.empty())
        return config_error(bp + "api_key_env", "give api_key_env or api_key_file, not both");
    }
    for (const auto &f : m.fallbacks)
      if (f == m.name)
        return config_error(p + "fallbacks", "a model cannot fall back to itself");
  }
  return Ok();
}

Result<backend::remote::RemoteModelConfig>
resolve_remote_model(const RemoteModelSpec &spec,
                     const std::function<const char *(const char *)> &getenv,
                     const std::string &default_tls_ca_file) {
  using namespace std::chrono;
  backend::remote::RemoteModelConfig c;
  c.name = spec.name;
  auto ms = [](double s) { return milliseconds(static_cast<int64_t>(s * 1000)); };
  c.connect_timeout = ms(spec.timeout_connect_s);
  c.first_byte_timeout = ms(spec.timeout_first_byte_s);
  c.idle_timeout = ms(spec.timeout_idle_s);
  c.total_timeout = ms(spec.timeout_total_s);
  c.max_attempts = spec.max_attempts;
  c.estimate_bytes_per_token = spec.estimate_bytes_per_token;
  c.probe_path = spec.probe_path;
  c.probe_interval = ms(spec.probe_interval_s);
  c.pool.prefix_affinity = spec.routing == "prefix";
  c.pool.max_queue = spec.max_queue;
  c.pool.eject_after = spec.eject_after;
  c.pool.eject_base = ms(spec.eject_base_s);
  for (std::size_t i = 0; i < spec.backends.size(); ++i) {
    const auto &b = spec.backends[i];
    const std::string key = "models." + spec.name + ".backends[" + std::to_string(i) + "]";
    backend::remote::RemoteEndpointConfig e;
    e.url = b.url;
    e.model = b.model;
    e.weight = b.weight;
    e.max_concurrent = b.max_concurrent;
    GANTRY_ASSIGN_OR_RETURN(e.kind, backend::remote::backend_kind_from_name(b.kind));
    e.tls_ca_file = b.tls_ca_file.empty() ? default_tls_ca_file : b.tls_ca_file;
    if (!b.api_key_env.empty()) {
      if (const char *v = getenv(b.api_key_env.c_str()))
        e.api_key = v;
      if (e.api_key.empty())
        return config_error(key + ".api_key_env",
                            "the environment variable " + b.api_key_env + " is not set");
    } else if (!b.api_key_file.empty()) {
      e.api_key = read_secret_file(b.api_key_file);
      if (e.api_key.empty())
        return config_error(key + ".api_key_file", "cannot read a key from " + b.api_key_file);
    } else if (e.kind != backend::remote::BackendKind::kOpenAICompatible) {
      return config_error(key, "a hosted backend needs api_key_env or api_key_file");
    }
    c.endpoints.push_back(std::move(e));
  }
  return c;
}

} // namespace gantry::server
