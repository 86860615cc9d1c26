#include "server/jobs_api.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <set>

#include "control/sqlite_store.h"
#include "control/webhook_signature.h"
#include "jobs/sqlite_job_queue.h"
#include "jobs/sqlite_job_records.h"

namespace gantry::server {
namespace json = boost::json;
namespace {

using jobs::Job;
using jobs::JobStatus;

void send_error(const std::shared_ptr<http::ResponseWriter> &w, const Error &e) {
  http::Response r = http::error_response(e);
  if (e.retry_after_ms > 0) {
    r.headers.push_back({"Retry-After", std::to_string((e.retry_after_ms + 999) / 1000)});
    r.headers.push_back({"retry-after-ms", std::to_string(e.retry_after_ms)});
  }
  w->respond(std::move(r));
}

Error not_found(std::string_view what, std::string_view id) {
  return {ErrorCode::kNotFound, "No " + std::string(what) + " with id '" + std::string(id) + "'",
          "id"};
}

// "500ms", "30s", "5m", "2h", "1d", or plain seconds.
std::optional<int64_t> parse_duration_ms(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  size_t i = 0;
  int64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    v = v * 10 + (s[i++] - '0');
    if (v > 100'000'000)
      return std::nullopt;
  }
  if (i == 0)
    return std::nullopt;
  const std::string_view unit = s.substr(i);
  if (unit.empty() || unit == "s")
    return v * 1000;
  if (unit == "ms")
    return v;
  if (unit == "m")
    return v * 60'000;
  if (unit == "h")
    return v * 3'600'000;
  if (unit == "d")
    return v * 86'400'000;
  return std::nullopt;
}

// `Prefer: respond-async, wait=10` → 10.
std::optional<int64_t> prefer_wait_s(std::optional<std::string_view> h) {
  if (!h)
    return std::nullopt;
  const auto at = h->find("wait=");
  if (at == std::string_view::npos)
    return std::nullopt;
  int64_t v = 0;
  size_t i = at + 5;
  bool any = false;
  while (i < h->size() && (*h)[i] >= '0' && (*h)[i] <= '9') {
    v = std::min<int64_t>(v * 10 + ((*h)[i++] - '0'), 1'000'000);
    any = true;
  }
  return any ? std::optional<int64_t>(v) : std::nullopt;
}

bool address_is_private(const sockaddr *sa, bool *loopback) {
  *loopback = false;
  if (sa->sa_family == AF_INET) {
    const auto a = ntohl(reinterpret_cast<const sockaddr_in *>(sa)->sin_addr.s_addr);
    const auto b0 = a >> 24, b1 = (a >> 16) & 0xff;
    if (b0 == 127) {
      *loopback = true;
      return true;
    }
    return b0 == 10 || b0 == 0 || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) ||
           (b0 == 169 && b1 == 254) || (b0 == 100 && (b1 & 0xc0) == 64) || b0 >= 224;
  }
  if (sa->sa_family == AF_INET6) {
    const auto *a = reinterpret_cast<const sockaddr_in6 *>(sa)->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_LOOPBACK(reinterpret_cast<const in6_addr *>(a))) {
      *loopback = true;
      return true;
    }
    const bool v4mapped = IN6_IS_ADDR_V4MAPPED(reinterpret_cast<const in6_addr *>(a));
    if (v4mapped) {
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      std::memcpy(&v4.sin_addr, a + 12, 4);
      return address_is_private(reinterpret_cast<const sockaddr *>(&v4), loopback);
    }
    return (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) ||
           IN6_IS_ADDR_UNSPECIFIED(reinterpret_cast<const in6_addr *>(a)) || a[0] == 0xff;
  }
  return true;
}

