#include "server/local_models.h"

#include <filesystem>

#include "backend/hosted/hosted_backend.h"
#include "backend/local/local_backend.h"
#include "engine/batch/engine.h"
#include "engine/gguf/gguf.h"
#include "engine/model/bert.h"
#include "engine/model/model.h"
#include "engine/model/model_config.h"
#include "server/metrics_text.h"
#include "server/model_digest.h"

namespace gantry::server {
namespace {

Error about(const ModelSpec &spec, Error e) {
  e.message = "model '" + spec.name + "' (" + spec.path + "): " + e.message;
  return e;
}

// The KV budget: kv_mb, or (0) what max_seqs sequences at full context hold, at most 1 GiB.
size_t kv_bytes(const ModelSpec &spec, const engine::ModelConfig &mc) {
  return spec.kv_mb > 0
             ? static_cast<size_t>(spec.kv_mb) << 20
             : engine::kv_bytes_for_context(mc, spec.ctx, spec.max_seqs, size_t{1024} << 20);
}

// The chat format: the configured one, else detected from the file's template.
Result<LocalModel> describe(const ModelSpec &spec, const gguf::GgufFile &file) {
  LocalModel lm;
  lm.spec = spec;
  if (!spec.chat_template.empty()) {
    GANTRY_ASSIGN_OR_RETURN(lm.chat_format, api::chat_format_from_name(spec.chat_template));
  } else {
    auto tmpl = file.get_string("tokenizer.chat_template");
    auto det = api::detect_chat_format(tmpl ? *tmpl : std::string_view());
    lm.chat_format = det.format;
    lm.template_recognized = det.recognized;
  }
  if (auto arch = file.get_string("general.architecture"))
    lm.embeddings_only = engine::is_encoder_arch(*arch);
  return lm;
}

// Loads the weights and starts the engine. `known`: the description read before (a hosted
// model); null: read it from the loaded file.
Result<std::pair<LocalModel, std::unique_ptr<backend::ModelBackend>>>
load(const ModelSpec &spec, const LocalModel *known, const ServerConfig &config, const Clock &clock,
     const ModelLoadProgress &progress) {
  auto model = engine::Model::load(
      spec.path,
      [&](uint64_t d, uint64_t t) {
        if (progress)
          progress(spec.name, d, t);
      },
      spec.ctx);
  if (!model)
    return Err(about(spec, model.take_error()));
  LocalModel lm;
  if (known) {
    lm = *known;
  } else {
    GANTRY_ASSIGN_OR_RETURN(lm, describe(spec, (*model)->file()));
  }
  backend::LocalBackendConfig bc;
  bc.name = spec.name;
  bc.chat_format = lm.chat_format;
  bc.template_recognized = lm.template_recognized;
  bc.created = clock.unix_seconds();
  bc.digest = model_digest((*model)->file());
  backend::WorkerConfig wc;
  wc.name = spec.name;
  wc.engine.n_threads = spec.threads;
  wc.engine.max_seqs = spec.max_seqs;
  wc.engine.max_batch_tokens = spec.max_batch_tokens;
  wc.engine.kv_bytes = kv_bytes(spec, (*model)->config());
  wc.engine.n_ctx = spec.ctx;
  wc.engine.prefix_cache = spec.prefix_cache;
  wc.max_queued_requests = config.max_queued_requests;
  wc.max_queued_tokens = config.max_queued_tokens;
  auto worker = std::make_unique<backend::ModelWorker>(std::move(model).value(), wc, clock);
  std::unique_ptr<backend::ModelBackend> b =
      std::make_unique<backend::LocalBackend>(std::move(worker), std::move(bc), clock);
  return std::pair{std::move(lm), std::move(b)};
}

// A hosted model's facade identity, read from the file's header without loading the weights.
Result<std::pair<LocalModel, backend::HostedModelSpec>>
inspect(const ModelSpec &spec, const ServerConfig &config, const Clock &clock) {
  auto file = gguf::GgufFile::open(spec.path);
  if (!file)
    return Err(about(spec, file.take_error()));
  auto mc = engine::read_model_config(**file);
  if (!mc)
    return Err(about(spec, mc.take_error()));
  GANTRY_ASSIGN_OR_RETURN(LocalModel lm, describe(spec, **file));
  backend::HostedModelSpec hs;
  hs.info.name = spec.name;
  hs.info.kind = "local";
  hs.info.context_length = spec.ctx > 0 ? spec.ctx : mc->n_ctx_train;
  hs.info.created = clock.unix_seconds();
  hs.info.embedding_dims = mc->n_embd;
  hs.info.identity = model_digest(**file);
  std::error_code ec;
  const auto size = std::filesystem::file_size(spec.path, ec);
  hs.bytes = (ec ? 0 : static_cast<uint64_t>(size)) + kv_bytes(spec, *mc);
  hs.load = [lm, &config, &clock]() -> Result<std::unique_ptr<backend::ModelBackend>> {
    GANTRY_ASSIGN_OR_RETURN(auto loaded, load(lm.spec, &lm, config, clock, nullptr));
    return std::move(loaded.second);
  };
  return std::pair{std::move(lm), std::move(hs)};
}

} // namespace

Result<LocalModelsBuilt> add_local_models(const ServerConfig &config, const Clock &clock,
                                          ModelRegistry &registry,
                                          const ModelLoadProgress &progress,
                                          std::function<void(const std::string &)> log) {
  LocalModelsBuilt out;
  const bool budget =
      (config.models_max > 0 && config.models_max < static_cast<int>(config.models.size())) ||
      config.models_max_bytes > 0;
  if (!budget) { // every model loaded now, for the life of the process
    for (const auto &spec : config.models) {
      GANTRY_ASSIGN_OR_RETURN(auto loaded, load(spec, nullptr, config, clock, progress));
      registry.add(std::move(loaded.second));
      out.models.push_back(std::move(loaded.first));
    }
    return out;
  }
  backend::HostOptions ho;
  ho.max_loaded = config.models_max;
  ho.max_bytes = config.models_max_bytes;
  out.host = std::make_unique<backend::ModelHost>(ho, clock, std::move(log));
  for (const auto &spec : config.models) {
    GANTRY_ASSIGN_OR_RETURN(auto inspected, inspect(spec, config, clock));
    auto &[lm, hs] = inspected;
    backend::BackendInfo info = hs.info;
    GANTRY_ASSIGN_OR_RETURN(int index, out.host->add(std::move(hs)));
    auto facade = std::make_unique<backend::HostedBackend>(*out.host, index, std::move(info));
    const backend::HostedBackend *raw = facade.get();
    if (ServedModel *entry = registry.add(std::move(facade)))
      entry->loaded = [raw] { return raw->loaded(); };
    out.models.push_back(std::move(lm));
  }
  // The first models (config order) while they fit: a new replica serves them at once.
  GANTRY_TRY(out.host->preload());
  return out;
}

void render_placement_metrics(const backend::ModelHost &host, const ServerConfig &config,
                              std::ostream &o) {
  const auto states = host.states();
  auto family = [&](const char *name, const char *type, const char *help, auto value) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
    for (const auto &s : states)
      o << name << '{' << label("model_name", s.name) << "} " << value(s) << '\n';
  };
  family("gantry:model_loads_total", "counter",
         "Loads of the hosted model (start-up and on demand).",
         [](const backend::HostedModelState &s) { return s.loads; });
  family("gantry:model_unloads_total", "counter",
         "Unloads of the hosted model to make room (least recently used idle model first).",
         [](const backend::HostedModelState &s) { return s.unloads; });
  family("gantry:model_load_failures_total", "counter", "Loads of the hosted model that failed.",
         [](const backend::HostedModelState &s) { return s.load_failures; });
  o << "# HELP gantry:models_loaded_bytes Weights and KV of the loaded hosted models.\n"
       "# TYPE gantry:models_loaded_bytes gauge\ngantry:models_loaded_bytes "
    << host.loaded_bytes() << "\n# HELP gantry:models_max Hosted models loaded at once at most "
    << "(0: no count bound).\n# TYPE gantry:models_max gauge\ngantry:models_max "
    << config.models_max << '\n';
}

} // namespace gantry::server
