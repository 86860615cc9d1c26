#include "server/config.h"
#include "server/remote_models_toml.h"

#include <toml++/toml.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <tuple>

#include "control/key_authenticator.h"

extern char **environ;

namespace gantry::server {
namespace {

Error config_error(const std::string &key, const std::string &msg) {
  return Error{ErrorCode::kInvalidArgument, "config '" + key + "': " + msg, key};
}

Result<int64_t> to_int(const std::string &key, const std::string &v) {
  int64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) {
    return config_error(key, "expected an integer, got '" + v + "'");
  }
  return out;
}

std::string stem(const std::string &path) { return std::filesystem::path(path).stem().string(); }

template <typename T>
Status read_int(const toml::table &t, const char *key, T &out, const std::string &prefix) {
  if (auto n = t.get(key)) {
    auto v = n->value<int64_t>();
    if (!v)
      return config_error(prefix + key, "expected an integer");
    out = static_cast<T>(*v);
  }
  return Ok();
}

Status read_string(const toml::table &t, const char *key, std::string &out,
                   const std::string &prefix) {
  if (auto n = t.get(key)) {
    auto v = n->value<std::string>();
    if (!v)
      return config_error(prefix + key, "expected a string");
    out = *v;
  }
  return Ok();
}

Status read_double(const toml::table &t, const char *key, double &out, const std::string &prefix) {
  if (auto n = t.get(key)) {
    auto v = n->value<double>();
    if (!v || *v < 0)
      return config_error(prefix + key, "expected a non-negative number");
    out = *v;
  }
  return Ok();
}

Status read_ms(const toml::table &t, const char *key, std::chrono::milliseconds &out) {
  if (auto n = t.get(key)) {
    auto v = n->value<double>();
    if (!v || *v < 0)
      return config_error(key, "expected a non-negative number of seconds");
    out = std::chrono::milliseconds(static_cast<int64_t>(*v * 1000));
  }
  return Ok();
}

Status read_cache_table(const toml::node &n, CacheConfig &c) {
  const toml::table *t = n.as_table();
  if (!t)
    return config_error("cache", "expected a table");
  for (const auto &[k, v] : *t) {
    if (k.str() != "enabled" && k.str() != "max_bytes" && k.str() != "embedding_max_bytes" &&
        k.str() != "ttl_s" && k.str() != "share_across_projects") {
      return config_error("cache." + std::string(k.str()), "unknown key");
    }
  }
  if (auto e = t->get("enabled")) {
    // value<bool>() would also accept 0 and 1; a typed TOML boolean is asked for.
    if (!e->is_boolean())
      return config_error("cache.enabled", "expected true or false");
    c.enabled = *e->value<bool>();
  }
  if (auto e = t->get("share_across_projects")) {
    if (!e->is_boolean())
      return config_error("cache.share_across_projects", "expected true or false");
    c.share_across_projects = *e->value<bool>();
  }
  for (auto [key, out] : {std::pair{"max_bytes", &c.max_bytes},
                          std::pair{"embedding_max_bytes", &c.embedding_max_bytes}}) {
    auto n = static_cast<int64_t>(*out);
    GANTRY_TRY(read_int(*t, key, n, "cache."));
    if (n < 0)
      return config_error("cache." + std::string(key), "must not be negative");
    *out = static_cast<uint64_t>(n);
  }
  int64_t ttl = c.ttl.count();
  GANTRY_TRY(read_int(*t, "ttl_s", ttl, "cache."));
  c.ttl = std::chrono::seconds(ttl);
  return Ok();
}

Status read_jobs_table(const toml::node &n, JobsConfig &c) {
  const toml::table *t = n.as_table();
  if (!t)
    return config_error("jobs", "expected a table");
  static const char *kJobKeys[] = {"workers",
                                   "max_queued_jobs",
                                   "max_attempts",
                                   "visibility_s",
                                   "retry_base_ms",
                                   "retention_h",
                                   "webhook_retry_base_ms",
                                   "webhook_allow_loopback",
                                   "webhook_allow_private",
                                   "webhook_workers",
                                   "max_wait_s",
                                   "weights",
                                   "node_id",
                                   "max_stored_jobs",
                                   "max_stored_job_bytes",
                                   "max_files",
                                   "max_file_bytes",
                                   "file_retention_h",
                                   "max_batch_output_bytes",
                                   "max_waiters"};
  for (const auto &[k, v] : *t) {
    bool known = false;
    for (const char *kk : kJobKeys)
      known |= k.str() == kk;
    if (!known)
      return config_error("jobs." + std::string(k.str()), "unknown key");
  }
  GANTRY_TRY(read_int(*t, "workers", c.workers, "jobs."));
  GANTRY_TRY(read_int(*t, "max_queued_jobs", c.max_queued_jobs, "jobs."));
  GANTRY_TRY(read_int(*t, "max_attempts", c.max_attempts, "jobs."));
  GANTRY_TRY(read_int(*t, "max_wait_s", c.max_wait_s, "jobs."));
  for (auto [key, out] :
       {std::pair{"max_stored_jobs", &c.max_stored_jobs},
        std::pair{"max_stored_job_bytes", &c.max_stored_job_bytes},
        std::pair{"max_files", &c.max_files}, std::pair{"max_file_bytes", &c.max_file_bytes},
        std::pair{"max_batch_output_bytes", &c.max_batch_output_bytes},
        std::pair{"max_waiters", &c.max_waiters}}) {
    GANTRY_TRY(read_int(*t, key, *out, "jobs."));
    if (*out < 0)
      return config_error("jobs." + std::string(key), "must be 0 (unbounded) or positive");
  }
  if (auto n = t->get("node_id")) {
    if (!n->is_string() || n->value<std::string>()->empty() || n->value<std::string>()->size() > 64)
      return config_error("jobs.node_id", "expected a non-empty string of at most 64 characters");
    c.node_id = *n->value<std::string>();
  }
  GANTRY_TRY(read_int(*t, "webhook_workers", c.webhook_workers, "jobs."));
  if (auto w = t->get("weights")) {
    const toml::table *wt = w->as_table();
    if (!wt)
      return config_error("jobs.weights", "expected a table of project = weight");
    for (const auto &[project, v] : *wt) {
      auto n = v.value<int64_t>();
      if (!n || *n < 1 || *n > 1000)
        return config_error("jobs.weights." + std::string(project.str()), "expected 1..1000");
      c.weights[std::string(project.str())] = static_cast<int>(*n);
    }
  }
  for (auto [key, out, scale] : {std::tuple{"visibility_s", &c.visibility, 1000.0},
                                 std::tuple{"retry_base_ms", &c.retry_base, 1.0},
                                 std::tuple{"retention_h", &c.retention, 3'600'000.0},
                                 std::tuple{"file_retention_h", &c.file_retention, 3'600'000.0},
                                 std::tuple{"webhook_retry_base_ms", &c.webhook_retry_base, 1.0}}) {
    if (auto v = t->get(key)) {
      auto d = v->value<double>();
      if (!d || *d < 0)
        return config_error("jobs." + std::string(key), "expected a non-negative number");
      *out = std::chrono::milliseconds(static_cast<int64_t>(*d * scale));
    }
  }
  for (auto [key, out] : {std::pair{"webhook_allow_loopback", &c.webhook_allow_loopback},
                          std::pair{"webhook_allow_private", &c.webhook_allow_private}}) {
    if (auto e = t->get(key)) {
      if (!e->is_boolean())
        return config_error("jobs." + std::string(key), "expected true or false");
      *out = *e->value<bool>();
    }
  }
  return Ok();
}

} // namespace

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
  if (models.empty() && remote_models.empty())
    return config_error("models", "no model configured");
  GANTRY_TRY(validate_remote_models(remote_models));
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
    if (m.kv_mb < 1)
      return config_error(p + "kv_mb", "must be at least 1");
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

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable when its whitespace classifier meets code
// points U+00A1..U+0499, even inside strings of a malformed document (found by
// tests/fuzz/config_toml_fuzz). So toml++ only ever sees ASCII: non-ASCII characters in basic
// strings become \uXXXX escapes, literal strings become basic strings, comments lose them, and
// anywhere else (where TOML does not allow them) the file is refused with the line number.
struct AsciiToml {
  std::string text;
  std::string error; // empty when ok
};

