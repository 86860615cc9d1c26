// The TOML side of ServerConfig: the file is read through key tables (toml_keys.h), one line per
// key, so the unknown-key check and the reading can never disagree.
#include <toml++/toml.h>

#include <cstdio>
#include <filesystem>

#include "server/autoscale_config.h"
#include "server/config.h"
#include "server/remote_models_toml.h"
#include "server/toml_keys.h"

namespace gantry::server {
namespace {

using toml_keys::Custom;
using toml_keys::Key;
using toml_keys::Millis;
using toml_keys::Range;
using toml_keys::read_table;
using toml_keys::Refused;
using toml_keys::Secs;

const Key<CacheConfig> kCacheKeys[] = {
    {"enabled", &CacheConfig::enabled},
    {"share_across_projects", &CacheConfig::share_across_projects},
    {"max_bytes", &CacheConfig::max_bytes},
    {"embedding_max_bytes", &CacheConfig::embedding_max_bytes},
    {"ttl_s", Secs<CacheConfig>{&CacheConfig::ttl, 1}},
};

const Key<RedisConfig> kRedisKeys[] = {
    {"url", &RedisConfig::url},
    {"password_file", &RedisConfig::password_file},
    {"fail_rate_limits", &RedisConfig::fail_rate_limits},
    {"fail_budgets", &RedisConfig::fail_budgets},
    {"lease_ttl_s", Millis<RedisConfig>{&RedisConfig::lease_ttl, 1000}, Range::kPositive},
    {"timeout_ms", Millis<RedisConfig>{&RedisConfig::timeout, 1}, Range::kPositive},
    {"pool_size", &RedisConfig::pool_size, Range::kPositive},
    {"password", Refused{"secrets are not read from the config file; use password_file or "
                         "GANTRY_REDIS_URL"}},
};

Status read_node_id(const toml::node &n, JobsConfig &c, const std::string &key) {
  auto v = n.value<std::string>();
  if (!v || v->empty() || v->size() > 64)
    return config_error(key, "expected a non-empty string of at most 64 characters");
  c.node_id = *v;
  return Ok();
}

Status read_weights(const toml::node &n, JobsConfig &c, const std::string &key) {
  const toml::table *wt = n.as_table();
  if (!wt)
    return config_error(key, "expected a table of project = weight");
  for (const auto &[project, v] : *wt) {
    auto w = v.value<int64_t>();
    if (!w || *w < 1 || *w > 1000)
      return config_error(key + "." + std::string(project.str()), "expected 1..1000");
    c.weights[std::string(project.str())] = static_cast<int>(*w);
  }
  return Ok();
}

// Counts and byte caps of stored work: 0 means unbounded, so only negatives are refused.
constexpr Range kCap = Range::kNonNegative;
const Key<JobsConfig> kJobKeys[] = {
    {"workers", &JobsConfig::workers},
    {"max_queued_jobs", &JobsConfig::max_queued_jobs},
    {"max_attempts", &JobsConfig::max_attempts},
    {"max_wait_s", &JobsConfig::max_wait_s},
    {"visibility_s", Millis<JobsConfig>{&JobsConfig::visibility, 1000}},
    {"retry_base_ms", Millis<JobsConfig>{&JobsConfig::retry_base, 1}},
    {"retention_h", Millis<JobsConfig>{&JobsConfig::retention, 3'600'000}},
    {"file_retention_h", Millis<JobsConfig>{&JobsConfig::file_retention, 3'600'000}},
    {"webhook_retry_base_ms", Millis<JobsConfig>{&JobsConfig::webhook_retry_base, 1}},
    {"webhook_allow_loopback", &JobsConfig::webhook_allow_loopback},
    {"webhook_allow_private", &JobsConfig::webhook_allow_private},
    {"webhook_workers", &JobsConfig::webhook_workers},
    {"weights", Custom<JobsConfig>{read_weights}},
    {"node_id", Custom<JobsConfig>{read_node_id}},
    {"max_stored_jobs", &JobsConfig::max_stored_jobs, kCap},
    {"max_stored_job_bytes", &JobsConfig::max_stored_job_bytes, kCap},
    {"max_files", &JobsConfig::max_files, kCap},
    {"max_file_bytes", &JobsConfig::max_file_bytes, kCap},
    {"max_upload_bytes", &JobsConfig::max_upload_bytes, kCap},
    {"max_batch_output_bytes", &JobsConfig::max_batch_output_bytes, kCap},
    {"max_waiters", &JobsConfig::max_waiters, kCap},
};

const Key<ModelSpec> kModelKeys[] = {
    {"path", &ModelSpec::path},
    {"name", &ModelSpec::name},
    {"threads", &ModelSpec::threads},
    {"max_seqs", &ModelSpec::max_seqs},
    {"max_batch_tokens", &ModelSpec::max_batch_tokens},
    {"kv_mb", &ModelSpec::kv_mb},
    {"ctx", &ModelSpec::ctx},
    {"chat_template", &ModelSpec::chat_template},
    {"prefix_cache", &ModelSpec::prefix_cache},
    {"price_input_per_mtok", &ModelSpec::price_input_per_mtok},
    {"price_output_per_mtok", &ModelSpec::price_output_per_mtok},
    {"price_per_hour", &ModelSpec::price_per_hour},
    {"breaker_usd_per_minute", &ModelSpec::breaker_usd_per_minute},
    {"breaker_window_s", &ModelSpec::breaker_window_s},
    {"breaker_cooldown_s", &ModelSpec::breaker_cooldown_s},
};

// `[[models]]`: a table with `backends` is a remote model (remote_models_config.cpp), any other
// a GGUF file. `file` is the config's path: relative model paths are relative to it, so a config
// can be run from anywhere.
Status read_models(const toml::node &n, ServerConfig &c, const std::string &key,
                   const std::string &file) {
  const toml::array *arr = n.as_array();
  if (!arr)
    return config_error(key, "expected an array of tables ([[models]])");
  c.models.clear();
  c.remote_models.clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const std::string at = key + "[" + std::to_string(i) + "]";
    const toml::table *m = (*arr)[i].as_table();
    if (!m)
      return config_error(at, "expected a table");
    if (m->contains("backends")) {
      GANTRY_ASSIGN_OR_RETURN(RemoteModelSpec r, read_remote_model_table(*m, at + "."));
      c.remote_models.push_back(std::move(r));
      continue;
    }
    ModelSpec s;
    GANTRY_TRY(read_table(*m, std::span(kModelKeys), s, at + "."));
    if (s.path.empty())
      return config_error(at + ".path", "is required");
    // The error_code overloads: a path the OS refuses (longer than NAME_MAX, found by
    // config_toml_fuzz) must not throw out of start-up; loading it then fails with its name.
    std::error_code ec;
    if (std::filesystem::path(s.path).is_relative() && !std::filesystem::exists(s.path, ec)) {
      auto alt = std::filesystem::path(file).parent_path() / s.path;
      if (std::filesystem::exists(alt, ec))
        s.path = alt.string();
    }
    if (!m->contains("name"))
      s.name = std::filesystem::path(s.path).stem().string();
    c.models.push_back(std::move(s));
  }
  return Ok();
}

const Key<ServerConfig> kLimitKeys[] = {
    {"rpm", &ServerConfig::global_rpm},
    {"tpm", &ServerConfig::global_tpm},
    {"max_concurrent", &ServerConfig::global_max_concurrent},
};

const Key<ServerConfig> kBackupKeys[] = {
    {"interval_h", Secs<ServerConfig>{&ServerConfig::backup_interval, 3600}},
    {"keep", &ServerConfig::backup_keep, Range::kPositive},
    {"dir", &ServerConfig::backup_dir},
};

const Key<ServerConfig> kAlertKeys[] = {
    {"webhook_url", &ServerConfig::alert_webhook_url},
    {"webhook_secret",
     Refused{"secrets are not read from the config file; set GANTRY_ALERT_WEBHOOK_SECRET"}},
};

template <auto &Keys> Status sub_table(const toml::node &n, ServerConfig &c, const std::string &k) {
  return read_table(n, std::span(Keys), c, k);
}

// The top level. `models` is read apart (it needs the file's path), after the rest.
const Key<ServerConfig> kTopKeys[] = {
    {"role", &ServerConfig::role},
    {"advertise_url", &ServerConfig::advertise_url},
    {"worker_heartbeat_ms", Millis<ServerConfig>{&ServerConfig::worker_heartbeat, 1},
     Range::kPositive},
    {"worker_ttl_ms", Millis<ServerConfig>{&ServerConfig::worker_ttl, 1}, Range::kPositive},
    {"worker_token_file", &ServerConfig::worker_token_file},
    {"worker_token_env", &ServerConfig::worker_token_env},
    {"max_workers", &ServerConfig::max_workers, Range::kPositive},
    {"worker_routing", &ServerConfig::worker_routing},
    {"worker_token", Refused{"secrets are not read from the config file; use worker_token_file or "
                             "worker_token_env"}},
    {"host", &ServerConfig::host},
    {"port", &ServerConfig::port},
    {"data_dir", &ServerConfig::data_dir},
    {"database_url", &ServerConfig::database_url},
    {"io_threads", &ServerConfig::io_threads},
    {"max_queued_requests", &ServerConfig::max_queued_requests},
    {"max_queued_tokens", &ServerConfig::max_queued_tokens},
    {"default_max_tokens", &ServerConfig::default_max_tokens},
    {"max_body_bytes", &ServerConfig::max_body_bytes},
    {"max_connections", &ServerConfig::max_connections},
    {"max_inflight_body_bytes", &ServerConfig::max_inflight_body_bytes},
    {"header_timeout_s", Millis<ServerConfig>{&ServerConfig::header_timeout, 1000}},
    {"body_timeout_s", Millis<ServerConfig>{&ServerConfig::body_timeout, 1000}},
    {"idle_timeout_s", Millis<ServerConfig>{&ServerConfig::idle_timeout, 1000}},
    {"shutdown_grace_s", Millis<ServerConfig>{&ServerConfig::shutdown_grace, 1000}},
    {"drain_s", Millis<ServerConfig>{&ServerConfig::shutdown_grace, 1000}},
    {"replica_price_per_hour", &ServerConfig::replica_price_per_hour},
    {"models_max", &ServerConfig::models_max, Range::kNonNegative},
    {"models_max_bytes", &ServerConfig::models_max_bytes},
    {"ready_cache_s", Millis<ServerConfig>{&ServerConfig::ready_cache, 1000}},
    {"auth", &ServerConfig::auth},
    {"ledger_flush_ms", Millis<ServerConfig>{&ServerConfig::ledger_flush, 1}, Range::kPositive},
    {"key_poll_ms", Millis<ServerConfig>{&ServerConfig::key_poll, 1}, Range::kPositive},
    {"ledger_retention_days", Millis<ServerConfig>{&ServerConfig::ledger_retention, 86'400'000},
     Range::kNonNegative},
    {"idempotency_max_bytes", &ServerConfig::idempotency_max_bytes},
    {"metrics", &ServerConfig::metrics},
    {"request_log", &ServerConfig::request_log},
    {"request_log_max_mb", &ServerConfig::request_log_max_mb},
    {"request_log_keep", &ServerConfig::request_log_keep},
    {"instance_id", &ServerConfig::instance_id},
    {"sentry_dsn", &ServerConfig::sentry_dsn},
    {"tls_ca_file", &ServerConfig::tls_ca_file},
    {"environment", &ServerConfig::environment},
    {"admin_port", &ServerConfig::admin_port},
    {"admin_host", &ServerConfig::admin_host},
    {"limits", Custom<ServerConfig>{sub_table<kLimitKeys>}},
    {"backup", Custom<ServerConfig>{sub_table<kBackupKeys>}},
    {"alerts", Custom<ServerConfig>{sub_table<kAlertKeys>}},
    {"cache", Custom<ServerConfig>{[](const toml::node &n, ServerConfig &c, const std::string &k) {
       return read_table(n, std::span(kCacheKeys), c.cache, k);
     }}},
    {"jobs", Custom<ServerConfig>{[](const toml::node &n, ServerConfig &c, const std::string &k) {
       return read_table(n, std::span(kJobKeys), c.jobs, k);
     }}},
    {"redis", Custom<ServerConfig>{[](const toml::node &n, ServerConfig &c, const std::string &k) {
       return read_table(n, std::span(kRedisKeys), c.redis, k);
     }}},
    {"autoscale", Custom<ServerConfig>{read_autoscale}},
    {"models", Custom<ServerConfig>{[](const toml::node &, ServerConfig &, const std::string &) {
       return Ok(); // read below, with the file's path
     }}},
};

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable when its whitespace classifier meets code
// points U+00A1..U+0499, even inside strings of a malformed document (found by
// tests/fuzz/config_toml_fuzz). So toml++ only ever sees ASCII: non-ASCII characters in basic
// strings become \uXXXX escapes, literal strings become basic strings, comments lose them, and
// anywhere else (where TOML does not allow them) the file is refused with the line number.
struct AsciiToml {
  std::string text;
  std::string error; // empty when ok
};

bool decode_utf8(std::string_view s, size_t &i, uint32_t &cp) {
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

AsciiToml ascii_toml(std::string_view in) {
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

} // namespace

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
  GANTRY_TRY(read_table(t, std::span(kTopKeys), c, ""));
  if (auto *n = t.get("models"))
    GANTRY_TRY(read_models(*n, c, "models", path));
  return Ok();
}

} // namespace gantry::server
