// The node's own models (its [[models]] entries): one LocalBackend each, loaded at start-up — or,
// with models_max / models_max_bytes (placement, issue 14), a ModelHost that keeps at most that
// many loaded and loads the others on demand (least recently used idle one unloaded first). Either
// way each model is one permanent ModelRegistry entry.
//
// With a budget every file is opened at start-up anyway (header and digest only): a bad path or
// an unsupported file stops start-up instead of failing the first request for it.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "api/chat_template.h"
#include "backend/hosted/model_host.h"
#include "core/clock.h"
#include "core/result.h"
#include "server/config.h"
#include "server/model_registry.h"

namespace gantry::server {

// A model this process serves, as `gantry serve` reports it at start-up.
struct LocalModel {
  ModelSpec spec;
  api::ChatFormat chat_format = api::ChatFormat::kPlain;
  bool template_recognized = true;
  bool embeddings_only = false; // an encoder (bert, nomic-bert): /v1/embeddings only
};

using ModelLoadProgress = std::function<void(const std::string &model, uint64_t, uint64_t)>;

struct LocalModelsBuilt {
  std::vector<LocalModel> models;
  std::unique_ptr<backend::ModelHost> host; // set when a budget applies
};

// Adds every local model of `config` to `registry`. The host (when a budget applies) must
// outlive the registry's entries: destroy the registry's engines (clear()) first.
Result<LocalModelsBuilt> add_local_models(const ServerConfig &config, const Clock &clock,
                                          ModelRegistry &registry,
                                          const ModelLoadProgress &progress,
                                          std::function<void(const std::string &)> log);

// gantry:model_loads_total / model_unloads_total /
// model_load_failures_total{model_name}, gantry:models_loaded_bytes.
void render_placement_metrics(const backend::ModelHost &host, const ServerConfig &config,
                              std::ostream &out);

} // namespace gantry::server