static bool decode_utf8(std::string_view s, size_t &i, uint32_t &cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (b0 >= 0xF8 || len == 0 || i + len > s.size())
    return false;
  cp = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80)
      return false;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return false;
  i += len;
  return true;
}

static AsciiToml ascii_toml(std::string_view in) {
  AsciiToml out;
  std::string &o = out.text;
  o.reserve(in.size());
  int line = 1;
  size_t i = 0;
  auto fail = [&](const char *what) {
    out.error = std::string(what) + " at line " + std::to_string(line);
    return out;
  };
  auto starts = [&](std::string_view t) { return in.substr(i, t.size()) == t; };
  // Copies one character of string content as ASCII: escapes are kept as they are in basic
  // strings; in literal strings (converted to basic) backslashes and quotes are escaped.
  auto put_char = [&](bool literal) -> bool {
    const char ch = in[i];
    if (static_cast<unsigned char>(ch) < 0x80) {
      if (ch == '\n')
        ++line;
      if (literal && (ch == '\\' || ch == '"'))
        o += '\\';
      o += ch;
      ++i;
      return true;
    }
    uint32_t cp = 0;
    if (!decode_utf8(in, i, cp))
      return false;
    char buf[16];
    std::snprintf(buf, sizeof buf, cp > 0xFFFF ? "\\U%08X" : "\\u%04X", cp);
    o += buf;
    return true;
  };
  while (i < in.size()) {
    const char ch = in[i];
    if (ch == '#') {
      while (i < in.size() && in[i] != '\n') {
        if (static_cast<unsigned char>(in[i]) < 0x80)
          o += in[i];
        ++i;
      }
    } else if (starts("\"\"\"") || starts("'''")) {
      const bool literal = ch == '\'';
      const std::string_view close = in.substr(i, 3);
      o += "\"\"\"";
      i += 3;
      while (i < in.size() && !starts(close)) {
        if (!literal && in[i] == '\\' && i + 1 < in.size()) {
          o += in[i++];
          if (in[i] == '\n')
            ++line;
          o += in[i++];
          continue;
        }
        if (!put_char(literal))
          return fail("invalid UTF-8 in a string");
      }
      if (i < in.size()) {
        o += "\"\"\"";
        i += 3;
      }
    } else if (ch == '"' || ch == '\'') {
      const bool literal = ch == '\'';
      o += '"';
      ++i;
      while (i < in.size() && in[i] != ch && in[i] != '\n') {
        if (!literal && in[i] == '\\' && i + 1 < in.size() && in[i + 1] != '\n') {
          o += in[i++];
          if (static_cast<unsigned char>(in[i]) >= 0x80)
            return fail("invalid escape in a string");
          o += in[i++];
          continue;
        }
        if (!put_char(literal))
          return fail("invalid UTF-8 in a string");
      }
      if (i < in.size() && in[i] == ch) {
        o += '"';
        ++i;
      }
    } else if (static_cast<unsigned char>(ch) >= 0x80) {
      return fail("a non-ASCII character outside a string or comment");
    } else {
      if (ch == '\n')
        ++line;
      o += ch;
      ++i;
    }
  }
  return out;
}

