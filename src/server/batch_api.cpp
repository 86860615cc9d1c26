// The OpenAI Batch API on the job queue: /v1/files (multipart upload, content), /v1/batches
// (create with validation of every line, retrieve, list, cancel) and the coordinator's step that
// moves a batch to finalizing and writes its output and error files.
#include <boost/json.hpp>

#include "api/json_body.h"
#include "server/jobs_api.h"
#include "server/jobs_wire.h"
#include "server/multipart_stream.h"

namespace gantry::server {
namespace json = boost::json;
using jobs::Job;
using jobs::JobStatus;

namespace {

// Keeps the answer of a check run before the body is read (authentication, admission), to be
// sent instead of reading it.
class HeadWriter final : public http::ResponseWriter {
public:
  void respond(http::Response r) override { answer = std::move(r); }
  void start_sse(http::Headers) override {}
  bool send_event(std::string) override { return false; }
  bool send_named_event(std::string_view, std::string) override { return false; }
  void end() override {}
  bool is_closed() const override { return answer.has_value(); }
  void on_close(std::function<void()>) override {}
  const std::string &request_id() const override { return id; }

  std::optional<http::Response> answer;
  std::string id;
};

// The framing around an uploaded file: the boundaries, the parts' heads and the purpose field.
constexpr size_t kMultipartOverhead = 64 * 1024;

} // namespace

// One POST /v1/files: the multipart body parsed as it arrives, the file part written to the
// store in pieces of jobs::kFilePieceBytes (so memory holds about two pieces), the file made
// visible by commit() once the body ended whole. Anything else (too large, truncated, the client
// gone or stalled) drops the FileWriter, which deletes the pieces. Lives on the connection's I/O
// thread.
class JobsService::Upload final : public http::BodySink {
public:
  Upload(JobsService &svc, std::string id, std::string project,
         std::unique_ptr<jobs::FileWriter> file)
      : svc_(svc), id_(std::move(id)), project_(std::move(project)), file_(std::move(file)) {}

  Status open(std::string_view content_type) {
    MultipartStream::Events ev;
    ev.begin = [this](const std::string &name, const std::string &filename) -> Status {
      part_ = name == "file" ? Part::kFile : name == "purpose" ? Part::kPurpose : Part::kOther;
      if (part_ == Part::kFile) {
        if (have_file_)
          return Error::invalid("only one 'file' part is accepted", "file");
        have_file_ = true;
        filename_ = filename.empty() ? "upload.jsonl" : filename;
      }
      return Ok();
    };
    ev.data = [this](std::string_view bytes) -> Status {
      if (part_ == Part::kPurpose) {
        purpose_.append(bytes);
        if (purpose_.size() > 64)
          return Error::invalid("purpose must be \"batch\"", "purpose");
      } else if (part_ == Part::kFile) {
        bytes_ += static_cast<int64_t>(bytes.size());
        if (bytes_ > svc_.config_.max_upload_bytes)
          return too_large();
        piece_.append(bytes);
        while (piece_.size() >= static_cast<size_t>(jobs::kFilePieceBytes)) {
          GANTRY_TRY(file_->append(std::string_view(piece_).substr(0, jobs::kFilePieceBytes)));
          piece_.erase(0, jobs::kFilePieceBytes);
        }
      }
      return Ok();
    };
    ev.end = [this]() -> Status {
      if (part_ == Part::kFile && !piece_.empty()) {
        GANTRY_TRY(file_->append(piece_));
        piece_.clear();
      }
      part_ = Part::kOther;
      return Ok();
    };
    GANTRY_ASSIGN_OR_RETURN(MultipartStream m, MultipartStream::open(content_type, std::move(ev)));
    multipart_.emplace(std::move(m));
    return Ok();
  }

  Status write(std::string_view bytes) override { return multipart_->feed(bytes); }

