#include "server/typed_api_routes.h"

#include <optional>

#include "http/request_id.h"

namespace gantry::server {
namespace {

api::Usage usage_of(const CallOutcome &o) {
  return {static_cast<int>(o.input_tokens), static_cast<int>(o.output_tokens),
          static_cast<int>(o.cached_tokens)};
}

// Choice 0's text and tool calls as its events arrive (both APIs answer one choice).
struct OutputSoFar {
  std::string text;
  std::vector<api::ToolCall> calls;

  void add(const backend::ChoiceEvent &ev) {
    text += ev.text;
    api::add_tool_call_deltas(calls, ev.tool_calls);
  }
  // The service's choice where it collected one (a cache replay has no events when not
  // streamed), else what the events said.
  void complete_from(const CallOutput &output) {
    if (output.choices.empty())
      return;
    text = output.choices[0].text;
    if (!output.choices[0].tool_calls.empty())
      calls = output.choices[0].tool_calls;
  }
};

void send_all(http::ResponseWriter &w, const api::TypedEvents &events) {
  for (const auto &e : events)
    w.send_named_event(e.name, e.data);
}

// What the Responses and Messages sinks share: the typed event stream, held for a remote model
// until something came from upstream (CallHead::open_on_first_event), cold-start progress, the
// events, and the end of a call as an HTTP error or as the stream's last events.
template <typename Derived, typename Stream> class TypedSink : public InferenceSink {
public:
  TypedSink(std::shared_ptr<http::ResponseWriter> w, std::shared_ptr<CallOutcome> rec,
            std::string id)
      : w_(std::move(w)), rec_(std::move(rec)), id_(std::move(id)) {}

  void on_head(const CallHead &head, const CallOutcome &so_far,
               std::function<void()> cancel) override {
    if (head.stream) {
      add_outcome_headers(so_far, stream_headers_);
      if (!head.open_on_first_event)
        open(head);
    }
    created_ = head.meta.created;
    w_->on_close(std::move(cancel));
  }

  bool opens_on_first_event() const override { return true; }

  // Cold-start progress (issue 14): SSE comments, which the typed event parsers of both SDKs skip.
  void on_progress(const CallHead &head, std::string_view comment) override {
    if (!head.stream)
      return;
    open(head);
    w_->send_comment(comment);
  }

  void on_event(const CallHead &head, const backend::ChoiceEvent &ev) override {
    if (head.stream)
      open(head);
    if (ev.choice != 0)
      return;
    out_.add(ev);
    if (!stream_)
      return;
    send_all(*w_, stream_->text(ev.text));
    for (const auto &d : ev.tool_calls)
      send_all(*w_, stream_->tool_call(d));
  }

protected:
  // An HTTP error rather than a stream's error event: a call that never started, or a remote
  // stream that failed before anything came from upstream.
  bool answers_with_status(const CallHead *head, const CallOutcome &outcome) const {
    return !head || (head->stream && outcome.status != 200);
  }

  // Ends the call unless it is a whole (unstreamed) answer for the derived sink to render.
  bool finished(const CallHead *head, CallOutcome &outcome) {
    *rec_ = outcome; // the record the ObservedWriter writes when the response ends
    if (answers_with_status(head, outcome)) {
      w_->respond(outcome_error_response(outcome));
      return true;
    }
    if (head->stream)
      open(*head);
    if (stream_) {
      send_all(*w_, outcome.error ? stream_->fail(*outcome.error)
                                  : stream_->finish(outcome.finish_reason, usage_of(outcome)));
      w_->end();
      return true;
    }
    if (outcome.error) {
      w_->respond(outcome_error_response(outcome));
      return true;
    }
    return false;
  }

  // A whole answer's result (Responses or Messages) from the call's output.
  template <typename Result>
  Result whole_result(const CallOutcome &outcome, const CallOutput &out) {
    out_.complete_from(out);
    Result result;
    result.text = std::move(out_.text);
    result.tool_calls = std::move(out_.calls);
    result.finish_reason = outcome.finish_reason;
    result.usage = usage_of(outcome);
    return result;
  }

  void respond_whole(const CallOutcome &outcome, std::string body) {
    http::Response r = http::Response::json(200, std::move(body));
    add_outcome_headers(outcome, r.headers);
    w_->respond(std::move(r));
  }

  std::shared_ptr<http::ResponseWriter> w_;
  std::shared_ptr<CallOutcome> rec_;
  const std::string id_;
  int64_t created_ = 0;
  std::optional<Stream> stream_; // the stream, once open
  OutputSoFar out_;

private:
  void open(const CallHead &head) {
    if (stream_)
      return;
    w_->start_sse(std::move(stream_headers_));
    static_cast<Derived *>(this)->start_stream(head);
  }

  http::Headers stream_headers_; // from on_head until the stream opens
};

class ResponsesSink final : public TypedSink<ResponsesSink, api::ResponsesStream> {
public:
  ResponsesSink(std::shared_ptr<http::ResponseWriter> w, std::shared_ptr<CallOutcome> rec,
                std::string id, api::ResponsesSettings settings)
      : TypedSink(std::move(w), std::move(rec), std::move(id)), settings_(std::move(settings)) {}

