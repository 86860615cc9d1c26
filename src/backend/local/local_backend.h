// LocalBackend: the ModelBackend adapter of a model this process loaded — the engine worker
// (ModelWorker) plus what turns a typed request into its input: the chat template, the
// tokenizer, the context check. Prompt token counts are exact.
//
// Threading: thread-safe (see ModelBackend). prepare() and prepare_embeddings() run on the
// caller's thread (templating and tokenizing: keep them off I/O threads); the sinks run on the
// model's engine thread.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "api/chat_template.h"
#include "backend/local/model_worker.h"
#include "backend/model_backend.h"
#include "core/clock.h"
#include "engine/batch/engine.h"
#include "engine/grammar/grammar_cache.h"
#include "engine/grammar/token_trie.h"

namespace gantry::backend {

struct LocalBackendConfig {
  std::string name; // the served model name
  api::ChatFormat chat_format = api::ChatFormat::kPlain;
  bool template_recognized = true;
  int64_t created = 0; // unix seconds
  std::string digest;  // the model file's digest (part of every cache material)
};

class LocalBackend final : public ModelBackend {
public:
  LocalBackend(std::unique_ptr<ModelWorker> worker, LocalBackendConfig config, const Clock &clock);
  ~LocalBackend() override;

  const BackendInfo &info() const override { return info_; }
  Result<PreparedCall> prepare(const api::InferenceRequest &request,
                               const PrepareOptions &options) override;
  Result<std::unique_ptr<CallHandle>> start(const PreparedCall &prepared,
                                            std::shared_ptr<CallSink> sink) override;
  Result<PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &request) override;
  Status embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
               EmbedDone done) override;
  void probe(ProbeDone done) override;
  BackendStats stats() const override;
  void stop_accepting() override { worker_->stop_accepting(); }
  bool wait_idle(std::chrono::milliseconds timeout) override { return worker_->wait_idle(timeout); }
  void cancel_all() override { worker_->cancel_all(); }

  ModelWorker &worker() { return *worker_; }
  const LocalBackendConfig &config() const { return config_; }

private:
  // The grammar a request's output must match (a forced tool call, response_format, grammar),
  // as a constraint prototype the engine clones per choice; null when the output is free.
  // `tools`: the request's tools are rendered and parsed. `key` receives the text that
  // identifies the grammar (part of the response-cache material).
  Result<std::shared_ptr<const engine::TokenConstraint>>
  constraint_for(const api::InferenceRequest &request, bool tools, std::string &key);

  std::unique_ptr<ModelWorker> worker_;
  const LocalBackendConfig config_;
  const Clock &clock_;
  BackendInfo info_;
  // Compiled grammars by their text: a schema reused by many requests is compiled once.
  engine::GrammarCache grammars_{256, size_t{64} << 20};
  // The vocabulary's byte trie the matchers walk: built on the first constrained request.
  std::once_flag trie_once_;
  std::shared_ptr<const engine::TokenTrie> trie_;
};

// What identifies the output of `request` (choice 0's; the others differ only by derived
// seeds) on the model `name`/`digest`: every field of GenerationRequest and SamplingParams. A
// field added there must be added here, or two requests that generate differently would share
// a response-cache entry.
// `constraint` is the text of the grammar the output must match ("" when free).
std::string completion_material(std::string_view name, std::string_view digest,
                                api::Endpoint endpoint, int n,
                                const engine::GenerationRequest &request,
                                std::string_view constraint = {});

} // namespace gantry::backend
