// JobsService: its wiring, the /v1/jobs routes and the Prefer-wait coordinator. The executor (a
// job as one typed InferenceService call) is in job_executor.cpp, the Batch API in batch_api.cpp.
#include "server/jobs_api.h"

#include <openssl/crypto.h>

#include <boost/json.hpp>

#include <atomic>
#include <cstdio>

#include "api/json_body.h"
#include "control/webhook_signature.h"
#include "core/thread_guard.h"
#include "core/utf8.h"
#include "server/admin_api.h"
#include "server/jobs_wire.h"

namespace gantry::server {
namespace json = boost::json;
using jobs::Job;
using jobs::JobStatus;

JobsService::JobsService(const ServerConfig &config, control::ControlPlane &control,
                         const Clock &clock)
    : config_(config.jobs), control_(control), secrets_box_(control.keys().pepper()), clock_(clock),
      ids_(&clock) {}

JobsService::~JobsService() { stop(); }

Result<std::map<std::string, int64_t>> JobsService::check_queue() {
  GANTRY_ASSIGN_OR_RETURN(auto depth, queue_->depth());
  const int64_t now = clock_.unix_millis();
  const int64_t oldest_s =
      depth.queued > 0 && depth.oldest_created_ms > 0 ? (now - depth.oldest_created_ms) / 1000 : 0;
  return std::map<std::string, int64_t>{{"queued", depth.queued},
                                        {"oldest_queued_s", std::max<int64_t>(0, oldest_s)}};
}

Result<std::unique_ptr<JobsService>>
JobsService::create(const ServerConfig &config, control::ControlPlane &control, const Clock &clock,
                    JobStores stores, Authenticate authenticate, ApiCalls &calls,
                    InferenceService &inference, WebhookPost post, AdminAuth &admin_auth) {
  std::unique_ptr<JobsService> s(new JobsService(config, control, clock));
  s->authenticate_ = std::move(authenticate);
  s->calls_ = &calls;
  s->inference_ = &inference;
  s->admin_auth_ = &admin_auth;
  s->queue_ = std::move(stores.queue);
  s->records_ = std::move(stores.records);
  s->events_ = std::move(stores.events);
  s->executor_ = make_executor(*s);
  jobs::RunnerOptions ro;
  ro.workers = config.jobs.workers;
  if (ro.workers == 0) {
    ro.workers = 0;
    for (const auto &m : config.models)
      ro.workers += m.max_seqs;
  }
  ro.visibility = config.jobs.visibility;
  ro.retry_base = config.jobs.retry_base;
  JobsService *self = s.get();
  s->runner_ = std::make_unique<jobs::JobRunner>(
      *s->queue_, *s->executor_, ro,
      [self](const Job &job, std::string_view event) { self->on_event(job, event); });
  // A cancel stops the job on whichever node runs it, at the engine's next step.
  s->events_->listen([self](const jobs::JobEvent &e) {
    if (e.kind == jobs::JobEventKind::kCanceled)
      self->runner_->cancel(e.job_id);
  });
  jobs::WebhookOptions wo;
  wo.retry_base = config.jobs.webhook_retry_base;
  wo.workers = config.jobs.webhook_workers;
  wo.per_project_in_flight = std::max(1, wo.workers / 2);
  // `post` resolves, checks every address and pins the connection (server/outbound.h): the
  // destination check at delivery lives there, off the HTTP I/O threads.
  s->webhooks_ = std::make_unique<jobs::WebhookDispatcher>(
      *s->records_, wo, clock, std::move(post),
      [self](const jobs::Delivery &d,
             int64_t ts) -> Result<std::vector<std::pair<std::string, std::string>>> {
        GANTRY_ASSIGN_OR_RETURN(
            auto stored, self->records_->webhook_secrets(d.project, self->clock_.unix_millis()));
        std::vector<std::string> secrets;
        for (const auto &s : stored) {
          GANTRY_ASSIGN_OR_RETURN(std::string plain, self->secrets_box_.open(s));
          secrets.push_back(std::move(plain));
        }
        if (secrets.empty()) {
          GANTRY_ASSIGN_OR_RETURN(std::string fresh, self->sign_key_secrets(d.project));
          secrets.push_back(fresh);
        }
        return control::sign_webhook(secrets, d.id, ts, d.payload);
      });
  return s;
}

Result<std::string> JobsService::sign_key_secrets(const std::string &project) {
  const std::string secret = control::generate_webhook_secret();
  GANTRY_TRY(
      records_->rotate_webhook_secret(project, secrets_box_.seal(secret), clock_.unix_millis(), 0));
  return secret;
}

void JobsService::start() {
  runner_->start();
  webhooks_->start();
  coordinator_ = std::thread([this] {
    guarded_loop(
        "jobs.coordinator", [this] { coordinate(); },
        [this] {
          std::lock_guard<std::mutex> lk(mu_);
          return stopping_;
        });
  });
}

void JobsService::stop_leasing() { runner_->stop_leasing(); }

void JobsService::stop() { (void)drain(std::chrono::milliseconds(0)); }

int JobsService::drain(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_)
      return 0;
    stopping_ = true;
  }
  cv_.notify_all();
  const int handed_back = runner_ ? runner_->drain(grace) : 0;
  if (webhooks_)
    webhooks_->stop();
  if (coordinator_.joinable())
    coordinator_.join();
  if (queue_)
    queue_->drain_submissions(); // their callbacks use events_
  if (events_)
    events_->shutdown(); // held POSTs answer 202 with the job as it is
  return handed_back;
}