  void start_stream(const CallHead &head) {
    stream_.emplace(api::ResponsesMeta{id_, head.meta.model, head.meta.created}, settings_);
    send_all(*w_, stream_->start());
  }

  void on_complete(const CallHead *head, CallOutcome &outcome, const CallOutput &output) override {
    if (outcome.error && answers_with_status(head, outcome))
      outcome.error->param = api::responses_param(outcome.error->param);
    if (finished(head, outcome))
      return;
    respond_whole(
        outcome, api::render_responses_object({id_, head->meta.model, created_}, settings_,
                                              whole_result<api::ResponsesResult>(outcome, output)));
  }

private:
  const api::ResponsesSettings settings_;
};

class MessagesSink final : public TypedSink<MessagesSink, api::MessagesStream> {
public:
  using TypedSink::TypedSink;

  void start_stream(const CallHead &head) {
    stream_.emplace(api::MessagesMeta{id_, head.meta.model});
    api::Usage prompt;
    prompt.prompt_tokens = static_cast<int>(head.prompt_tokens);
    send_all(*w_, stream_->start(prompt));
  }

  void on_complete(const CallHead *head, CallOutcome &outcome, const CallOutput &output) override {
    if (outcome.error)
      api::to_anthropic_param(*outcome.error);
    if (finished(head, outcome))
      return;
    respond_whole(outcome, api::render_message({id_, head->meta.model},
                                               whole_result<api::MessagesResult>(outcome, output)));
  }
};

// The status's error when a response carries no typed one (none of this module's paths).
Error error_for_status(int status) {
  ErrorCode code = ErrorCode::kInternal;
  switch (status) {
  case 400: code = ErrorCode::kInvalidArgument; break;
  case 401: code = ErrorCode::kUnauthorized; break;
  case 403: code = ErrorCode::kPermissionDenied; break;
  case 404: code = ErrorCode::kNotFound; break;
  case 413: code = ErrorCode::kPayloadTooLarge; break;
  case 429: code = ErrorCode::kRateLimited; break;
  case 503: code = ErrorCode::kUnavailable; break;
  default: break;
  }
  return {code, "HTTP " + std::to_string(status), ""};
}

class AnthropicErrorWriter final : public http::ResponseWriter {
public:
  AnthropicErrorWriter(std::shared_ptr<http::ResponseWriter> inner,
                       std::shared_ptr<CallOutcome> rec)
      : inner_(std::move(inner)), rec_(std::move(rec)) {}