// Refuses webhook destinations in loopback or private ranges unless configured, so a tenant
// cannot make the server call into its own network (SSRF). Every resolved address is checked.
Status check_destination(const std::string &url, const JobsConfig &c) {
  auto u = boost::urls::parse_uri(url);
  if (!u || u->scheme() != "http" || u->host().empty())
    return Error::invalid("webhook must be an http:// URL (put a TLS proxy in front for https)",
                          "webhook");
  const std::string host(u->host_name().empty() ? std::string(u->encoded_host())
                                                : std::string(u->host_name()));
  std::string h = host;
  if (h.size() > 2 && h.front() == '[')
    h = h.substr(1, h.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  if (getaddrinfo(h.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
    return Error::invalid("webhook host '" + host + "' does not resolve", "webhook");
  Status st = Ok();
  for (addrinfo *ai = res; ai != nullptr && st; ai = ai->ai_next) {
    bool loopback = false;
    if (!address_is_private(ai->ai_addr, &loopback))
      continue;
    if (loopback ? !c.webhook_allow_loopback : !c.webhook_allow_private) {
      st = Error{ErrorCode::kPermissionDenied,
                 "webhook host '" + host + "' is in a " +
                     std::string(loopback ? "loopback" : "private") +
                     " address range, which this server does not call (jobs.webhook_allow_" +
                     (loopback ? "loopback" : "private") + ")",
                 "webhook"};
    }
  }
  freeaddrinfo(res);
  return st;
}

json::value seconds_or_null(int64_t ms) {
  return ms > 0 ? json::value(ms / 1000) : json::value(nullptr);
}

json::value parse_or_string(const std::string &s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec)
    return json::value(s);
  return v;
}

json::object render_job(const Job &j) {
  json::object o;
  o["id"] = j.id;
  o["object"] = "job";
  o["status"] = std::string(jobs::job_status_name(j.status));
  o["endpoint"] = j.endpoint;
  o["priority"] = j.priority;
  o["metadata"] = parse_or_string(j.metadata);
  o["created_at"] = j.created_ms / 1000;
  o["started_at"] = seconds_or_null(j.started_ms);
  o["finished_at"] = seconds_or_null(j.finished_ms);
  o["expires_at"] = seconds_or_null(j.expires_at_ms);
  // Millisecond twins of the timestamps: ordering checks (fairness) need more than seconds.
  o["created_at_ms"] = j.created_ms;
  o["started_at_ms"] = j.started_ms;
  o["finished_at_ms"] = j.finished_ms;
  o["attempts"] = j.attempts;
  o["max_attempts"] = j.max_attempts;
  if (!j.webhook_url.empty()) {
    json::array ev;
    for (const auto &e : j.webhook_events)
      ev.push_back(json::value(e));
    o["webhook"] = j.webhook_url;
    o["webhook_events"] = std::move(ev);
  }
  if (!j.batch_id.empty()) {
    o["batch_id"] = j.batch_id;
    o["custom_id"] = j.custom_id;
  }
  o["result"] =
      j.status == JobStatus::kSucceeded ? parse_or_string(j.result) : json::value(nullptr);
  if (j.status == JobStatus::kFailed || j.status == JobStatus::kCanceled ||
      j.status == JobStatus::kExpired) {
    json::object e;
    e["message"] = j.error;
    e["status"] = j.result_status;
    if (!j.result.empty())
      e["response"] = parse_or_string(j.result);
    o["error"] = std::move(e);
  } else {
    o["error"] = nullptr;
  }
  if (j.status == JobStatus::kSucceeded) {
    o["usage"] = json::object{{"prompt_tokens", j.input_tokens},
                              {"completion_tokens", j.output_tokens},
                              {"total_tokens", j.input_tokens + j.output_tokens}};
    o["cost_usd"] = j.cost_usd;
  } else {
    o["usage"] = nullptr;
    o["cost_usd"] = nullptr;
  }
  o["urls"] = json::object{{"get", "/v1/jobs/" + j.id}, {"cancel", "/v1/jobs/" + j.id + "/cancel"}};
  return o;
}

json::object render_delivery(const jobs::Delivery &d) {
  return json::object{{"id", d.id},
                      {"object", "job.delivery"},
                      {"event", d.event},
                      {"url", d.url},
                      {"status", d.status},
                      {"attempts", d.attempts},
                      {"last_status", d.last_status},
                      {"last_error", d.last_error},
                      {"created_at", d.created_ms / 1000},
                      {"next_attempt_at", d.status == "pending" ? seconds_or_null(d.next_at_ms)
                                                                : json::value(nullptr)},
                      {"delivered_at", seconds_or_null(d.delivered_ms)}};
}

json::object render_file(const jobs::StoredFile &f) {
  return json::object{{"id", f.id},
                      {"object", "file"},
                      {"bytes", f.bytes},
                      {"created_at", f.created_ms / 1000},
                      {"filename", f.filename},
                      {"purpose", f.purpose},
                      {"status", "processed"},
                      {"status_details", nullptr}};
}

json::object render_batch(const jobs::Batch &b) {
  json::object o{
      {"id", b.id},
      {"object", "batch"},
      {"endpoint", b.endpoint},
      {"errors", b.errors.empty() ? json::value(nullptr) : parse_or_string(b.errors)},
      {"input_file_id", b.input_file_id},
      {"completion_window", b.completion_window},
      {"status", b.status},
      {"output_file_id",
       b.output_file_id.empty() ? json::value(nullptr) : json::value(b.output_file_id)},
      {"error_file_id",
       b.error_file_id.empty() ? json::value(nullptr) : json::value(b.error_file_id)},
      {"created_at", b.created_ms / 1000},
      {"in_progress_at", seconds_or_null(b.in_progress_ms)},
      {"expires_at", seconds_or_null(b.expires_ms)},
      {"finalizing_at", seconds_or_null(b.finalizing_ms)},
      {"completed_at", seconds_or_null(b.completed_ms)},
      {"failed_at", seconds_or_null(b.failed_ms)},
      {"expired_at", seconds_or_null(b.expired_ms)},
      {"cancelling_at", seconds_or_null(b.cancelling_ms)},
      {"cancelled_at", seconds_or_null(b.cancelled_ms)},
      {"request_counts",
       json::object{{"total", b.total}, {"completed", b.completed}, {"failed", b.failed}}},
      {"metadata", parse_or_string(b.metadata)}};
  return o;
}

std::string iso8601(int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The body of a job's request as the gateway will run it: an object, never streamed (a job's
// result is one response).
Result<std::string> job_body(const json::value &body) {
  if (!body.is_object())
    return Error::invalid("body must be a JSON object (the request to run)", "body");
  json::object o = body.as_object();
  o["stream"] = false;
  o.erase("stream_options");
  return json::serialize(o);
}

std::optional<api::Endpoint> endpoint_of(std::string_view path) {
  if (path == "/v1/chat/completions")
    return api::Endpoint::kChatCompletions;
  if (path == "/v1/completions")
    return api::Endpoint::kCompletions;
  return std::nullopt;
}

struct Part {
  std::string name;
  std::string filename;
  std::string content;
};

// multipart/form-data (RFC 7578) as the openai SDK's FormData sends it.
Result<std::vector<Part>> parse_multipart(std::string_view content_type, std::string_view body) {
  auto at = content_type.find("boundary=");
  if (at == std::string_view::npos)
    return Error::invalid("expected multipart/form-data with a boundary", "file");
  std::string boundary(content_type.substr(at + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos)
    boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  const std::string delim = "--" + boundary;
  std::vector<Part> parts;
  size_t pos = body.find(delim);
  while (pos != std::string_view::npos) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--")
      break;
    if (body.substr(pos, 2) == "\r\n")
      pos += 2;
    const size_t head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos)
      return Error::invalid("malformed multipart body", "file");
    const std::string_view head = body.substr(pos, head_end - pos);
    const size_t next = body.find("\r\n" + delim, head_end + 4);
    if (next == std::string_view::npos)
      return Error::invalid("malformed multipart body (no closing boundary)", "file");
    Part p;
    p.content = std::string(body.substr(head_end + 4, next - head_end - 4));
    auto param = [&](std::string_view key) -> std::string {
      const std::string k = std::string(key) + "=\"";
      auto a = head.find(k);
      if (a == std::string_view::npos)
        return {};
      auto e = head.find('"', a + k.size());
      return std::string(head.substr(a + k.size(), e - a - k.size()));
    };
    p.name = param(" name");
    if (p.name.empty())
      p.name = param(";name");
    p.filename = param("filename");
    parts.push_back(std::move(p));
    pos = next + 2;
  }
  return parts;
}

} // namespace

// The POST held open by `Prefer: wait=N`.
struct JobsService::Waiter {
  std::shared_ptr<http::ResponseWriter> w;
  std::chrono::steady_clock::time_point deadline;
};

// Runs a job through the gateway as the key that submitted it and captures the one response.
class JobsService::Executor final : public jobs::JobExecutor {
public:
  Executor(JobsService &svc) : svc_(svc) {}

  std::function<void()> start(const Job &job, std::function<void(jobs::ExecResult)> done) override {
    std::optional<control::Principal> principal;
    if (!job.key_id.empty()) {
      auto key = svc_.control_.store().get_key(job.key_id);
      if (!key) {
        done({503, R"({"error":{"message":"the key store is unavailable"}})", 0, 1000});
        return [] {};
      }
      const int64_t now = svc_.clock_.unix_seconds();
      if (!*key || (*key)->revoked_at != 0 ||
          ((*key)->expires_at != 0 && (*key)->expires_at <= now)) {
        done(
            {403,
             R"({"error":{"message":"the key that submitted this job is revoked or expired","type":"permission_error"}})",
             0, 0});
        return [] {};
      }
      principal = control::Principal{(*key)->id, (*key)->project, (*key)->models, (*key)->limits};
    }
    auto endpoint = endpoint_of(job.endpoint);
    http::Request req;
    req.method = http::Method::kPost;
    req.target = job.endpoint;
    req.path = job.endpoint;
    req.body = job.body;
    // The ledger dedups on the request id, so a job re-executed after a crash is billed once.
    // A deferral (overload) already left a refusal row under the current id: the next
    // execution takes a new one.
    const std::string request_id =
        job.deferrals == 0 ? job.id : job.id + "." + std::to_string(job.deferrals);
    req.request_id = request_id;
    req.headers.push_back({"Content-Type", "application/json"});
    // The usage row is written before the outcome is recorded, with the job id as its request
    // id: a crash in between re-runs the job, whose row the ledger then ignores, so usage is
    // counted once however often the job ran. (The ledger writer's batched row for the same id
    // is the same usage; whichever lands first is kept.)
    auto settle = [this, job, request_id, started = svc_.clock_.unix_millis(),
                   done = std::move(done)](jobs::ExecResult r) {
      if (r.status >= 200 && r.status < 300) {
        boost::system::error_code ec;
        json::value v = json::parse(r.body, ec);
        if (!ec && v.is_object()) {
          const json::object &o = v.as_object();
          control::UsageRecord u;
          u.request_id = request_id;
          u.key_id = job.key_id;
          u.project = job.project;
          if (auto *m = o.if_contains("model"); m && m->is_string())
            u.model = std::string(m->as_string());
          u.endpoint = job.endpoint;
          if (auto *us = o.if_contains("usage"); us && us->is_object()) {
            if (auto *p = us->as_object().if_contains("prompt_tokens"); p && p->is_int64())
              u.input_tokens = p->as_int64();
            if (auto *c = us->as_object().if_contains("completion_tokens"); c && c->is_int64())
              u.output_tokens = c->as_int64();
          }
          if (auto *ch = o.if_contains("choices");
              ch && ch->is_array() && !ch->as_array().empty()) {
            if (auto *f = ch->as_array()[0].as_object().if_contains("finish_reason");
                f && f->is_string())
              u.finish_reason = std::string(f->as_string());
          }
          u.cost_usd = r.cost_usd;
          u.status = r.status;
          u.created_at_ms = started;
          u.latency_ms = static_cast<double>(svc_.clock_.unix_millis() - started);
          if (auto st = svc_.control_.store().append_usage({u}); !st) {
            // Without its usage row the job must not be recorded as done: run it again later.
            r = {503, R"({"error":{"message":"usage could not be recorded"}})", 0, 1000};
          }
        }
      }
      done(std::move(r));
    };
    auto w = std::make_shared<Capture>(job.id, std::move(settle));
    std::weak_ptr<Capture> weak = w;
    svc_.execute_(endpoint.value_or(api::Endpoint::kChatCompletions), std::move(req), std::move(w),
                  std::move(principal));
    return [weak] {
      if (auto c = weak.lock())
        c->cancel();
    };
  }

private:
  class Capture final : public http::ResponseWriter {
  public:
    Capture(std::string id, std::function<void(jobs::ExecResult)> done)
        : id_(std::move(id)), done_(std::move(done)) {}
    ~Capture() override { finish({0, "", 0, 0}); }
    void respond(http::Response r) override {
      jobs::ExecResult e{r.status, std::move(r.body), 0, 0};
      if (auto c = http::find_header(r.headers, "x-gantry-cost-usd"))
        e.cost_usd = std::atof(std::string(*c).c_str());
      if (auto ra = http::find_header(r.headers, "retry-after-ms"))
        e.retry_after_ms = std::atoll(std::string(*ra).c_str());
      finish(std::move(e));
    }
    void start_sse(http::Headers) override {}
    bool send_event(std::string) override { return !closed_.load(); }
    void end() override {
      finish({500, R"({"error":{"message":"a job produced a stream"}})", 0, 0});
    }
    bool is_closed() const override { return closed_.load(); }
    void on_close(std::function<void()> cb) override {
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!closed_.load()) {
          callbacks_.push_back(std::move(cb));
          return;
        }
      }
      cb();
    }
    const std::string &request_id() const override { return id_; }
    void cancel() {
      std::vector<std::function<void()>> cbs;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (closed_.exchange(true))
          return;
        cbs.swap(callbacks_);
      }
      for (auto &cb : cbs)
        cb();
    }

  private:
    void finish(jobs::ExecResult r) {
      std::function<void(jobs::ExecResult)> d;
      {
        std::lock_guard<std::mutex> lk(mu_);
        d.swap(done_);
        closed_.store(true);
        callbacks_.clear(); // a finished response is not a disconnect
      }
      if (d)
        d(std::move(r));
    }
    const std::string id_;
    std::mutex mu_;
    std::function<void(jobs::ExecResult)> done_;
    std::vector<std::function<void()>> callbacks_;
    std::atomic<bool> closed_{false};
  };

  JobsService &svc_;
};