void JobsService::render_metrics(std::ostream &o) const {
  if (auto d = queue_->depth()) {
    o << "# HELP gantry:jobs_queued Jobs waiting to run (ready or in a retry backoff).\n"
         "# TYPE gantry:jobs_queued gauge\ngantry:jobs_queued "
      << d->queued << '\n';
    const double age =
        d->oldest_created_ms > 0
            ? std::max<double>(0, static_cast<double>(clock_.unix_millis() - d->oldest_created_ms) /
                                      1000.0)
            : 0.0;
    o << "# HELP gantry:oldest_queued_job_age_seconds Age of the oldest waiting job.\n"
         "# TYPE gantry:oldest_queued_job_age_seconds gauge\n"
         "gantry:oldest_queued_job_age_seconds "
      << age << '\n';
  }
  const auto &r = runner_->counters();
  o << "# HELP gantry:jobs_total Job executions by outcome (retried, deferred, lost_lease and "
       "released are degraded paths).\n# TYPE gantry:jobs_total counter\n";
  for (auto [name, v] :
       {std::pair{"started", r.started.load()}, std::pair{"succeeded", r.succeeded.load()},
        std::pair{"failed", r.failed.load()}, std::pair{"retried", r.retried.load()},
        std::pair{"deferred", r.deferred.load()}, std::pair{"lost_lease", r.lost_leases.load()},
        std::pair{"reclaimed", r.reclaimed.load()}, std::pair{"expired", r.expired.load()},
        std::pair{"released", r.released.load()}})
    o << "gantry:jobs_total{outcome=\"" << name << "\"} " << v << '\n';
  const auto &w = webhooks_->counters();
  o << "# HELP gantry:webhook_attempts_total Webhook delivery attempts and their ends.\n"
       "# TYPE gantry:webhook_attempts_total counter\n";
  for (auto [name, v] :
       {std::pair{"delivered", w.delivered.load()}, std::pair{"failed", w.failed_attempts.load()},
        std::pair{"gave_up", w.gave_up.load()}, std::pair{"disabled", w.disabled.load()}})
    o << "gantry:webhook_attempts_total{outcome=\"" << name << "\"} " << v << '\n';
}

void JobsService::on_event(const Job &job, std::string_view event) {
  const json::object data = render_job(job);
  if (!job.webhook_url.empty()) {
    const std::string payload =
        json::serialize(json::object{{"type", "job." + std::string(event)},
                                     {"timestamp", iso8601(clock_.unix_seconds())},
                                     {"data", data}});
    if (auto st = webhooks_->enqueue(job, event, payload); !st)
      std::fprintf(stderr, "jobs: webhook for %s: %s\n", job.id.c_str(),
                   st.error().message.c_str());
  }
  if (event != "completed")
    return;
  if (!job.batch_id.empty()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      batches_dirty_ = true;
    }
    cv_.notify_all();
  }
  events_->publish({job.id, jobs::JobEventKind::kCompleted});
}

void JobsService::answer_wait(const std::shared_ptr<http::ResponseWriter> &w,
                              const std::string &id) {
  auto j = queue_->get(id);
  if (!j)
    return send_error(w, j.error());
  if (!*j)
    return send_error(w, not_found("job", id));
  const bool done = jobs::is_terminal((*j)->status);
  http::Response r = http::Response::json(done ? 200 : 202, json::serialize(render_job(**j)));
  if (!done)
    r.headers.push_back({"Location", "/v1/jobs/" + id});
  w->respond(std::move(r));
}

