#include "server/inference_routes.h"

#include "cache/cache_key.h"
#include "http/request_id.h"
#include "server/recording_writer.h"

namespace gantry::server {
namespace {

std::string sha256_hex(std::string_view data) {
  cache::Sha256 h;
  h.update(data);
  return h.hex_digest();
}

api::Usage usage_of(const CallOutcome &o) {
  return {static_cast<int>(o.input_tokens), static_cast<int>(o.output_tokens),
          static_cast<int>(o.cached_tokens)};
}

class HttpInferenceSink final : public InferenceSink {
public:
  HttpInferenceSink(std::shared_ptr<http::ResponseWriter> w, std::shared_ptr<CallOutcome> rec)
      : w_(std::move(w)), rec_(std::move(rec)) {}

  void on_head(const CallHead &head, const CallOutcome &so_far,
               std::function<void()> cancel) override {
    if (head.stream) {
      add_outcome_headers(so_far, stream_headers_);
      if (!head.open_on_first_event)
        open(head);
    }
    // A client that goes away cancels the call at the backend's next step (a held stream head
    // included: the watch is the connection's, not the stream's).
    w_->on_close(std::move(cancel));
  }

  bool opens_on_first_event() const override { return true; }

  void on_progress(const CallHead &head, std::string_view comment) override {
    if (!head.stream)
      return;
    open(head);
    w_->send_comment(comment);
  }

  void on_event(const CallHead &head, const backend::ChoiceEvent &ev) override {
    if (!head.stream)
      return;
    open(head);
    api::ChoiceDelta d;
    d.index = ev.choice;
    // A token whose text is held back (stop string, split character) still sends its logprobs.
    if (!ev.text.empty() || !ev.logprobs.empty()) {
      d.text = ev.text;
      d.logprobs = ev.logprobs.empty() ? nullptr : &ev.logprobs;
      w_->send_event(api::render_chunk(head.endpoint, head.meta, d, head.include_usage));
    }
    // One chunk per tool-call fragment, as OpenAI streams them.
    for (const auto &call : ev.tool_calls) {
      const std::vector<api::ToolCallDelta> one{call};
      api::ChoiceDelta t;
      t.index = ev.choice;
      t.tool_calls = &one;
      w_->send_event(api::render_chunk(head.endpoint, head.meta, t, head.include_usage));
    }
    if (!ev.finish_reason.empty()) {
      d.text = {};
      d.logprobs = nullptr;
      d.finish_reason = ev.finish_reason;
      w_->send_event(api::render_chunk(head.endpoint, head.meta, d, head.include_usage));
    }
  }

  void on_complete(const CallHead *head, CallOutcome &outcome, const CallOutput &output) override {
    *rec_ = outcome; // the record the ObservedWriter writes when the response ends
    if (!head) {
      w_->respond(outcome_error_response(outcome));
      return;
    }
    if (head->stream) {
      if (outcome.status != 200) {
        // A held stream that failed before anything came from upstream (the call's status).
        w_->respond(outcome_error_response(outcome));
        return;
      }
      open(*head);
      if (outcome.error) {
        w_->send_event(http::error_response(*outcome.error).body);
      } else if (head->include_usage) {
        // The cost rides in the usage chunk: a stream has no x-gantry-cost-usd header.
        w_->send_event(api::render_usage_chunk(head->endpoint, head->meta, usage_of(outcome),
                                               outcome.cost_usd));
      }
      w_->send_event("[DONE]");
      w_->end();
      return;
    }
    if (outcome.error) {
      w_->respond(outcome_error_response(outcome));
      return;
    }
    http::Response r = http::Response::json(
        200, api::render_response(head->endpoint, head->meta, output.choices, usage_of(outcome)));
    add_outcome_headers(outcome, r.headers);
    w_->respond(std::move(r));
  }

private:
  // The event stream's head and, for chat (or completions' echo), each choice's first chunk.
  void open(const CallHead &head) {
    if (opened_)
      return;
    opened_ = true;
    w_->start_sse(std::move(stream_headers_));
    const bool chat = head.endpoint == api::Endpoint::kChatCompletions;
    if (chat || !head.echo.empty()) {
      for (int i = 0; i < head.n; ++i) {
        api::ChoiceDelta d;
        d.index = i;
        d.text = head.echo_of(i);
        d.role = chat;
        w_->send_event(api::render_chunk(head.endpoint, head.meta, d, head.include_usage));
      }
    }
  }