  void finish(http::Request &&, std::shared_ptr<http::ResponseWriter> w) override {
    if (auto st = multipart_->finish(); !st)
      return send_error(w, st.error());
    if (!have_file_)
      return send_error(w, Error::invalid("the 'file' part is missing", "file"));
    if (purpose_ != "batch")
      return send_error(
          w, Error::invalid("purpose must be \"batch\" (the only one served here)", "purpose"));
    jobs::StoredFile f;
    f.id = id_;
    f.project = project_;
    f.purpose = purpose_;
    f.filename = filename_;
    f.bytes = bytes_;
    f.created_ms = svc_.clock_.unix_millis();
    const auto &c = svc_.config_;
    if (c.max_file_bytes > 0 && f.bytes > c.max_file_bytes)
      return send_error(w, Error::invalid("the file has " + std::to_string(f.bytes) +
                                              " bytes; a project may store at most " +
                                              std::to_string(c.max_file_bytes),
                                          "file"));
    if (auto st = file_->commit(f, {c.max_files, c.max_file_bytes}); !st)
      return send_error(w, st.error()); // ~Upload deletes the pieces
    w->respond(http::Response::json(200, json::serialize(render_file(f))));
  }

  void abort() override { file_.reset(); } // deletes what was written

private:
  enum class Part { kOther, kFile, kPurpose };
  Error too_large() const {
    return Error{ErrorCode::kPayloadTooLarge,
                 "the file exceeds " + std::to_string(svc_.config_.max_upload_bytes) +
                     " bytes (jobs.max_upload_bytes); nothing was stored",
                 "file"};
  }