Status JobsService::admit_submission(const control::Principal *principal, std::string_view endpoint,
                                     const std::string &id) {
  if (principal == nullptr)
    return Ok(); // auth is off: no key whose limits apply
  // A submission names no model the key's allow-list could refuse; the job's own call is
  // checked when it runs. The ledger row's id is in a namespace a client's X-Request-Id
  // cannot reach (':' is never kept by the request-id sanitizer).
  control::Principal p = *principal;
  p.models.clear();
  control::AdmitRequest req;
  req.principal = &p;
  req.endpoint = std::string(endpoint);
  req.request_id = ":submit:" + id;
  req.arrived_ms = clock_.unix_millis();
  GANTRY_ASSIGN_OR_RETURN(auto admission, control_.admit(req));
  control::Outcome out;
  out.status = 200;
  control_.finish(*admission, out);
  return Ok();
}

void JobsService::coordinate() {
  std::unique_lock<std::mutex> lk(mu_);
  auto last_batch_scan = clock_.now();
  auto last_file_purge = clock_.now() - std::chrono::hours(1);
  int64_t next_deadline = 0; // the earliest Prefer-wait deadline, unix ms; 0 = none
  while (!stopping_) {
    auto until = clock_.now() + std::chrono::seconds(1);
    if (next_deadline > 0)
      until = std::min(until, clock_.now() + std::chrono::milliseconds(std::max<int64_t>(
                                                 0, next_deadline - clock_.unix_millis())));
    cv_.wait_until(lk, until, [&] { return stopping_ || batches_dirty_ || waiters_added_; });
    waiters_added_ = false;
    if (stopping_)
      break;
    const auto now = clock_.now();
    const bool scan = batches_dirty_ || now - last_batch_scan > std::chrono::seconds(1);
    batches_dirty_ = false;
    lk.unlock();
    // Prefer-wait deadlines that passed: those POSTs answer 202 with the job as it is.
    next_deadline = events_->expire_due();
    // File retention, with the job retention sweep's cadence in mind: once a minute is plenty.
    if (config_.file_retention.count() > 0 && now - last_file_purge >= std::chrono::minutes(1)) {
      last_file_purge = now;
      if (auto n = records_->purge_files(clock_.unix_millis() - config_.file_retention.count()); !n)
        std::fprintf(stderr, "jobs: file retention: %s\n", n.error().message.c_str());
    }
    if (scan) {
      last_batch_scan = now;
      if (auto active = records_->active_batches(); active) {
        for (auto &b : *active) {
          if (auto st = advance_batch(std::move(b)); !st)
            std::fprintf(stderr, "jobs: batch: %s\n", st.error().message.c_str());
        }
      }
    }
    lk.lock();
  }
}