JobsService::JobsService(const ServerConfig &config, control::ControlPlane &control,
                         const Clock &clock)
    : config_(config.jobs), models_(config.models), control_(control), clock_(clock), ids_(clock) {}

JobsService::~JobsService() { stop(); }

Result<std::unique_ptr<JobsService>>
JobsService::create(const ServerConfig &config, control::ControlPlane &control, const Clock &clock,
                    Authenticate authenticate, Execute execute, WebhookPost post,
                    std::string admin_token) {
  std::unique_ptr<JobsService> s(new JobsService(config, control, clock));
  s->authenticate_ = std::move(authenticate);
  s->execute_ = std::move(execute);
  s->admin_token_ = std::move(admin_token);
  const std::string db = control::database_path(config.data_dir);
  jobs::JobQueueOptions qo;
  qo.max_queued_per_project = config.jobs.max_queued_jobs;
  qo.retention = config.jobs.retention;
  qo.retry_base = config.jobs.retry_base;
  GANTRY_ASSIGN_OR_RETURN(s->queue_, jobs::SqliteJobQueue::open(db, qo, clock));
  GANTRY_ASSIGN_OR_RETURN(s->records_, jobs::SqliteJobRecords::open(db));
  s->executor_ = std::make_unique<Executor>(*s);
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
  jobs::WebhookOptions wo;
  wo.retry_base = config.jobs.webhook_retry_base;
  const JobsConfig jc = config.jobs;
  auto guarded = [jc, post = std::move(post)](
                     const std::string &url, const std::string &body,
                     const std::vector<std::pair<std::string, std::string>> &h) -> Result<int> {
    // Checked again at delivery: the name may resolve elsewhere than at submission.
    GANTRY_TRY(check_destination(url, jc));
    return post(url, body, h);
  };
  s->webhooks_ = std::make_unique<jobs::WebhookDispatcher>(
      *s->records_, wo, clock, std::move(guarded),
      [self](const jobs::Delivery &d,
             int64_t ts) -> Result<std::vector<std::pair<std::string, std::string>>> {
        GANTRY_ASSIGN_OR_RETURN(
            auto secrets, self->records_->webhook_secrets(d.project, self->clock_.unix_millis()));
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
  GANTRY_TRY(records_->rotate_webhook_secret(project, secret, clock_.unix_millis(), 0));
  return secret;
}

void JobsService::start() {
  runner_->start();
  webhooks_->start();
  coordinator_ = std::thread([this] { coordinate(); });
}

void JobsService::stop_leasing() { runner_->stop_leasing(); }

void JobsService::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_)
      return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (runner_)
    runner_->stop();
  if (webhooks_)
    webhooks_->stop();
  if (coordinator_.joinable())
    coordinator_.join();
  std::lock_guard<std::mutex> lk(mu_);
  for (auto &[id, wt] : waiters_) {
    if (auto j = queue_->get(id); j && *j)
      wt->w->respond(http::Response::json(202, json::serialize(render_job(**j))));
  }
  waiters_.clear();
}

