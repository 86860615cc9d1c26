#include "server/embeddings_route.h"

#include "api/embeddings.h"
#include "core/utf8.h"
#include "server/observed_writer.h"
#include "server/response_cache.h"

namespace gantry::server {

void EmbeddingsRoute::handle(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  // Filled once admitted; settled when the response is complete (the record's done callback).
  auto admission = std::make_shared<std::shared_ptr<control::Admission>>();
  auto rec = calls_.begin(req, w);
  // Settlement reads the typed record: tokens are charged only for a response that was answered
  // (the usage hook filled them); a failure settles with none, as a completion whose engine call
  // failed.
  w = std::make_shared<ObservedWriter>(
      std::move(w), std::make_shared<CallOutcome>(), calls_.clock(),
      [this, admission, rec](CallOutcome &seen) {
        if (!*admission)
          return;
        control::Outcome o;
        o.status = seen.status;
        o.latency_ms =
            std::chrono::duration<double, std::milli>(calls_.clock().now() - rec->arrived).count();
        o.finish_reason = seen.status == 200 ? "stop" : "error";
        if (seen.status == 200) {
          o.input_tokens = rec->input_tokens;
          o.cached_tokens = rec->cached_tokens;
          o.cached = rec->cached;
          o.engine_seconds = rec->engine_ms / 1000; // per-hour pricing (audit H5)
        }
        rec->cost_usd = calls_.control().finish(**admission, o);
      });
  if (!calls_.open(*w, *rec))
    return;
  auto principal = calls_.authenticate(req, *w, rec.get());
  if (!principal)
    return;
  auto parsed = api::parse_embedding_request(req.body);
  if (!parsed) {
    calls_.fail(*w, *rec, parsed.take_error());
    return;
  }
  backend::ModelBackend *m = models_.find(parsed->model);
  if (!m) {
    calls_.fail(*w, *rec,
                {ErrorCode::kNotFound, "The model '" + echoed(parsed->model) + "' does not exist",
                 "model"});
    return;
  }
  rec->model = m->info().name;
  // Embeddings are metered like completions (H5): the backend tokenizes the inputs, then the
  // request is admitted with the real prompt token count, so RPM, concurrency, TPM, token
  // quotas, budgets, the model allow-list and the breaker all apply; the settlement charges
  // those tokens at the model's input price.
  control::AdmitRequest ar;
  ar.principal = nullptr;
  ar.model = rec->model;
  ar.endpoint = req.path;
  ar.request_id = req.call_id;
  ar.client_request_id = req.request_id;
  ar.arrived_ms = rec->arrived_unix_ms;
  EmbeddingHooks hooks;
  hooks.cache_scope = cache_scope(*principal, share_across_projects_);
  auto owner = std::make_shared<std::optional<control::Principal>>(std::move(*principal));
  hooks.admit = [this, ar = std::move(ar), admission, w, rec,
                 owner](int64_t prompt_tokens) mutable {
    ar.principal = *owner ? &**owner : nullptr;
    ar.prompt_tokens = prompt_tokens;
    control::RateSnapshot refusal;
    auto adm = calls_.control().admit(ar, &refusal);
    if (!adm) {
      rec->rate = refusal;
      calls_.fail(*w, *rec, adm.take_error());
      return false;
    }
    *admission = std::move(adm).value();
    return true;
  };
  hooks.usage = [rec](const EmbeddingUsage &u) {
    rec->input_tokens = u.prompt_tokens;
    rec->cached_tokens = u.cached_tokens;
    rec->cached = u.prompt_tokens > 0 && u.cached_tokens == u.prompt_tokens;
    rec->engine_ms = u.engine_seconds * 1000;
  };
  hooks.error = [rec](const Error &e) { rec->error = e; };
  std::optional<std::string> cache_control;
  if (auto cc = req.header("cache-control"))
    cache_control = std::string(*cc);
  auto task = [this, m, request = std::move(parsed).value(), cache_control,
               hooks = std::move(hooks), w]() mutable {
    service_.handle(*m, std::move(request), cache_control, std::move(hooks), std::move(w));
  };
  if (!pool_.post(std::move(task))) {
    Error e{ErrorCode::kQueueFull, "the server is busy preparing other requests; retry shortly",
            ""};
    e.retry_after_ms = 1000;
    calls_.fail(*w, *rec, std::move(e));
  }
}

} // namespace gantry::server