void JobsService::submit(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  auto p = authenticate_(req, w);
  if (!p)
    return;
  const control::Principal *principal = *p ? &**p : nullptr;
  auto parsed = api::parse_object_body(req.body);
  if (!parsed)
    return send_error(w, parsed.error());
  const json::object &o = *parsed;
  for (const auto &[k, _] : o) {
    if (k != "endpoint" && k != "body" && k != "webhook" && k != "webhook_events" &&
        k != "priority" && k != "metadata")
      return send_error(w, Error::invalid("unknown field '" + std::string(k) + "'", k));
  }
  Job job;
  const json::value *ep = o.if_contains("endpoint");
  if (!ep || !ep->is_string() || !endpoint_of(ep->as_string()))
    return send_error(w, Error::invalid("endpoint must be \"/v1/chat/completions\" or "
                                        "\"/v1/completions\"",
                                        "endpoint"));
  job.endpoint = std::string(ep->as_string());
  const json::value *body = o.if_contains("body");
  if (!body)
    return send_error(w, Error::invalid("body is required", "body"));
  auto jb = job_body(*body);
  if (!jb)
    return send_error(w, jb.error());
  // Rejected now rather than after queueing: a job that can never run is a 400.
  if (auto parsed = api::parse_inference_request(*endpoint_of(job.endpoint), *jb); !parsed) {
    Error e = parsed.error();
    e.param = "body." + e.param;
    return send_error(w, e);
  } else if (!inference_->serves(parsed->model)) {
    return send_error(w,
                      {ErrorCode::kNotFound,
                       "The model '" + echoed(parsed->model) + "' does not exist", "body.model"});
  } else {
    job.model = parsed->model;
  }
  job.body = std::move(*jb);
  if (const json::value *wh = o.if_contains("webhook"); wh && !wh->is_null()) {
    if (!wh->is_string())
      return send_error(w, Error::invalid("webhook must be a URL", "webhook"));
    job.webhook_url = std::string(wh->as_string());
    if (auto st = check_destination(job.webhook_url, config_); !st)
      return send_error(w, st.error());
    job.webhook_events = {"completed"};
  }
  if (const json::value *ev = o.if_contains("webhook_events"); ev && !ev->is_null()) {
    if (!ev->is_array())
      return send_error(w, Error::invalid("webhook_events must be an array", "webhook_events"));
    job.webhook_events.clear();
    for (const auto &e : ev->as_array()) {
      if (!e.is_string() || (e.as_string() != "started" && e.as_string() != "completed"))
        return send_error(w, Error::invalid("webhook_events may hold \"started\" and "
                                            "\"completed\"",
                                            "webhook_events"));
      job.webhook_events.emplace_back(e.as_string());
    }
  }
  if (const json::value *pr = o.if_contains("priority"); pr && !pr->is_null()) {
    if (!pr->is_int64() || pr->as_int64() < -100 || pr->as_int64() > 100)
      return send_error(w, Error::invalid("priority must be an integer in -100..100", "priority"));
    job.priority = static_cast<int>(pr->as_int64());
  }
  if (const json::value *md = o.if_contains("metadata"); md && !md->is_null()) {
    if (!md->is_object() || md->as_object().size() > 16)
      return send_error(
          w, Error::invalid("metadata must be an object of at most 16 keys", "metadata"));
    job.metadata = json::serialize(*md);
  }
  const int64_t now = clock_.unix_millis();
  if (auto ca = req.header("Cancel-After")) {
    auto ms = parse_duration_ms(*ca);
    if (!ms || *ms <= 0)
      return send_error(
          w, Error::invalid("Cancel-After must be a duration like 30s, 5m or 2h", "Cancel-After"));
    job.expires_at_ms = now + *ms;
  }
  job.id = ids_.next("job_");
  job.project = principal ? principal->project : "";
  job.key_id = principal ? principal->key_id : "";
  job.max_attempts = config_.max_attempts;
  job.created_ms = now;
  if (auto st = admit_submission(principal, "/v1/jobs", job.id); !st)
    return send_error(w, st.error());
  const auto wait = prefer_wait_s(req.header("Prefer"));
  std::optional<uint64_t> held;
  if (wait && *wait > 0) {
    // Registered before the job exists, so a job that finishes at once still finds it. Over
    // the bound on held requests the POST answers 202 at once, as without Prefer.
    const int64_t deadline = now + std::min(*wait, config_.max_wait_s) * 1000;
    auto h = events_->wait(job.id, deadline,
                           [this, w, id = job.id](jobs::WaitOutcome) { answer_wait(w, id); });
    if (h) {
      held = *h;
      {
        std::lock_guard<std::mutex> lk(mu_);
        waiters_added_ = true; // the coordinator recomputes its next deadline
      }
      cv_.notify_all();
    }
  }
  // Answered once the job is committed, from whichever thread commits it (the queue may group
  // this submission's commit with others'): the I/O thread goes on to the next request.
  std::string id = job.id;
  std::string shown = json::serialize(render_job(job));
  std::vector<Job> one;
  one.push_back(std::move(job));
  queue_->enqueue_async(std::move(one), [this, w = std::move(w), held, id = std::move(id),
                                         shown = std::move(shown)](Status st) mutable {
    if (!st) {
      if (!held || events_->cancel_wait(*held))
        send_error(w, st.error());
      return;
    }
    if (held)
      return;
    http::Response r = http::Response::json(202, std::move(shown));
    r.headers.push_back({"Location", "/v1/jobs/" + id});
    w->respond(std::move(r));
  });
}