void JobsService::render_metrics(std::ostream &o) const {
  const auto &r = runner_->counters();
  o << "# HELP gantry:jobs_total Job executions by outcome (retried, deferred and lost_lease are "
       "degraded paths).\n# TYPE gantry:jobs_total counter\n";
  for (auto [name, v] :
       {std::pair{"started", r.started.load()}, std::pair{"succeeded", r.succeeded.load()},
        std::pair{"failed", r.failed.load()}, std::pair{"retried", r.retried.load()},
        std::pair{"deferred", r.deferred.load()}, std::pair{"lost_lease", r.lost_leases.load()},
        std::pair{"reclaimed", r.reclaimed.load()}, std::pair{"expired", r.expired.load()}})
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
  std::vector<std::shared_ptr<Waiter>> ready;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto [a, b] = waiters_.equal_range(job.id);
    for (auto it = a; it != b; ++it)
      ready.push_back(it->second);
    waiters_.erase(a, b);
    if (!job.batch_id.empty())
      batches_dirty_ = true;
  }
  if (!job.batch_id.empty())
    cv_.notify_all();
  const std::string body = json::serialize(data);
  for (auto &wt : ready)
    wt->w->respond(http::Response::json(200, body));
}

void JobsService::coordinate() {
  std::unique_lock<std::mutex> lk(mu_);
  auto last_batch_scan = std::chrono::steady_clock::now();
  while (!stopping_) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (auto &[id, wt] : waiters_)
      until = std::min(until, wt->deadline);
    cv_.wait_until(lk, until, [&] { return stopping_ || batches_dirty_ || waiters_added_; });
    waiters_added_ = false;
    if (stopping_)
      break;
    // Prefer-wait deadlines that passed: answer 202 with the job as it is.
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, std::shared_ptr<Waiter>>> due;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second->deadline <= now) {
        due.emplace_back(it->first, it->second);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    const bool scan = batches_dirty_ || now - last_batch_scan > std::chrono::seconds(1);
    batches_dirty_ = false;
    lk.unlock();
    for (auto &[id, wt] : due) {
      auto j = queue_->get(id);
      if (j && *j) {
        http::Response r = http::Response::json(202, json::serialize(render_job(**j)));
        r.headers.push_back({"Location", "/v1/jobs/" + id});
        wt->w->respond(std::move(r));
      } else {
        wt->w->respond(http::error_response(not_found("job", id)));
      }
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
  boost::system::error_code ec;
  json::value v = json::parse(req.body, ec);
  if (ec || !v.is_object())
    return send_error(w, Error::invalid("the body must be a JSON object"));
  const json::object &o = v.as_object();
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
  } else if (std::none_of(models_.begin(), models_.end(),
                          [&](const ModelSpec &m) { return m.name == parsed->model; })) {
    return send_error(w, {ErrorCode::kNotFound, "The model '" + parsed->model + "' does not exist",
                          "body.model"});
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
  const auto wait = prefer_wait_s(req.header("Prefer"));
  if (wait && *wait > 0) {
    // Registered before the job exists, so a job that finishes at once still finds it.
    auto wt = std::make_shared<Waiter>();
    wt->w = w;
    wt->deadline = std::chrono::steady_clock::now() +
                   std::chrono::seconds(std::min(*wait, config_.max_wait_s));
    std::lock_guard<std::mutex> lk(mu_);
    waiters_.emplace(job.id, std::move(wt));
    waiters_added_ = true; // the coordinator recomputes its next deadline
  }
  const std::string id = job.id;
  Job shown = job;
  if (auto st = queue_->enqueue({std::move(job)}); !st) {
    std::lock_guard<std::mutex> lk(mu_);
    waiters_.erase(id);
    return send_error(w, st.error());
  }
  if (wait && *wait > 0) {
    cv_.notify_all();
    return;
  }
  http::Response r = http::Response::json(202, json::serialize(render_job(shown)));
  r.headers.push_back({"Location", "/v1/jobs/" + id});
  w->respond(std::move(r));
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
           runner_->cancel(j->id); // stops the generation at the engine's next step
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
  r.post("/admin/v1/projects/{id}/webhook_secrets", [this](
                                                        http::Request &&req,
                                                        std::shared_ptr<http::ResponseWriter> w) {
    const std::string want = "Bearer " + admin_token_;
    auto h = req.header("Authorization");
    if (admin_token_.empty() || !h || h->size() != want.size() ||
        CRYPTO_memcmp(h->data(), want.data(), want.size()) != 0) {
      return send_error(w, {ErrorCode::kUnauthorized, "A valid admin token is required.", ""});
    }
    int64_t grace_ms = 24 * 3'600'000;
    if (!req.body.empty()) {
      boost::system::error_code ec;
      auto v = json::parse(req.body, ec);
      if (ec || !v.is_object())
        return send_error(w, Error::invalid("the body must be a JSON object"));
      if (auto *g = v.as_object().if_contains("grace_s")) {
        if (!g->is_int64() || g->as_int64() < 0)
          return send_error(w, Error::invalid("grace_s must be >= 0", "grace_s"));
        grace_ms = g->as_int64() * 1000;
      }
    }
    const std::string project(req.path_param("id"));
    const std::string secret = control::generate_webhook_secret();
    if (auto st = records_->rotate_webhook_secret(project, secret, clock_.unix_millis(), grace_ms);
        !st)
      return send_error(w, st.error());
    w->respond(http::Response::json(
        201,
        json::serialize(json::object{
            {"project", project}, {"secret", secret}, {"previous_valid_for_s", grace_ms / 1000}})));
  });

  // The OpenAI Batch API.
  r.post("/v1/files", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto p = authenticate_(req, w);
    if (!p)
      return;
    create_file(std::move(req), std::move(w), *p ? (*p)->project : "");
  });
  auto owned_file =
      [this](http::Request &req,
             const std::shared_ptr<http::ResponseWriter> &w) -> std::optional<jobs::StoredFile> {
    auto p = authenticate_(req, w);
    if (!p)
      return std::nullopt;
    const std::string id(req.path_param("id"));
    auto f = records_->get_file(id);
    if (!f) {
      send_error(w, f.error());
      return std::nullopt;
    }
    if (!*f || (*f)->project != (*p ? (*p)->project : "")) {
      send_error(w, not_found("file", id));
      return std::nullopt;
    }
    return std::move(**f);
  };
  r.get("/v1/files/{id}",
        [owned_file](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          if (auto f = owned_file(req, w))
            w->respond(http::Response::json(200, json::serialize(render_file(*f))));
        });
  r.get("/v1/files/{id}/content",
        [owned_file](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          if (auto f = owned_file(req, w))
            w->respond(http::Response{200, "application/jsonl", {}, std::move(f->content)});
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
  auto owned_batch =
      [this](http::Request &req,
             const std::shared_ptr<http::ResponseWriter> &w) -> std::optional<jobs::Batch> {
    auto p = authenticate_(req, w);
    if (!p)
      return std::nullopt;
    const std::string id(req.path_param("id"));
    auto b = records_->get_batch(id);
    if (!b) {
      send_error(w, b.error());
      return std::nullopt;
    }
    if (!*b || (*b)->project != (*p ? (*p)->project : "")) {
      send_error(w, not_found("batch", id));
      return std::nullopt;
    }
    return std::move(**b);
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
             b->status = "cancelling";
             b->cancelling_ms = clock_.unix_millis();
             if (auto st = records_->put_batch(*b); !st)
               return send_error(w, st.error());
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
                              const std::string &project) {
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
  f.id = ids_.next("file-");
  f.project = project;
  f.bytes = static_cast<int64_t>(f.content.size());
  f.created_ms = clock_.unix_millis();
  if (auto st = records_->put_file(f); !st)
    return send_error(w, st.error());
  w->respond(http::Response::json(200, json::serialize(render_file(f))));
}

void JobsService::create_batch(http::Request &&req, std::shared_ptr<http::ResponseWriter> w,
                               const control::Principal *principal) {
  boost::system::error_code ec;
  json::value v = json::parse(req.body, ec);
  if (ec || !v.is_object())
    return send_error(w, Error::invalid("the body must be a JSON object"));
  const json::object &o = v.as_object();
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
  auto file = records_->get_file(fid->as_string());
  if (!file)
    return send_error(w, file.error());
  if (!*file || (*file)->project != project)
    return send_error(w, not_found("file", fid->as_string()));
  const int64_t now = clock_.unix_millis();
  jobs::Batch b;
  b.id = ids_.next("batch_");
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
  std::vector<Job> lines;
  json::array errors;
  std::set<std::string> seen;
  const std::string &content = (*file)->content;
  size_t start = 0;
  int line_no = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos)
      end = content.size();
    std::string_view line(content.data() + start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos)
      continue;
    auto fail = [&](std::string msg) {
      if (errors.size() < 100)
        errors.push_back(json::object{{"code", "invalid_request"},
                                      {"message", std::move(msg)},
                                      {"param", nullptr},
                                      {"line", line_no}});
    };
    boost::system::error_code lec;
    json::value lv = json::parse(line, lec);
    if (lec || !lv.is_object()) {
      fail("line is not a JSON object");
      continue;
    }
    const json::object &lo = lv.as_object();
    const json::value *cid = lo.if_contains("custom_id");
    const json::value *url = lo.if_contains("url");
    const json::value *method = lo.if_contains("method");
    const json::value *body = lo.if_contains("body");
    if (!cid || !cid->is_string() || cid->as_string().empty()) {
      fail("custom_id is required");
      continue;
    }
    if (!seen.insert(std::string(cid->as_string())).second) {
      fail("custom_id '" + std::string(cid->as_string()) + "' is repeated");
      continue;
    }
    if (method && (!method->is_string() || method->as_string() != "POST")) {
      fail("method must be POST");
      continue;
    }
    if (!url || !url->is_string() || url->as_string() != b.endpoint) {
      fail("url must be the batch's endpoint " + b.endpoint);
      continue;
    }
    auto jb = body ? job_body(*body) : Result<std::string>(Err(Error::invalid("body is required")));
    if (!jb) {
      fail(jb.error().message);
      continue;
    }
    if (auto parsed = api::parse_inference_request(*endpoint_of(b.endpoint), *jb); !parsed) {
      fail(parsed.error().message);
      continue;
    }
    Job j;
    j.id = ids_.next("job_");
    j.project = project;
    j.key_id = b.key_id;
    j.endpoint = b.endpoint;
    j.body = std::move(*jb);
    j.batch_id = b.id;
    j.custom_id = std::string(cid->as_string());
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
      b.status = "failed";
      b.failed_ms = now;
      b.total = 0;
      b.errors = json::serialize(
          json::object{{"object", "list"},
                       {"data", json::array{json::object{{"code", "queue_full"},
                                                         {"message", st.error().message},
                                                         {"param", nullptr},
                                                         {"line", nullptr}}}}});
      (void)records_->put_batch(b);
    }
  }
  w->respond(http::Response::json(200, json::serialize(render_batch(b))));
}

