#include "server/config.h"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "control/key_authenticator.h"
#include "server/autoscale_config.h"

extern char **environ;

namespace gantry::server {

Error config_error(const std::string &key, const std::string &msg) {
  return Error{ErrorCode::kInvalidArgument, "config '" + key + "': " + msg, key};
}

namespace {

Result<int64_t> to_int(const std::string &key, const std::string &v) {
  int64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) {
    return config_error(key, "expected an integer, got '" + v + "'");
  }
  return out;
}

std::string stem(const std::string &path) { return std::filesystem::path(path).stem().string(); }

} // namespace

std::string read_secret_file(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    return {};
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  return s;
}

Result<ModelSpec> parse_model_arg(const std::string &arg) {
  ModelSpec m;
  auto eq = arg.find('=');
  if (eq == std::string::npos) {
    m.path = arg;
    m.name = stem(arg);
  } else {
    m.name = arg.substr(0, eq);
    m.path = arg.substr(eq + 1);
  }
  if (m.name.empty() || m.path.empty()) {
    return config_error("model", "expected NAME=PATH or PATH, got '" + arg + "'");
  }
  return m;
}

Status ServerConfig::validate() const {
  if (port < 0 || port > 65535)
    return config_error("port", "must be 0..65535");
  if (io_threads < 1 || io_threads > 256)
    return config_error("io_threads", "must be 1..256");
  // A chunked body reserves max_body_bytes up front; a smaller budget would refuse them all.
  if (max_inflight_body_bytes < max_body_bytes)
    return config_error("max_inflight_body_bytes", "must be at least max_body_bytes");
  if (role != "all" && role != "gateway" && role != "worker")
    return config_error("role", "must be \"all\", \"gateway\" or \"worker\", got '" + role + "'");
  if (role != "all") {
    if (redis.url.empty())
      return config_error("role",
                          "role \"" + role +
                              "\" needs Redis (--redis-url, redis.url or GANTRY_REDIS_URL): "
                              "workers register there and gateways read it");
    if (database_url.empty())
      return config_error("role", "role \"" + role +
                                      "\" needs a shared PostgreSQL database (--database-url, "
                                      "database_url or GANTRY_DATABASE_URL): jobs accepted by a "
                                      "gateway are run by workers");
    if (worker_heartbeat < std::chrono::milliseconds(50))
      return config_error("worker_heartbeat_ms", "must be at least 50");
    if (worker_ttl < 2 * worker_heartbeat)
      return config_error("worker_ttl_ms", "must be at least twice worker_heartbeat_ms (one lost "
                                           "heartbeat must not drop a worker)");
    if (max_workers < 1 || max_workers > 4096)
      return config_error("max_workers", "must be 1..4096");
    if (worker_routing != "least" && worker_routing != "prefix")
      return config_error("worker_routing",
                          "must be \"least\" or \"prefix\", got '" + worker_routing + "'");
  }
  if (models_max < 0 || models_max > 1024)
    return config_error("models_max", "must be 0..1024 (0 = every model loaded)");
  if (role == "gateway") // autoscaled models are the exception: its executor runs their workers
    for (const auto &m : models) {
      auto e = autoscale_executors.find(m.name);
      if (e == autoscale_executors.end() || !e->second.managed())
        return config_error("models", "a gateway loads no engine: serve '" + m.name +
                                          "' from a worker (--role worker), name a remote URL, or "
                                          "give it an [autoscale." +
                                          m.name + "] table with executor = \"local\"");
    }
  if (role == "worker") {
    if (models.empty())
      return config_error("models", "a worker needs at least one local model (--model NAME=PATH)");
    if (!remote_models.empty())
      return config_error("models", "a worker serves local models only; remote model '" +
                                        remote_models.front().name + "' belongs on a gateway");
  }
  if (!advertise_url.empty() && !advertise_url.starts_with("http://") &&
      !advertise_url.starts_with("https://"))
    return config_error("advertise_url", "must be an http:// or https:// URL ending in /v1");
  if (models.empty() && remote_models.empty() && role != "gateway")
    return config_error("models", "no model configured");
  for (const auto &[key, v] : {std::pair{"redis.fail_rate_limits", &redis.fail_rate_limits},
                               std::pair{"redis.fail_budgets", &redis.fail_budgets}})
    if (*v != "open" && *v != "closed")
      return config_error(key, "must be \"open\" or \"closed\", got '" + *v + "'");
  if (!database_url.empty() && !database_url.starts_with("postgresql://") &&
      !database_url.starts_with("postgres://"))
    return config_error("database_url", "must start with postgresql://");
  if (!redis.url.empty() && !redis.url.starts_with("redis://"))
    return config_error("redis.url", "must start with redis://");
  // Budgets of a month are seeded from the current month's raw rows after a restart.
  if (ledger_retention.count() > 0 && ledger_retention < std::chrono::hours(24 * 32))
    return config_error("ledger_retention_days",
                        "must be 0 (keep every row) or at least 32: a month's budget counters are "
                        "seeded from that month's rows");
  if (redis.pool_size < 1 || redis.pool_size > 1024)
    return config_error("redis.pool_size", "must be 1..1024");
  if (redis.lease_ttl < std::chrono::seconds(1))
    return config_error("redis.lease_ttl_s", "must be at least 1");
  GANTRY_TRY(validate_remote_models(remote_models));
  GANTRY_TRY(validate_autoscale(*this));
  for (const auto &r : remote_models)
    for (const auto &m : models)
      if (m.name == r.name)
        return config_error("models", "duplicate model name '" + r.name + "'");
  for (size_t i = 0; i < models.size(); ++i) {
    const auto &m = models[i];
    const std::string p = "models[" + std::to_string(i) + "].";
    if (m.name.empty())
      return config_error(p + "name", "must not be empty");
    for (size_t j = 0; j < i; ++j) {
      if (models[j].name == m.name)
        return config_error(p + "name", "duplicate model name '" + m.name + "'");
    }
    if (m.max_seqs < 1)
      return config_error(p + "max_seqs", "must be at least 1");
    if (m.max_batch_tokens < 1)
      return config_error(p + "max_batch_tokens", "must be at least 1");
    if (m.kv_mb < 0)
      return config_error(p + "kv_mb", "must be 0 (auto) or positive");
    if (m.threads < 0)
      return config_error(p + "threads", "must be 0 (auto) or positive");
  }
  if (max_queued_requests < 1)
    return config_error("max_queued_requests", "must be at least 1");
  if (max_queued_tokens < 1)
    return config_error("max_queued_tokens", "must be at least 1");
  if (default_max_tokens < 1)
    return config_error("default_max_tokens", "must be at least 1");
  if (admin_port < -1 || admin_port > 65535) {
    return config_error("admin_port", "must be -1 (off) or 0..65535");
  }
  if (request_log_max_mb < 1)
    return config_error("request_log_max_mb", "must be at least 1");
  if (request_log_keep < 0)
    return config_error("request_log_keep", "must be >= 0");
  if (!control::auth_mode_from_name(auth)) {
    return config_error("auth", "must be \"auto\", \"required\" or \"off\", got '" + auth + "'");
  }
  if (global_rpm < 0 || global_tpm < 0 || global_max_concurrent < 0) {
    return config_error("limits", "limits must be non-negative (0 = none)");
  }
  if (idempotency_max_bytes < 0) {
    return config_error("idempotency_max_bytes", "must not be negative (0 = store nothing)");
  }
  if (!alert_webhook_url.empty() && !alert_webhook_url.starts_with("http://") &&
      !alert_webhook_url.starts_with("https://")) {
    return config_error("alerts.webhook_url", "must be an http:// or https:// URL");
  }
  if (jobs.webhook_workers < 1)
    return config_error("jobs.webhook_workers", "must be at least 1");
  for (size_t i = 0; i < models.size(); ++i) {
    const auto &m = models[i];
    const std::string p = "models[" + std::to_string(i) + "].";
    if (m.breaker_window_s < 1)
      return config_error(p + "breaker_window_s", "must be at least 1");
    if (m.breaker_cooldown_s < 0)
      return config_error(p + "breaker_cooldown_s", "must be >= 0");
  }
  if (cache.ttl.count() < 1)
    return config_error("cache.ttl_s", "must be at least 1");
  if (jobs.workers < 0)
    return config_error("jobs.workers", "must be 0 (auto) or positive");
  if (jobs.max_queued_jobs < 1)
    return config_error("jobs.max_queued_jobs", "must be at least 1");
  if (jobs.max_attempts < 1)
    return config_error("jobs.max_attempts", "must be at least 1");
  if (jobs.visibility.count() < 1000)
    return config_error("jobs.visibility_s", "must be at least 1");
  return Ok();
}

