// The OpenAI Batch API on the job queue: /v1/files (multipart upload, content), /v1/batches
// (create with validation of every line, retrieve, list, cancel) and the coordinator's step that
// moves a batch to finalizing and writes its output and error files.
#include <boost/json.hpp>

#include "api/json_body.h"
#include "server/jobs_api.h"
#include "server/jobs_wire.h"

namespace gantry::server {
namespace json = boost::json;
using jobs::Job;
using jobs::JobStatus;

void JobsService::add_batch_routes(http::Router &r) {
  // The OpenAI Batch API.
  r.post("/v1/files", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    create_file(std::move(req), std::move(w), *p ? &**p : nullptr);
  });
  // The caller's own file or batch `id`, or nullopt once the refusal was sent (401, 404 for
  // another project's record as for a missing one, or the store's error).
  auto owned = [this](http::Request &req, const std::shared_ptr<http::ResponseWriter> &w,
                      const char *kind,
                      auto get) -> std::optional<std::decay_t<decltype(**get(std::string()))>> {
    auto p = authenticate_(req, w);
    if (!p)
      return std::nullopt;
    const std::string id(req.path_param("id"));
    auto found = get(id);
    if (!found) {
      send_error(w, found.error());
      return std::nullopt;
    }
    if (!*found || (*found)->project != (*p ? (*p)->project : "")) {
      send_error(w, not_found(kind, id));
      return std::nullopt;
    }
    return std::move(**found);
  };
  auto owned_file = [this, owned](http::Request &req,
                                  const std::shared_ptr<http::ResponseWriter> &w) {
    // Metadata only: the content is read by the /content route alone (audit M3).
    return owned(req, w, "file",
                 [this](const std::string &id) { return records_->get_file_info(id); });
  };
  r.get("/v1/files/{id}",
        [owned_file](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          if (auto f = owned_file(req, w))
            w->respond(http::Response::json(200, json::serialize(render_file(*f))));
        });
  r.del("/v1/files/{id}", [this, owned_file](http::Request &&req,
                                             std::shared_ptr<http::ResponseWriter> w) {
    auto f = owned_file(req, w);
    if (!f)
      return;
    auto gone = records_->delete_file(f->project, f->id);
    if (!gone)
      return send_error(w, gone.error());
    if (!*gone)
      return send_error(w, not_found("file", f->id)); // deleted meanwhile
    w->respond(http::Response::json(
        200, json::serialize(json::object{{"id", f->id}, {"object", "file"}, {"deleted", true}})));
  });
  r.get("/v1/files/{id}/content",
        [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          auto p = authenticate_(req, w);
          if (!p)
            return;
          const std::string id(req.path_param("id"));
          auto f = records_->get_file(id);
          if (!f)
            return send_error(w, f.error());
          if (!*f || (*f)->project != (*p ? (*p)->project : ""))
            return send_error(w, not_found("file", id));
          w->respond(http::Response{200, "application/jsonl", {}, std::move((*f)->content)});
        });
  r.post("/v1/batches", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    create_batch(std::move(req), std::move(w), *p ? &**p : nullptr);
  });
  r.get("/v1/batches", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    int limit = 20;
    if (auto l = req.query_param("limit"))
      limit = std::clamp(std::atoi(std::string(*l).c_str()), 1, 100);
    auto list = records_->list_batches(*p ? (*p)->project : "",
                                       req.query_param("after").value_or(""), limit + 1);
    if (!list)
      return send_error(w, list.error());
    const bool more = static_cast<int>(list->size()) > limit;
    if (more)
      list->pop_back();
    json::array data;
    for (const auto &b : *list)
      data.push_back(render_batch(b));
    w->respond(http::Response::json(
        200, json::serialize(
                 json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", more}})));
  });
  auto owned_batch = [this, owned](http::Request &req,
                                   const std::shared_ptr<http::ResponseWriter> &w) {
    return owned(req, w, "batch",
                 [this](const std::string &id) { return records_->get_batch(id); });
  };
  r.get("/v1/batches/{id}",
        [owned_batch](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          if (auto b = owned_batch(req, w))
            w->respond(http::Response::json(200, json::serialize(render_batch(*b))));
        });
  r.post("/v1/batches/{id}/cancel",
         [this, owned_batch](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           auto b = owned_batch(req, w);
           if (!b)
             return;
           if (b->status == "validating" || b->status == "in_progress") {
             const std::string from = b->status;
             b->status = "cancelling";
             b->cancelling_ms = clock_.unix_millis();
             auto won = records_->transition_batch(*b, from);
             if (!won)
               return send_error(w, won.error());
             if (!*won) { // the batch moved on meanwhile (finished, or another cancel)
               auto now_is = records_->get_batch(b->id);
               if (!now_is || !*now_is)
                 return send_error(w, now_is ? not_found("batch", b->id) : now_is.error());
               *b = std::move(**now_is);
             }
             {
               std::lock_guard<std::mutex> lk(mu_);
               batches_dirty_ = true;
             }
             cv_.notify_all();
           }
           w->respond(http::Response::json(200, json::serialize(render_batch(*b))));
         });
}

void JobsService::create_file(http::Request &&req, std::shared_ptr<http::ResponseWriter> w,
                              const control::Principal *principal) {
  const std::string project = principal ? principal->project : "";
  const std::string id = ids_.next("file-");
  if (auto st = admit_submission(principal, "/v1/files", id); !st)
    return send_error(w, st.error());
  auto ct = req.header("Content-Type");
  if (!ct || ct->find("multipart/form-data") == std::string_view::npos)
    return send_error(w, Error::invalid("upload the file as multipart/form-data", "file"));
  auto parts = parse_multipart(*ct, req.body);
  if (!parts)
    return send_error(w, parts.error());
  jobs::StoredFile f;
  bool have_file = false;
  for (auto &part : *parts) {
    if (part.name == "purpose") {
      f.purpose = part.content;
    } else if (part.name == "file") {
      f.filename = part.filename.empty() ? "upload.jsonl" : part.filename;
      f.content = std::move(part.content);
      have_file = true;
    }
  }
  if (!have_file)
    return send_error(w, Error::invalid("the 'file' part is missing", "file"));
  if (f.purpose != "batch")
    return send_error(
        w, Error::invalid("purpose must be \"batch\" (the only one served here)", "purpose"));
  f.id = id;
  f.project = project;
  f.bytes = static_cast<int64_t>(f.content.size());
  f.created_ms = clock_.unix_millis();
  if (config_.max_file_bytes > 0 && f.bytes > config_.max_file_bytes)
    return send_error(w, Error::invalid("the file has " + std::to_string(f.bytes) +
                                            " bytes; a project may store at most " +
                                            std::to_string(config_.max_file_bytes),
                                        "file"));
  if (auto st = records_->put_file(f, {config_.max_files, config_.max_file_bytes}); !st)
    return send_error(w, st.error());
  w->respond(http::Response::json(200, json::serialize(render_file(f))));
}

void JobsService::create_batch(http::Request &&req, std::shared_ptr<http::ResponseWriter> w,
                               const control::Principal *principal) {
  auto parsed = api::parse_object_body(req.body);
  if (!parsed)
    return send_error(w, parsed.error());
  const json::object &o = *parsed;
  const json::value *fid = o.if_contains("input_file_id");
  const json::value *ep = o.if_contains("endpoint");
  const json::value *win = o.if_contains("completion_window");
  if (!fid || !fid->is_string())
    return send_error(w, Error::invalid("input_file_id is required", "input_file_id"));
  if (!ep || !ep->is_string() || !endpoint_of(ep->as_string()))
    return send_error(w, Error::invalid("endpoint must be /v1/chat/completions or "
                                        "/v1/completions",
                                        "endpoint"));
  std::optional<int64_t> window_ms = win && win->is_string() ? parse_duration_ms(win->as_string())
                                                             : std::optional<int64_t>(86'400'000);
  if (!window_ms || *window_ms <= 0)
    return send_error(
        w, Error::invalid("completion_window must be a duration such as 24h", "completion_window"));
  const std::string project = principal ? principal->project : "";
  const std::string batch_id = ids_.next("batch_");
  if (auto st = admit_submission(principal, "/v1/batches", batch_id); !st)
    return send_error(w, st.error());
  auto file = records_->get_file(fid->as_string());
  if (!file)
    return send_error(w, file.error());
  if (!*file || (*file)->project != project)
    return send_error(w, not_found("file", fid->as_string()));
  const int64_t now = clock_.unix_millis();
  jobs::Batch b;
  b.id = batch_id;
  b.project = project;
  b.key_id = principal ? principal->key_id : "";
  b.endpoint = std::string(ep->as_string());
  b.input_file_id = (*file)->id;
  b.completion_window = win && win->is_string() ? std::string(win->as_string()) : "24h";
  if (const json::value *md = o.if_contains("metadata"); md && !md->is_null())
    b.metadata = json::serialize(*md);
  b.created_ms = now;
  b.expires_ms = now + *window_ms;

  // Validation: every line must be a request this server can run; any bad line fails the batch.
  BatchInput input = parse_batch_input((*file)->content, b.endpoint);
  json::array errors = std::move(input.errors);
  std::vector<Job> lines;
  for (auto &l : input.lines) {
    Job j;
    j.id = ids_.next("job_");
    j.project = project;
    j.key_id = b.key_id;
    j.endpoint = b.endpoint;
    j.model = job_model(l.body);
    j.body = std::move(l.body);
    j.batch_id = b.id;
    j.custom_id = std::move(l.custom_id);
    j.priority = -50; // batch lines yield to interactive jobs of the same project
    j.max_attempts = config_.max_attempts;
    j.created_ms = now;
    j.expires_at_ms = b.expires_ms;
    lines.push_back(std::move(j));
  }
  if (lines.empty() && errors.empty())
    errors.push_back(json::object{{"code", "empty_file"},
                                  {"message", "the input file has no requests"},
                                  {"param", nullptr},
                                  {"line", nullptr}});
  if (!errors.empty()) {
    b.status = "failed";
    b.failed_ms = now;
    b.errors = json::serialize(json::object{{"object", "list"}, {"data", std::move(errors)}});
  } else {
    b.status = "in_progress";
    b.in_progress_ms = now;
    b.total = static_cast<int64_t>(lines.size());
  }
  // The batch row first: the coordinator never sees jobs of a batch it does not know.
  if (auto st = records_->put_batch(b); !st)
    return send_error(w, st.error());
  if (!lines.empty() && errors.empty()) {
    if (auto st = queue_->enqueue(std::move(lines)); !st) {
      const std::string from = b.status;
      b.status = "failed";
      b.failed_ms = now;
      b.total = 0;
      b.errors = json::serialize(
          json::object{{"object", "list"},
                       {"data", json::array{json::object{{"code", "queue_full"},
                                                         {"message", st.error().message},
                                                         {"param", nullptr},
                                                         {"line", nullptr}}}}});
      (void)records_->transition_batch(b, from);
    }
  }
  w->respond(http::Response::json(200, json::serialize(render_batch(b))));
}

// One coordinator step for an active batch. Every write is a compare-and-set on the status the
// batch had when it was read, so when several nodes' coordinators step the same batch, exactly
// one wins each transition and only the winner acts on it (writes the output files).
Status JobsService::advance_batch(jobs::Batch b) {
  const int64_t now = clock_.unix_millis();
  std::string from = b.status;
  if (b.status == "finalizing") {
    // Left by a coordinator that died while writing the output (a live one finishes within its
    // step): after a grace, put back so that one coordinator wins finalizing it again.
    constexpr int64_t kFinalizeGraceMs = 10 * 60'000;
    if (now - b.finalizing_ms < kFinalizeGraceMs)
      return Ok();
    b.status = "in_progress";
    GANTRY_ASSIGN_OR_RETURN(bool won, records_->transition_batch(b, from));
    if (!won)
      return Ok();
    from = b.status;
  }
  GANTRY_ASSIGN_OR_RETURN(auto counts, records_->batch_counts(b.id));
  b.completed = counts.succeeded;
  b.failed = counts.failed;
  const bool expired = b.status == "in_progress" && now >= b.expires_ms;
  if (b.status == "cancelling" || expired) {
    // Stop what is left; the coordinator finishes the batch once every line is terminal.
    jobs::ListFilter f;
    f.batch_id = b.id;
    f.limit = 1000;
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(auto page, queue_->list(f));
      for (const auto &j : page) {
        if (!jobs::is_terminal(j.status)) {
          (void)queue_->cancel(j.project, j.id);
          events_->publish({j.id, jobs::JobEventKind::kCanceled});
        }
      }
      if (static_cast<int>(page.size()) < f.limit)
        break;
      f.after = page.back().id;
    }
    GANTRY_ASSIGN_OR_RETURN(counts, records_->batch_counts(b.id));
    b.completed = counts.succeeded;
    b.failed = counts.failed;
    if (expired) {
      b.status = "expired";
      b.expired_ms = now;
    }
  }
  if (counts.succeeded + counts.failed < b.total) {
    // Progress only (or the expiry); lost to a concurrent change, the next step sees it.
    GANTRY_ASSIGN_OR_RETURN(bool won, records_->transition_batch(b, from));
    (void)won;
    return Ok();
  }
  // Every line is done: claim the finalization, write the output and error files, then the
  // final state.
  if (b.status == "in_progress") {
    b.finalizing_ms = now;
    b.status = "finalizing";
    GANTRY_ASSIGN_OR_RETURN(bool won, records_->transition_batch(b, from));
    if (!won)
      return Ok(); // another coordinator finalizes it
    from = b.status;
  }
  // The output is capped (audit M3): past the cap the batch fails rather than building a
  // string SQLite cannot store and retrying it every second.
  const int64_t cap = config_.max_batch_output_bytes;
  auto fail = [&](const std::string &code, const std::string &message) -> Status {
    b.status = "failed";
    b.failed_ms = now;
    b.output_file_id.clear();
    b.error_file_id.clear();
    b.errors = json::serialize(json::object{
        {"object", "list"},
        {"data",
         json::array{json::object{
             {"code", code}, {"message", message}, {"param", nullptr}, {"line", nullptr}}}}});
    GANTRY_ASSIGN_OR_RETURN(bool won, records_->transition_batch(b, from));
    (void)won;
    return Ok();
  };
  std::string out, err;
  jobs::ListFilter f;
  f.batch_id = b.id;
  f.limit = 1000;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(auto page, queue_->list(f));
    for (const auto &j : page) {
      json::object line{{"id", "batch_req_" + j.id}, {"custom_id", j.custom_id}};
      json::value response = nullptr;
      if (j.result_status != 0)
        response = json::object{{"status_code", j.result_status},
                                {"request_id", j.id},
                                {"body", parse_or_string(j.result)}};
      line["response"] = response;
      if (j.status == JobStatus::kSucceeded) {
        line["error"] = nullptr;
        out += json::serialize(line) + "\n";
      } else {
        line["error"] = json::object{{"code", std::string(jobs::job_status_name(j.status))},
                                     {"message", j.error}};
        err += json::serialize(line) + "\n";
      }
      if (cap > 0 && static_cast<int64_t>(out.size() + err.size()) > cap)
        return fail("output_too_large", "the batch's output exceeds " + std::to_string(cap) +
                                            " bytes (jobs.max_batch_output_bytes)");
    }
    if (static_cast<int>(page.size()) < f.limit)
      break;
    f.after = page.back().id;
  }
  std::vector<std::string> written;
  auto put = [&](std::string content, std::string &id_out) -> Status {
    jobs::StoredFile file;
    file.id = ids_.next("file-");
    file.project = b.project;
    file.purpose = "batch_output";
    file.filename = b.id + (&id_out == &b.output_file_id ? "_output.jsonl" : "_error.jsonl");
    file.bytes = static_cast<int64_t>(content.size());
    file.content = std::move(content);
    file.created_ms = now;
    // Bounded by the output cap instead of the project's file quota: a finished batch's
    // results are not refused for the files its owner keeps.
    GANTRY_TRY(records_->put_file(file, {}));
    id_out = file.id;
    written.push_back(file.id);
    return Ok();
  };
  Status stored = Ok();
  if (!out.empty())
    stored = put(std::move(out), b.output_file_id);
  if (stored && !err.empty())
    stored = put(std::move(err), b.error_file_id);
  if (!stored) {
    for (const auto &id : written)
      (void)records_->delete_file(b.project, id);
    return fail("output_not_stored",
                "the batch's output could not be stored: " + stored.error().message);
  }
  if (b.status == "cancelling") {
    b.status = "cancelled";
    b.cancelled_ms = now;
  } else if (b.status == "finalizing") {
    b.status = "completed";
    b.completed_ms = now;
  }
  GANTRY_ASSIGN_OR_RETURN(bool won, records_->transition_batch(b, from));
  if (!won) {
    for (const auto &id : written)
      (void)records_->delete_file(b.project, id);
  }
  return Ok();
}

} // namespace gantry::server