Status JobsService::advance_batch(jobs::Batch b) {
  const int64_t now = clock_.unix_millis();
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
          runner_->cancel(j.id);
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
    return records_->put_batch(b); // progress only
  }
  // Every line is done: write the output and error files, then the final state.
  if (b.status == "in_progress") {
    b.finalizing_ms = now;
    b.status = "finalizing";
    GANTRY_TRY(records_->put_batch(b));
  }
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
    }
    if (static_cast<int>(page.size()) < f.limit)
      break;
    f.after = page.back().id;
  }
  auto put = [&](std::string content, std::string &id_out) -> Status {
    jobs::StoredFile file;
    file.id = ids_.next("file-");
    file.project = b.project;
    file.purpose = "batch_output";
    file.filename = b.id + (&id_out == &b.output_file_id ? "_output.jsonl" : "_error.jsonl");
    file.bytes = static_cast<int64_t>(content.size());
    file.content = std::move(content);
    file.created_ms = now;
    GANTRY_TRY(records_->put_file(file));
    id_out = file.id;
    return Ok();
  };
  if (!out.empty())
    GANTRY_TRY(put(std::move(out), b.output_file_id));
  if (!err.empty())
    GANTRY_TRY(put(std::move(err), b.error_file_id));
  if (b.status == "cancelling") {
    b.status = "cancelled";
    b.cancelled_ms = now;
  } else if (b.status == "finalizing") {
    b.status = "completed";
    b.completed_ms = now;
  }
  return records_->put_batch(b);
}

} // namespace gantry::server
