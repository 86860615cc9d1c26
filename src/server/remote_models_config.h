// Remote models in the server configuration: `--model NAME=URL` (http(s) URL ending in /v1;
// repeating NAME makes a pool) and TOML `[[models]]` tables with `backends = [...]`. Parsed
// here, apart from config.cpp's local-model keys, and turned into the RemoteBackend's config
// at start-up (API keys are read from the environment or a file then, never from the config).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"

namespace gantry::backend::remote {
struct RemoteModelConfig;
}

namespace gantry::server {

struct RemoteBackendSpec {
  std::string url;   // http(s)://host[:port]/.../v1
  std::string model; // upstream model id; "" = the only one its /v1/models lists
  int weight = 1;
  int max_concurrent = 0;                 // 0 = unbounded
  std::string api_key_env;                // the key is read from this variable...
  std::string api_key_file;               // ...or this file (never written in the config itself)
  std::string kind = "openai-compatible"; // | "openai" | "anthropic"
  std::string tls_ca_file;                // extra trusted CAs for this backend
};

struct RemoteModelSpec {
  std::string name;
  std::vector<RemoteBackendSpec> backends;
  std::vector<std::string> fallbacks; // other served models, tried in order
  std::string routing = "least";      // "least" (P2C least outstanding) | "prefix"
  double price_input_per_mtok = 0;
  double price_output_per_mtok = 0;
  double breaker_usd_per_minute = 0;
  int breaker_window_s = 60;
  int breaker_cooldown_s = 300;
  double timeout_connect_s = 5;
  double timeout_first_byte_s = 120;
  double timeout_idle_s = 60;
  double timeout_total_s = 600;
  int max_attempts = 3;
  int max_queue = 64; // requests waiting for a backend slot (max_concurrent); beyond: 429
  std::string probe_path = "/models"; // below the URL; "" = no active probes
  double probe_interval_s = 5;
  int eject_after = 3;
  double eject_base_s = 1;
  // A GGUF file whose vocabulary is the upstream model's: prompts are then counted exactly for
  // admission. Without it, a prompt is estimated at estimate_bytes_per_token (plus 4 tokens a
  // chat message) and settled on the backend's reported usage.
  std::string tokenizer;
  double estimate_bytes_per_token = 4;
};

// True when `arg` is NAME=http(s)://... (a remote model), false for NAME=PATH / PATH.
bool is_remote_model_arg(const std::string &arg);
// Adds NAME=URL to `models`: a new model, or one more backend of an existing NAME.
Status add_remote_model_arg(const std::string &arg, std::vector<RemoteModelSpec> &models);
Status validate_remote_models(const std::vector<RemoteModelSpec> &models);

// The adapter's config, with API keys read through `getenv` (::getenv in the server) or files.
Result<backend::remote::RemoteModelConfig>
resolve_remote_model(const RemoteModelSpec &spec,
                     const std::function<const char *(const char *)> &getenv,
                     const std::string &default_tls_ca_file);

} // namespace gantry::server
