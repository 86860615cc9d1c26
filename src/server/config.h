// Server configuration, resolved once at start-up from (in increasing precedence) built-in
// defaults, a TOML file (--config), GANTRY_* environment variables and command-line flags, then
// validated. Bad values stop start-up with a message naming the key.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace gantry::server {

struct ModelSpec {
  std::string name; // served as this "model" id
  std::string path;
  int threads = 0;             // 0 = one per core
  int max_seqs = 16;           // sequences generating together
  int max_batch_tokens = 512;  // tokens per engine step (decode + prefill chunks)
  int kv_mb = 1024;            // KV cache budget
  int ctx = 0;                 // per-sequence context; 0 = the model's
  std::string chat_template;   // force a template family by name; empty = detect from GGUF
  bool prefix_cache = true;    // reuse KV blocks across requests sharing a prompt prefix
};

// The response and embedding caches (README, "Caching"); `[cache]` in TOML.
struct CacheConfig {
  bool enabled = true;
  uint64_t max_bytes = uint64_t{64} << 20;           // response cache, keys + values + overhead
  uint64_t embedding_max_bytes = uint64_t{16} << 20; // embedding cache, likewise
  std::chrono::seconds ttl{3600};                    // default lifetime of an entry
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string data_dir = "./gantry-data";
  int io_threads = 2;
  std::vector<ModelSpec> models;

  int max_queued_requests = 256; // per model, beyond which requests get 429
  int64_t max_queued_tokens = 1 << 20;
  int default_max_tokens = 512;  // when a request gives no max_tokens (capped by the context)
  size_t max_body_bytes = 8 << 20;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds shutdown_grace{30'000};
  std::chrono::milliseconds ready_cache{5'000};
  CacheConfig cache;

  Status validate() const;
};

// "name=path" or "path" (name = file stem).
Result<ModelSpec> parse_model_arg(const std::string &arg);

// Applies a TOML file onto `config`. Unknown keys are errors (they are usually typos).
Status apply_toml_file(const std::string &path, ServerConfig &config);
// Applies GANTRY_* variables from `env` (pairs of name, value).
Status apply_env(const std::vector<std::pair<std::string, std::string>> &env,
                 ServerConfig &config);
std::vector<std::pair<std::string, std::string>> process_env();

} // namespace gantry::server