void JobsService::add_routes(http::Router &r) {
  r.post("/v1/jobs", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    submit(std::move(req), std::move(w));
  });
  r.get("/v1/jobs", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    jobs::ListFilter f;
    f.project = *p ? (*p)->project : "";
    if (auto s = req.query_param("status")) {
      f.status = jobs::parse_job_status(*s);
      if (!f.status)
        return send_error(w, Error::invalid("unknown status '" + std::string(*s) + "'", "status"));
    }
    if (auto l = req.query_param("limit")) {
      f.limit = std::atoi(std::string(*l).c_str());
      if (f.limit < 1 || f.limit > 1000)
        return send_error(w, Error::invalid("limit must be 1..1000", "limit"));
    }
    if (auto a = req.query_param("after"))
      f.after = std::string(*a);
    f.limit += 1; // one more tells whether there is a next page
    auto list = queue_->list(f);
    if (!list)
      return send_error(w, list.error());
    const bool more = static_cast<int>(list->size()) == f.limit;
    if (more)
      list->pop_back();
    json::array data;
    for (const auto &j : *list)
      data.push_back(render_job(j));
    json::object out{{"object", "list"}, {"data", std::move(data)}, {"has_more", more}};
    out["first_id"] = list->empty() ? json::value(nullptr) : json::value(list->front().id);
    out["last_id"] = list->empty() ? json::value(nullptr) : json::value(list->back().id);
    w->respond(http::Response::json(200, json::serialize(out)));
  });
  auto owned_job = [this](http::Request &req,
                          const std::shared_ptr<http::ResponseWriter> &w) -> std::optional<Job> {
    auto p = authenticate_(req, w);
    if (!p)
      return std::nullopt;
    const std::string project = *p ? (*p)->project : "";
    const std::string id(req.path_param("id"));
    auto j = queue_->get(id);
    if (!j) {
      send_error(w, j.error());
      return std::nullopt;
    }
    // Another project's job is reported as missing: ids do not leak across tenants.
    if (!*j || (*j)->project != project) {
      send_error(w, not_found("job", id));
      return std::nullopt;
    }
    return std::move(**j);
  };
  r.get("/v1/jobs/{id}", [owned_job](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    if (auto j = owned_job(req, w))
      w->respond(http::Response::json(200, json::serialize(render_job(*j))));
  });
  r.post("/v1/jobs/{id}/cancel",
         [this, owned_job](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           auto j = owned_job(req, w);
           if (!j)
             return;
           const bool was_open = !jobs::is_terminal(j->status);
           auto c = queue_->cancel(j->project, j->id);
           if (!c || !*c)
             return send_error(w, c ? not_found("job", j->id) : c.error());
           // Stops the generation at the engine's next step, on the node that runs it.
           events_->publish({j->id, jobs::JobEventKind::kCanceled});
           if (was_open && (*c)->status == JobStatus::kCanceled)
             on_event(**c, "completed");
           w->respond(http::Response::json(200, json::serialize(render_job(**c))));
         });
  r.get("/v1/jobs/{id}/deliveries",
        [this, owned_job](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          auto j = owned_job(req, w);
          if (!j)
            return;
          auto ds = records_->deliveries_of(j->id);
          if (!ds)
            return send_error(w, ds.error());
          json::array data;
          for (const auto &d : *ds)
            data.push_back(render_delivery(d));
          w->respond(http::Response::json(
              200, json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}})));
        });
  add_batch_routes(r);
}

void JobsService::add_admin_routes(http::Router &r) {
  r.post("/admin/v1/projects/{id}/webhook_secrets",
         [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           if (auto refused = admin_auth_->check(req))
             return send_error(w, *refused);
           int64_t grace_ms = 24 * 3'600'000;
           if (!req.body.empty()) {
             auto v = api::parse_object_body(req.body);
             if (!v)
               return send_error(w, v.error());
             if (auto *g = v->if_contains("grace_s")) {
               // Bounded so that grace_s * 1000 cannot overflow (audit I).
               if (!g->is_int64() || g->as_int64() < 0 || g->as_int64() > 366 * 86'400)
                 return send_error(
                     w, Error::invalid("grace_s must be 0..31622400 (a year)", "grace_s"));
               grace_ms = g->as_int64() * 1000;
             }
           }
           const std::string project(req.path_param("id"));
           const std::string secret = control::generate_webhook_secret();
           if (auto st = records_->rotate_webhook_secret(project, secrets_box_.seal(secret),
                                                         clock_.unix_millis(), grace_ms);
               !st)
             return send_error(w, st.error());
           w->respond(http::Response::json(
               201, json::serialize(json::object{{"project", project},
                                                 {"secret", secret},
                                                 {"previous_valid_for_s", grace_ms / 1000}})));
         });
}

} // namespace gantry::server
