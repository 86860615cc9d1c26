// JobsService's executor: runs a job as the key that submitted it, through one typed
// InferenceService call whose CallOutcome becomes the job's result.
#include <boost/json.hpp>

#include <mutex>

#include "server/jobs_api.h"
#include "server/jobs_wire.h"

namespace gantry::server {
namespace json = boost::json;
using jobs::Job;
using jobs::JobStatus;

// Runs a job as the key that submitted it: one typed call to the InferenceService, whose
// CallOutcome becomes the job's result (the rendered response body, the cost, the retry delay).
class JobsService::Executor final : public jobs::JobExecutor {
public:
  Executor(JobsService &svc) : svc_(svc) {}

  std::function<void()> start(const Job &job, std::function<void(jobs::ExecResult)> done) override {
    std::optional<control::Principal> principal;
    if (!job.key_id.empty()) {
      auto key = svc_.control_.key_store().get_key(job.key_id);
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
    // The ledger dedups on the request id, so a job re-executed after a crash is billed once.
    // A deferral (overload) already left a refusal row under the current id: the next
    // execution takes a new one. The id is server-owned: a client's x-request-id never
    // becomes a ledger key (audit H4), so no tenant can pre-claim a job's row.
    const std::string request_id =
        job.deferrals == 0 ? job.id : job.id + "." + std::to_string(job.deferrals);
    CallOutcome outcome = svc_.calls_->outcome(request_id, job.endpoint);
    outcome.key_id = job.key_id;
    outcome.project = job.project;
    auto sink = std::make_shared<Sink>(svc_, std::move(done));
    if (svc_.calls_->shutting_down()) {
      Error e{ErrorCode::kUnavailable, "the server is shutting down", ""};
      outcome.status = http_status(e.code);
      outcome.error = std::move(e);
      sink->on_complete(nullptr, outcome, {});
      return [] {};
    }
    const auto endpoint = endpoint_of(job.endpoint).value_or(api::Endpoint::kChatCompletions);
    auto parsed = api::parse_inference_request(endpoint, job.body);
    if (!parsed) {
      outcome.status = http_status(parsed.error().code);
      outcome.error = parsed.take_error();
      sink->on_complete(nullptr, outcome, {});
      return [] {};
    }
    InferenceInput in;
    in.request = std::move(parsed).value();
    in.principal = std::move(principal);
    in.call_id = request_id;
    in.response_id = request_id; // the job's id: a job's result names its job
    svc_.inference_->run(std::move(in), std::move(outcome), sink);
    std::weak_ptr<Sink> weak = sink;
    return [weak] {
      if (auto s = weak.lock())
        s->cancel();
    };
  }

private:
  // Receives the typed outcome. The usage row is the control plane's settlement (one row, keyed
  // by the job's request id); it is flushed to the store before the job is recorded as done, so
  // a crash in between re-runs the job, whose row the ledger then ignores.
  class Sink final : public InferenceSink {
  public:
    Sink(JobsService &svc, std::function<void(jobs::ExecResult)> done)
        : svc_(svc), done_(std::move(done)) {}

    void on_head(const CallHead &, const CallOutcome &, std::function<void()> cancel) override {
      bool now = false;
      {
        std::lock_guard<std::mutex> lk(mu_);
        cancel_ = std::move(cancel);
        now = cancelled_;
      }
      if (now)
        cancel_();
    }
    void on_event(const CallHead &, const backend::ChoiceEvent &) override {}

    void on_complete(const CallHead *head, CallOutcome &outcome,
                     const CallOutput &output) override {
      svc_.calls_->record(outcome); // metrics and the request log, like any call
      jobs::ExecResult r;
      r.status = outcome.status;
      r.cost_usd = outcome.cost_usd;
      if (outcome.error) {
        const Error &e = *outcome.error;
        r.body = http::error_response(e).body;
        const bool retryable = e.code == ErrorCode::kQueueFull ||
                               e.code == ErrorCode::kRateLimited ||
                               e.code == ErrorCode::kCircuitOpen;
        if (retryable || e.retry_after_ms > 0)
          r.retry_after_ms = e.retry_after_ms > 0 ? e.retry_after_ms : 1000;
      } else if (head) {
        api::Usage u{static_cast<int>(outcome.input_tokens),
                     static_cast<int>(outcome.output_tokens),
                     static_cast<int>(outcome.cached_tokens)};
        r.body = api::render_response(head->endpoint, head->meta, output.choices, u);
        if (auto st = svc_.control_.flush(); !st) {
          // Without its usage row the job must not be recorded as done: run it again later.
          r = {503, R"({"error":{"message":"usage could not be recorded"}})", 0, 1000};
        }
      }
      std::function<void(jobs::ExecResult)> d;
      {
        std::lock_guard<std::mutex> lk(mu_);
        d.swap(done_);
        cancel_ = nullptr;
      }
      if (d)
        d(std::move(r));
    }

    void cancel() {
      std::function<void()> c;
      {
        std::lock_guard<std::mutex> lk(mu_);
        cancelled_ = true;
        c = cancel_;
      }
      if (c)
        c();
    }

  private:
    JobsService &svc_;
    std::mutex mu_;
    std::function<void(jobs::ExecResult)> done_;
    std::function<void()> cancel_;
    bool cancelled_ = false;
  };

  JobsService &svc_;
};

std::unique_ptr<jobs::JobExecutor> JobsService::make_executor(JobsService &svc) {
  return std::make_unique<Executor>(svc);
}

} // namespace gantry::server