  JobsService &svc_;
  const std::string id_;
  const std::string project_;
  std::unique_ptr<jobs::FileWriter> file_;
  std::optional<MultipartStream> multipart_;
  Part part_ = Part::kOther;
  bool have_file_ = false;
  std::string filename_;
  std::string purpose_;
  std::string piece_; // file bytes not yet written: less than one piece
  int64_t bytes_ = 0;
};

size_t JobsService::streamed_body_limit(const http::Request &head) const {
  if (head.method != http::Method::kPost || head.path != "/v1/files")
    return 0;
  return static_cast<size_t>(config_.max_upload_bytes) + kMultipartOverhead;
}

std::unique_ptr<http::BodySink> JobsService::open_upload(const http::Request &head,
                                                         std::optional<http::Response> &refusal) {
  auto hw = std::make_shared<HeadWriter>();
  hw->id = head.request_id;
  auto refuse = [&](const Error &e) {
    send_error(hw, e);
    refusal = std::move(hw->answer);
    return nullptr;
  };
  auto p = authenticate_(head, hw);
  if (!p) {
    refusal = hw->answer ? std::move(hw->answer)
                         : std::optional<http::Response>(http::error_response(
                               Error{ErrorCode::kUnauthorized, "Unauthorized", ""}));
    return nullptr;
  }
  const control::Principal *principal = *p ? &**p : nullptr;
  const std::string id = ids_.next("file-");
  if (auto st = admit_submission(principal, "/v1/files", id); !st)
    return refuse(st.error());
  auto ct = head.header("Content-Type");
  if (!ct || ct->find("multipart/form-data") == std::string_view::npos)
    return refuse(Error::invalid("upload the file as multipart/form-data", "file"));
  auto file = records_->create_file(id, clock_.unix_millis());
  if (!file)
    return refuse(file.error());
  auto up =
      std::make_unique<Upload>(*this, id, principal ? principal->project : "", std::move(*file));
  if (auto st = up->open(*ct); !st)
    return refuse(st.error());
  return up;
}

void JobsService::add_batch_routes(http::Router &r) {
  // The OpenAI Batch API. POST /v1/files streams (open_upload), outside the router.
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
  r.get("/v1/files/{id}/content", [this](http::Request &&req,
                                         std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    const std::string id(req.path_param("id"));
    auto f = records_->get_file_info(id);
    if (!f)
      return send_error(w, f.error());
    if (!*f || (*f)->project != (*p ? (*p)->project : ""))
      return send_error(w, not_found("file", id));
    // Piece by piece as the client reads (a file may be 200 MB). A file deleted meanwhile
    // ends short of its Content-Length: an error, so the connection is cut, not reused.
    const int64_t total = (*f)->bytes;
    w->respond_stream(200, "application/jsonl", {}, static_cast<uint64_t>(total),
                      [records = records_.get(), id, total, index = int64_t{0},
                       sent = int64_t{0}]() mutable -> Result<std::optional<std::string>> {
                        GANTRY_ASSIGN_OR_RETURN(auto piece, records->read_file_piece(id, index++));
                        if (!piece && sent < total)
                          return Error::internal("file " + id + " changed while it was read");
                        if (piece)
                          sent += static_cast<int64_t>(piece->size());
                        if (sent > total)
                          return Error::internal("file " + id + " changed while it was read");
                        return piece;
                      });
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
  auto file = records_->get_file_info(fid->as_string());
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

  // The input is read piece by piece, twice: first every line is validated (any bad line fails
  // the batch, and nothing is queued), then the lines are read again and queued in groups, so
  // neither the file nor its jobs are ever held whole.
  auto read_input = [&](BatchLineReader &reader) -> Status {
    for (int64_t i = 0;; ++i) {
      GANTRY_ASSIGN_OR_RETURN(auto piece, records_->read_file_piece(b.input_file_id, i));
      if (!piece)
        break;
      reader.feed(*piece);
    }
    reader.finish();
    return Ok();
  };
  int64_t total = 0;
  BatchLineReader check(b.endpoint, [&](BatchInputLine &&) { ++total; });
  if (auto st = read_input(check); !st)
    return send_error(w, st.error());
  json::array errors = std::move(check.errors());
  if (total == 0 && errors.empty())
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
    b.total = total;
  }
  // The batch row first: the coordinator never sees jobs of a batch it does not know.
  if (auto st = records_->put_batch(b); !st)
    return send_error(w, st.error());
  if (b.status != "in_progress")
    return w->respond(http::Response::json(200, json::serialize(render_batch(b))));
  // Groups of at most 1,000 lines or 8 MB of bodies per enqueue (one transaction each).
  constexpr size_t kGroupLines = 1000, kGroupBytes = size_t{8} << 20;
  std::vector<Job> group;
  size_t group_bytes = 0;
  Status queued = Ok();
  auto flush = [&]() {
    if (queued && !group.empty())
      queued = queue_->enqueue(std::move(group));
    group.clear();
    group_bytes = 0;
  };
  BatchLineReader lines(b.endpoint, [&](BatchInputLine &&l) {
    if (!queued)
      return;
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
    group_bytes += j.body.size();
    group.push_back(std::move(j));
    if (group.size() >= kGroupLines || group_bytes >= kGroupBytes)
      flush();
  });
  if (auto st = read_input(lines); !st)
    queued = st;
  flush();
  if (!queued) {
    // Some groups may be queued already: the batch fails, and what it queued is canceled.
    const std::string from = b.status;
    b.status = "failed";
    b.failed_ms = now;
    b.total = 0;
    b.errors = json::serialize(
        json::object{{"object", "list"},
                     {"data", json::array{json::object{{"code", "queue_full"},
                                                       {"message", queued.error().message},
                                                       {"param", nullptr},
                                                       {"line", nullptr}}}}});
    (void)records_->transition_batch(b, from);
    jobs::ListFilter f;
    f.batch_id = b.id;
    f.limit = 1000;
    for (;;) {
      auto page = queue_->list(f);
      if (!page)
        break;
      for (const auto &j : *page)
        (void)queue_->cancel(j.project, j.id);
      if (static_cast<int>(page->size()) < f.limit)
        break;
      f.after = page->back().id;
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