std::vector<std::pair<std::string, std::string>> process_env() {
  std::vector<std::pair<std::string, std::string>> out;
  for (char **e = environ; e && *e; ++e) {
    std::string kv(*e);
    if (!kv.starts_with("GANTRY_"))
      continue;
    auto eq = kv.find('=');
    if (eq == std::string::npos)
      continue;
    out.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return out;
}

Status apply_env(const std::vector<std::pair<std::string, std::string>> &env, ServerConfig &c) {
  for (const auto &[k, v] : env) {
    if (k == "GANTRY_HOST") {
      c.host = v;
    } else if (k == "GANTRY_PORT") {
      GANTRY_ASSIGN_OR_RETURN(int64_t p, to_int(k, v));
      c.port = static_cast<int>(p);
    } else if (k == "GANTRY_DATA_DIR") {
      c.data_dir = v;
    } else if (k == "GANTRY_IO_THREADS") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      c.io_threads = static_cast<int>(n);
    } else if (k == "GANTRY_MODEL") {
      // Comma-separated NAME=PATH (or NAME=URL) list; replaces the configured models.
      c.models.clear();
      c.remote_models.clear();
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string one =
            v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty() && is_remote_model_arg(one)) {
          GANTRY_TRY(add_remote_model_arg(one, c.remote_models));
        } else if (!one.empty()) {
          GANTRY_ASSIGN_OR_RETURN(ModelSpec m, parse_model_arg(one));
          c.models.push_back(std::move(m));
        }
        if (comma == std::string::npos)
          break;
        start = comma + 1;
      }
    } else if (k == "GANTRY_THREADS") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      for (auto &m : c.models)
        m.threads = static_cast<int>(n);
    } else if (k == "GANTRY_MAX_QUEUED_REQUESTS") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      c.max_queued_requests = static_cast<int>(n);
    } else if (k == "GANTRY_MAX_QUEUED_TOKENS") {
      GANTRY_ASSIGN_OR_RETURN(c.max_queued_tokens, to_int(k, v));
    } else if (k == "GANTRY_DATABASE_URL") {
      c.database_url = v;
    } else if (k == "GANTRY_REDIS_URL") {
      c.redis.url = v;
    } else if (k == "GANTRY_ROLE") {
      c.role = v;
    } else if (k == "GANTRY_ADVERTISE_URL") {
      c.advertise_url = v;
    } else if (k == "GANTRY_SENTRY_DSN") {
      c.sentry_dsn = v;
    } else if (k == "GANTRY_TLS_CA_FILE") {
      c.tls_ca_file = v;
    } else if (k == "GANTRY_REQUEST_LOG") {
      c.request_log = v;
    } else if (k == "GANTRY_AUTH") {
      c.auth = v;
    } else if (k == "GANTRY_DEFAULT_MAX_TOKENS") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      c.default_max_tokens = static_cast<int>(n);
    } else if (k == "GANTRY_CACHE") {
      if (v != "0" && v != "1" && v != "true" && v != "false") {
        return config_error(k, "expected 0, 1, true or false, got '" + v + "'");
      }
      c.cache.enabled = v == "1" || v == "true";
    } else if (k == "GANTRY_CACHE_MAX_BYTES") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      if (n < 0)
        return config_error(k, "must not be negative");
      c.cache.max_bytes = static_cast<uint64_t>(n);
    } else if (k == "GANTRY_CACHE_TTL_S") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, to_int(k, v));
      c.cache.ttl = std::chrono::seconds(n);
    }
    // Other GANTRY_* names belong to other subcommands or later features; ignored here.
  }
  return Ok();
}

} // namespace gantry::server
