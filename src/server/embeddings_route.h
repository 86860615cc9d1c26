// POST /v1/embeddings over HTTP: the route prologue (ApiCalls), parsing, the model's backend
// from the registry, admission with the inputs' real token count, and settlement when the
// response ends — then EmbeddingService does the cache and the backend call. Tokenizing runs on
// the prepare pool, never on the I/O thread (audit M4).
//
// Threading: handle() runs on an I/O thread; the rest on the prepare pool and the backend's
// thread.
#pragma once

#include <memory>

#include "http/request.h"
#include "http/response_writer.h"
#include "server/api_call.h"
#include "server/embedding_service.h"
#include "server/model_registry.h"
#include "server/prepare_pool.h"

namespace gantry::server {

class EmbeddingsRoute {
public:
  // `share_across_projects`: `[cache] share_across_projects` (one cache scope for all; audit M2).
  EmbeddingsRoute(ApiCalls &calls, ModelRegistry &models, EmbeddingService &service,
                  PreparePool &pool, bool share_across_projects)
      : calls_(calls), models_(models), service_(service), pool_(pool),
        share_across_projects_(share_across_projects) {}

  void handle(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);

private:
  ApiCalls &calls_;
  ModelRegistry &models_;
  EmbeddingService &service_;
  PreparePool &pool_;
  const bool share_across_projects_;
};

} // namespace gantry::server