Status apply_toml_file(const std::string &path, ServerConfig &c) {
  toml::table t;
  try {
    std::string text;
    if (FILE *f = std::fopen(path.c_str(), "rb")) {
      char buf[65536];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (64u << 20))
        text.append(buf, n);
      std::fclose(f);
    } else {
      return Error{ErrorCode::kInvalidArgument, "config file " + path + ": cannot be read",
                   "config"};
    }
    AsciiToml ascii = ascii_toml(text);
    if (!ascii.error.empty())
      return Error{ErrorCode::kInvalidArgument, "config file " + path + ": " + ascii.error,
                   "config"};
    t = toml::parse(ascii.text, path);
  } catch (const toml::parse_error &e) {
    return Error{ErrorCode::kInvalidArgument,
                 "config file " + path + ": " + std::string(e.description()) + " at line " +
                     std::to_string(e.source().begin.line),
                 "config"};
  }
  static const char *kKnown[] = {"host",
                                 "port",
                                 "data_dir",
                                 "io_threads",
                                 "models",
                                 "max_queued_requests",
                                 "max_queued_tokens",
                                 "default_max_tokens",
                                 "max_body_bytes",
                                 "max_connections",
                                 "max_inflight_body_bytes",
                                 "header_timeout_s",
                                 "body_timeout_s",
                                 "idle_timeout_s",
                                 "shutdown_grace_s",
                                 "ready_cache_s",
                                 "auth",
                                 "limits",
                                 "alerts",
                                 "ledger_flush_ms",
                                 "idempotency_max_bytes",
                                 "backup",
                                 "metrics",
                                 "request_log",
                                 "request_log_max_mb",
                                 "request_log_keep",
                                 "instance_id",
                                 "sentry_dsn",
                                 "tls_ca_file",
                                 "environment",
                                 "cache",
                                 "admin_port",
                                 "admin_host",
                                 "jobs"};
  for (const auto &[k, v] : t) {
    bool known = false;
    for (const char *kk : kKnown)
      known |= k.str() == kk;
    if (!known)
      return config_error(std::string(k.str()), "unknown key in " + path);
  }
  GANTRY_TRY(read_string(t, "host", c.host, ""));
  GANTRY_TRY(read_int(t, "port", c.port, ""));
  GANTRY_TRY(read_string(t, "data_dir", c.data_dir, ""));
  GANTRY_TRY(read_int(t, "io_threads", c.io_threads, ""));
  GANTRY_TRY(read_int(t, "max_queued_requests", c.max_queued_requests, ""));
  GANTRY_TRY(read_int(t, "max_queued_tokens", c.max_queued_tokens, ""));
  GANTRY_TRY(read_int(t, "default_max_tokens", c.default_max_tokens, ""));
  GANTRY_TRY(read_int(t, "max_body_bytes", c.max_body_bytes, ""));
  GANTRY_TRY(read_int(t, "max_connections", c.max_connections, ""));
  GANTRY_TRY(read_int(t, "max_inflight_body_bytes", c.max_inflight_body_bytes, ""));
  GANTRY_TRY(read_ms(t, "header_timeout_s", c.header_timeout));
  GANTRY_TRY(read_ms(t, "body_timeout_s", c.body_timeout));
  GANTRY_TRY(read_ms(t, "idle_timeout_s", c.idle_timeout));
  GANTRY_TRY(read_ms(t, "shutdown_grace_s", c.shutdown_grace));
  GANTRY_TRY(read_ms(t, "ready_cache_s", c.ready_cache));
  GANTRY_TRY(read_string(t, "auth", c.auth, ""));
  GANTRY_TRY(read_string(t, "request_log", c.request_log, ""));
  GANTRY_TRY(read_int(t, "admin_port", c.admin_port, ""));
  GANTRY_TRY(read_string(t, "admin_host", c.admin_host, ""));
  GANTRY_TRY(read_int(t, "request_log_max_mb", c.request_log_max_mb, ""));
  GANTRY_TRY(read_int(t, "request_log_keep", c.request_log_keep, ""));
  GANTRY_TRY(read_string(t, "instance_id", c.instance_id, ""));
  GANTRY_TRY(read_string(t, "sentry_dsn", c.sentry_dsn, ""));
  GANTRY_TRY(read_string(t, "tls_ca_file", c.tls_ca_file, ""));
  GANTRY_TRY(read_string(t, "environment", c.environment, ""));
  GANTRY_TRY(read_int(t, "idempotency_max_bytes", c.idempotency_max_bytes, ""));
  if (auto n = t.get("metrics")) {
    auto v = n->value<bool>();
    if (!v)
      return config_error("metrics", "expected true or false");
    c.metrics = *v;
  }
  if (auto n = t.get("ledger_flush_ms")) {
    auto v = n->value<int64_t>();
    if (!v || *v < 1)
      return config_error("ledger_flush_ms", "expected a positive integer");
    c.ledger_flush = std::chrono::milliseconds(*v);
  }
  if (auto *l = t["limits"].as_table()) {
    for (const auto &[k, v] : *l) {
      if (k.str() != "rpm" && k.str() != "tpm" && k.str() != "max_concurrent") {
        return config_error("limits." + std::string(k.str()), "unknown key");
      }
    }
    GANTRY_TRY(read_int(*l, "rpm", c.global_rpm, "limits."));
    GANTRY_TRY(read_int(*l, "tpm", c.global_tpm, "limits."));
    GANTRY_TRY(read_int(*l, "max_concurrent", c.global_max_concurrent, "limits."));
  }
  if (auto *b = t["backup"].as_table()) {
    for (const auto &[k, v] : *b) {
      if (k.str() != "interval_h" && k.str() != "keep" && k.str() != "dir") {
        return config_error("backup." + std::string(k.str()), "unknown key");
      }
    }
    if (auto n = b->get("interval_h")) {
      auto v = n->value<double>();
      if (!v || *v < 0)
        return config_error("backup.interval_h", "expected hours >= 0");
      c.backup_interval = std::chrono::seconds(static_cast<int64_t>(*v * 3600));
    }
    GANTRY_TRY(read_int(*b, "keep", c.backup_keep, "backup."));
    GANTRY_TRY(read_string(*b, "dir", c.backup_dir, "backup."));
    if (c.backup_keep < 1)
      return config_error("backup.keep", "must be at least 1");
  }
  if (auto *a = t["alerts"].as_table()) {
    for (const auto &[k, v] : *a) {
      if (k.str() != "webhook_url") {
        return config_error("alerts." + std::string(k.str()),
                            k.str() == "webhook_secret"
                                ? "secrets are not read from the config file; set "
                                  "GANTRY_ALERT_WEBHOOK_SECRET"
                                : "unknown key");
      }
    }
    GANTRY_TRY(read_string(*a, "webhook_url", c.alert_webhook_url, "alerts."));
  }
  if (auto n = t.get("cache"))
    GANTRY_TRY(read_cache_table(*n, c.cache));
  if (auto n = t.get("jobs"))
    GANTRY_TRY(read_jobs_table(*n, c.jobs));
  if (auto *arr = t["models"].as_array()) {
    c.models.clear();
    c.remote_models.clear();
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string p = "models[" + std::to_string(i) + "].";
      auto *m = (*arr)[i].as_table();
      if (!m)
        return config_error("models[" + std::to_string(i) + "]", "expected a table");
      if (m->contains("backends")) { // a remote model
        GANTRY_ASSIGN_OR_RETURN(RemoteModelSpec r, read_remote_model_table(*m, p));
        c.remote_models.push_back(std::move(r));
        continue;
      }
      ModelSpec s;
      GANTRY_TRY(read_string(*m, "path", s.path, p));
      if (s.path.empty())
        return config_error(p + "path", "is required");
      // Relative model paths are relative to the config file, so a config can be run from
      // anywhere.
      if (std::filesystem::path(s.path).is_relative() && !std::filesystem::exists(s.path)) {
        auto alt = std::filesystem::path(path).parent_path() / s.path;
        if (std::filesystem::exists(alt))
          s.path = alt.string();
      }
      s.name = stem(s.path);
      GANTRY_TRY(read_string(*m, "name", s.name, p));
      GANTRY_TRY(read_int(*m, "threads", s.threads, p));
      GANTRY_TRY(read_int(*m, "max_seqs", s.max_seqs, p));
      GANTRY_TRY(read_int(*m, "max_batch_tokens", s.max_batch_tokens, p));
      GANTRY_TRY(read_int(*m, "kv_mb", s.kv_mb, p));
      GANTRY_TRY(read_int(*m, "ctx", s.ctx, p));
      GANTRY_TRY(read_string(*m, "chat_template", s.chat_template, p));
      if (auto n = m->get("prefix_cache")) {
        auto v = n->value<bool>();
        if (!v)
          return config_error(p + "prefix_cache", "expected true or false");
        s.prefix_cache = *v;
      }
      GANTRY_TRY(read_double(*m, "price_input_per_mtok", s.price_input_per_mtok, p));
      GANTRY_TRY(read_double(*m, "price_output_per_mtok", s.price_output_per_mtok, p));
      GANTRY_TRY(read_double(*m, "price_per_hour", s.price_per_hour, p));
      GANTRY_TRY(read_double(*m, "breaker_usd_per_minute", s.breaker_usd_per_minute, p));
      GANTRY_TRY(read_int(*m, "breaker_window_s", s.breaker_window_s, p));
      GANTRY_TRY(read_int(*m, "breaker_cooldown_s", s.breaker_cooldown_s, p));
      for (const auto &[k, v] : *m) {
        static const char *kModelKeys[] = {"path",
                                           "name",
                                           "threads",
                                           "max_seqs",
                                           "max_batch_tokens",
                                           "kv_mb",
                                           "ctx",
                                           "chat_template",
                                           "prefix_cache",
                                           "price_input_per_mtok",
                                           "price_output_per_mtok",
                                           "price_per_hour",
                                           "breaker_usd_per_minute",
                                           "breaker_window_s",
                                           "breaker_cooldown_s"};
        bool known = false;
        for (const char *kk : kModelKeys)
          known |= k.str() == kk;
        if (!known)
          return config_error(p + std::string(k.str()), "unknown key");
      }
      c.models.push_back(std::move(s));
    }
  }
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