  std::shared_ptr<http::ResponseWriter> w_;
  std::shared_ptr<CallOutcome> rec_;
  // Calls reach the sink one at a time (the call's mutex), so these need no lock of their own.
  http::Headers stream_headers_; // from on_head until the stream opens
  bool opened_ = false;
};

} // namespace

std::shared_ptr<InferenceSink> http_inference_sink(std::shared_ptr<http::ResponseWriter> writer,
                                                   std::shared_ptr<CallOutcome> record) {
  return std::make_shared<HttpInferenceSink>(std::move(writer), std::move(record));
}

void InferenceRoutes::handle(api::Endpoint endpoint, http::Request &&req,
                             std::shared_ptr<http::ResponseWriter> w) {
  auto rec = calls_.begin(req, w);
  if (!calls_.open(*w, *rec))
    return;
  auto principal = calls_.authenticate(req, *w, rec.get());
  if (!principal)
    return;
  if (!idempotency(req, *principal, w, rec))
    return;
  auto parsed = api::parse_inference_request(endpoint, req.body);
  if (!parsed) {
    calls_.fail(*w, *rec, parsed.take_error());
    return;
  }
  InferenceInput in;
  in.request = std::move(parsed).value();
  in.principal = std::move(*principal);
  in.call_id = req.call_id;
  in.response_id = http::response_id(req);
  if (auto cc = req.header("cache-control"))
    in.cache_control = std::string(*cc);
  CallOutcome outcome = *rec;
  service_.run(std::move(in), std::move(outcome), http_inference_sink(std::move(w), rec));
}

bool InferenceRoutes::idempotency(const http::Request &req,
                                  const std::optional<control::Principal> &principal,
                                  std::shared_ptr<http::ResponseWriter> &w,
                                  std::shared_ptr<CallOutcome> rec) {
  auto idem = req.header("Idempotency-Key");
  if (!idem)
    return true;
  if (idem->empty() || idem->size() > 255) {
    calls_.fail(*w, *rec,
                Error::invalid("Idempotency-Key must be 1 to 255 characters", "Idempotency-Key"));
    return false;
  }
  // Scoped by caller and endpoint: one tenant can neither collide with nor read another's.
  const std::string scope = (principal ? principal->key_id : std::string("-")) + "|" + req.path +
                            "|" + std::string(*idem);
  auto &store = calls_.control().idempotency();
  auto b = store.begin(scope, sha256_hex(req.body));
  using O = control::IdempotencyStore::Outcome;
  if (b.outcome == O::kMismatch) {
    calls_.fail(*w, *rec,
                {ErrorCode::kUnprocessable,
                 "This Idempotency-Key was already used with a different request body.",
                 "Idempotency-Key"});
    return false;
  }
  if (b.outcome == O::kInFlight) {
    calls_.fail(*w, *rec,
                {ErrorCode::kConflict,
                 "A request with this Idempotency-Key is still being processed; retry later.",
                 "Idempotency-Key"});
    return false;
  }
  if (b.outcome == O::kNotStored) {
    calls_.fail(
        *w, *rec,
        {ErrorCode::kConflict,
         "The response to the first request with this Idempotency-Key was too large to store "
         "for replay; send a new Idempotency-Key to run the request again.",
         "Idempotency-Key"});
    return false;
  }
  if (b.outcome == O::kReplay) {
    const auto &sr = *b.response;
    http::Headers hs;
    for (const auto &[k, v] : sr.headers)
      hs.push_back({k, v});
    hs.push_back({"idempotent-replayed", "true"});
    if (sr.sse) {
      w->start_sse(std::move(hs));
      for (const auto &ev : sr.events)
        w->send_event(ev);
      w->end();
    } else {
      http::Response r{sr.status, sr.content_type, std::move(hs), sr.body};
      w->respond(std::move(r));
    }
    return false;
  }
  // The typed outcome says whether the first attempt succeeded (it is filled before the
  // response ends); a failed or cut-off attempt may be retried for real.
  w = std::make_shared<RecordingWriter>(
      std::move(w),
      [&store, scope, rec](bool complete, control::StoredResponse r) {
        const bool ok = complete && r.status >= 200 && r.status < 300 && !rec->error;
        if (ok) {
          store.complete(scope, std::move(r));
        } else {
          store.abandon(scope);
        }
      },
      store.max_entry_bytes());
  return true;
}

} // namespace gantry::server