  void respond(http::Response r) override {
    if (r.status >= 400) {
      const Error e = rec_->error ? *rec_->error : error_for_status(r.status);
      r.status = api::anthropic_status(e.code);
      r.content_type = "application/json";
      r.body = api::render_anthropic_error(e);
    }
    inner_->respond(std::move(r));
  }
  void start_sse(http::Headers headers) override { inner_->start_sse(std::move(headers)); }
  bool send_event(std::string data) override { return inner_->send_event(std::move(data)); }
  bool send_named_event(std::string_view name, std::string data) override {
    return inner_->send_named_event(name, std::move(data));
  }
  void end() override { inner_->end(); }
  bool is_closed() const override { return inner_->is_closed(); }
  void on_close(std::function<void()> cb) override { inner_->on_close(std::move(cb)); }
  const std::string &request_id() const override { return inner_->request_id(); }

private:
  std::shared_ptr<http::ResponseWriter> inner_;
  std::shared_ptr<CallOutcome> rec_;
};

InferenceInput input_for(http::Request &req, api::InferenceRequest request,
                         std::optional<control::Principal> principal) {
  InferenceInput in;
  in.request = std::move(request);
  in.principal = std::move(principal);
  in.call_id = req.call_id;
  in.response_id = http::response_id(req);
  if (auto cc = req.header("cache-control"))
    in.cache_control = std::string(*cc);
  return in;
}

} // namespace

bool is_anthropic_path(std::string_view path) {
  return path == "/v1/messages" || path == "/v1/messages/count_tokens";
}

std::shared_ptr<http::ResponseWriter>
anthropic_error_writer(std::shared_ptr<http::ResponseWriter> w,
                       std::shared_ptr<CallOutcome> record) {
  return std::make_shared<AnthropicErrorWriter>(std::move(w), std::move(record));
}

std::shared_ptr<InferenceSink> responses_sink(std::shared_ptr<http::ResponseWriter> writer,
                                              std::shared_ptr<CallOutcome> record,
                                              std::string response_id,
                                              api::ResponsesSettings settings) {
  return std::make_shared<ResponsesSink>(std::move(writer), std::move(record),
                                         std::move(response_id), std::move(settings));
}

std::shared_ptr<InferenceSink> messages_sink(std::shared_ptr<http::ResponseWriter> writer,
                                             std::shared_ptr<CallOutcome> record,
                                             std::string message_id) {
  return std::make_shared<MessagesSink>(std::move(writer), std::move(record),
                                        std::move(message_id));
}

void TypedApiRoutes::responses(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  auto rec = calls_.begin(req, w);
  if (!calls_.open(*w, *rec))
    return;
  auto principal = calls_.authenticate(req, *w, rec.get());
  if (!principal)
    return;
  auto parsed = api::parse_responses_request(req.body);
  if (!parsed) {
    calls_.fail(*w, *rec, parsed.take_error());
    return;
  }
  InferenceInput in = input_for(req, std::move(parsed->request), std::move(*principal));
  const std::string id = "resp_" + in.response_id;
  service_.run(std::move(in), *rec,
               responses_sink(std::move(w), rec, id, std::move(parsed->settings)));
}

std::shared_ptr<CallOutcome>
TypedApiRoutes::messages_prologue(http::Request &req, std::shared_ptr<http::ResponseWriter> &w,
                                  std::optional<control::Principal> &principal) {
  auto rec = calls_.begin(req, w);
  w = anthropic_error_writer(std::move(w), rec);
  if (!calls_.open(*w, *rec))
    return nullptr;
  auto auth = calls_.authenticate(req, *w, rec.get(), KeyHeaders::kBearerOrXApiKey);
  if (!auth)
    return nullptr;
  principal = std::move(*auth);
  return rec;
}

void TypedApiRoutes::messages(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  std::optional<control::Principal> principal;
  auto rec = messages_prologue(req, w, principal);
  if (!rec)
    return;
  auto parsed = api::parse_messages_request(req.body);
  if (!parsed) {
    calls_.fail(*w, *rec, parsed.take_error());
    return;
  }
  InferenceInput in = input_for(req, std::move(parsed).value(), std::move(principal));
  const std::string id = "msg_" + in.response_id;
  service_.run(std::move(in), *rec, messages_sink(std::move(w), rec, id));
}

void TypedApiRoutes::count_tokens(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  std::optional<control::Principal> principal;
  auto rec = messages_prologue(req, w, principal);
  if (!rec)
    return;
  auto parsed = api::parse_count_tokens_request(req.body);
  if (!parsed) {
    calls_.fail(*w, *rec, parsed.take_error());
    return;
  }
  rec->model = parsed->model;
  InferenceInput in = input_for(req, std::move(parsed).value(), std::move(principal));
  service_.count_tokens(std::move(in), [this, w, rec](Result<int64_t> n) {
    if (!n) {
      calls_.fail(*w, *rec, n.take_error());
      return;
    }
    w->respond(http::Response::json(200, api::render_count_tokens(*n)));
  });
}

} // namespace gantry::server
