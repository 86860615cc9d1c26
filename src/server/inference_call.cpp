#include "server/inference_call.h"

#include <algorithm>

namespace gantry::server {

InferenceCall::InferenceCall(api::Endpoint endpoint, api::ResponseMeta meta, bool stream,
                             bool include_usage, std::string echo_prefix, int prompt_tokens,
                             std::shared_ptr<http::ResponseWriter> writer, ModelWorker &worker,
                             CallHooks hooks)
    : endpoint_(endpoint), meta_(std::move(meta)), stream_(stream), include_usage_(include_usage),
      echo_prefix_(std::move(echo_prefix)), prompt_tokens_(prompt_tokens),
      writer_(std::move(writer)), worker_(worker), hooks_(std::move(hooks)) {}

void InferenceCall::add_header(std::string name, std::string value) {
  headers_.push_back({std::move(name), std::move(value)});
}

void InferenceCall::store_result_in(ResponseCache &cache, std::string key,
                                    std::chrono::seconds ttl) {
  cache_ = &cache;
  cache_key_ = std::move(key);
  cache_ttl_ = ttl;
}

Status InferenceCall::start(const std::vector<engine::GenerationRequest> &choices) {
  std::unique_lock<std::mutex> lk(mu_);
  choices_.resize(choices.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    auto t = worker_.submit(choices[i], shared_from_this());
    if (!t) {
      for (size_t j = 0; j < i; ++j)
        worker_.cancel(choices_[j].ticket);
      // The cancelled ones will still report; make sure they render nothing.
      responded_ = true;
      return t.take_error();
    }
    choices_[i].ticket = *t;
  }
  if (stream_) {
    http::Headers sse_headers = hooks_.headers;
    sse_headers.insert(sse_headers.end(), headers_.begin(), headers_.end());
    writer_->start_sse(std::move(sse_headers));
    for (size_t i = 0; i < choices_.size(); ++i) {
      std::string head =
          api::render_chunk(endpoint_, meta_, static_cast<int>(i), echo_prefix_,
                            endpoint_ == api::Endpoint::kChatCompletions, "", include_usage_);
      if (endpoint_ == api::Endpoint::kChatCompletions || !echo_prefix_.empty()) {
        writer_->send_event(std::move(head));
      }
    }
  }
  lk.unlock(); // on_close may run its callback inline, which takes mu_
  // A client that goes away cancels its sequences at the engine's next step.
  std::weak_ptr<InferenceCall> weak = shared_from_this();
  writer_->on_close([weak] {
    if (auto self = weak.lock())
      self->cancel_all();
  });
  return Ok();
}

void InferenceCall::cancel_all() {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto &c : choices_) {
    if (!c.done)
      worker_.cancel(c.ticket);
  }
}

int InferenceCall::index_of(Ticket t) const {
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i].ticket == t)
      return static_cast<int>(i);
  }
  return -1;
}

void InferenceCall::on_event(Ticket ticket, const engine::TokenEvent &ev) {
  std::lock_guard<std::mutex> lk(mu_);
  const int i = index_of(ticket);
  if (i < 0)
    return;
  ChoiceState &c = choices_[i];
  if (ev.finish == engine::FinishReason::kCancelled) {
    c.done = true;
    c.generated = ev.n_generated;
    if (!failure_)
      failure_ = Error{ErrorCode::kUnavailable, "the request was cancelled", ""};
    finish_if_done();
    return;
  }
  c.generated = ev.n_generated;
  c.cached = ev.n_cached;
  c.text += ev.text;
  if (ev.token >= 0) {
    const auto now = std::chrono::steady_clock::now();
    if (!first_token_)
      first_token_ = now;
    if (hooks_.inter_token && c.last_token != std::chrono::steady_clock::time_point{}) {
      hooks_.inter_token->observe(std::chrono::duration<double>(now - c.last_token).count());
    }
    c.last_token = now;
  }
  if (cache_ && !ev.text.empty())
    c.pieces.push_back(ev.text);
  const bool finished = ev.finish != engine::FinishReason::kNone;
  if (finished) {
    c.done = true;
    c.finish = engine::finish_reason_name(ev.finish);
  }
  if (stream_ && !responded_) {
    if (!ev.text.empty()) {
      writer_->send_event(
          api::render_chunk(endpoint_, meta_, i, ev.text, false, "", include_usage_));
    }
    if (finished) {
      writer_->send_event(
          api::render_chunk(endpoint_, meta_, i, "", false, c.finish, include_usage_));
    }
  }
  if (finished)
    finish_if_done();
}

void InferenceCall::on_rejected(Ticket ticket, const Error &error) {
  std::lock_guard<std::mutex> lk(mu_);
  const int i = index_of(ticket);
  if (i < 0)
    return;
  choices_[i].done = true;
  failure_ = error;
  for (const auto &c : choices_) {
    if (!c.done)
      worker_.cancel(c.ticket);
  }
  finish_if_done();
}

void InferenceCall::on_timing(Ticket, const SeqTiming &timing) {
  std::lock_guard<std::mutex> lk(mu_);
  engine_seconds_ += timing.engine_seconds;
  if (!timing_)
    timing_ = timing;
}

http::Headers InferenceCall::run_finish_hook(int status, const api::Usage &usage) {
  http::Headers add;
  if (!hooks_.on_finish)
    return add;
  using ms = std::chrono::duration<double, std::milli>;
  CallResult r;
  r.status = status;
  r.prompt_tokens = usage.prompt_tokens;
  r.completion_tokens = usage.completion_tokens;
  r.cached_tokens = usage.cached_tokens;
  r.engine_seconds = engine_seconds_;
  const auto now = std::chrono::steady_clock::now();
  r.latency_ms = ms(now - hooks_.arrived).count();
  r.ttft_ms = first_token_ ? ms(*first_token_ - hooks_.arrived).count() : r.latency_ms;
  r.finish_reason = status == 200 && !choices_.empty() ? choices_[0].finish : "error";
  if (timing_) {
    using T = std::chrono::steady_clock::time_point;
    auto span = [](T a, T b) { return a == T{} || b == T{} ? 0.0 : ms(b - a).count(); };
    r.queue_ms = span(timing_->submitted, timing_->scheduled);
    r.prefill_ms = span(timing_->scheduled, timing_->first_token);
    r.decode_ms = span(timing_->first_token, timing_->finished);
  }
  hooks_.on_finish(r, add);
  return add;
}

void InferenceCall::finish_if_done() {
  for (const auto &c : choices_) {
    if (!c.done)
      return;
  }
  if (responded_)
    return;
  responded_ = true;
  const bool failed =
      failure_.has_value() && std::any_of(choices_.begin(), choices_.end(),
                                          [](const ChoiceState &c) { return c.finish.empty(); });
  api::Usage usage;
  usage.prompt_tokens = prompt_tokens_;
  for (const auto &c : choices_)
    usage.completion_tokens += c.generated;
  // The prompt is counted once for all choices; report the best reuse among them.
  for (const auto &c : choices_)
    usage.cached_tokens = std::max(usage.cached_tokens, c.cached);
  if (cache_ && !failure_)
    store_result();
  const int status = failed ? http_status(failure_->code) : 200;
  http::Headers added = run_finish_hook(status, usage);
  if (stream_) {
    if (failed) {
      writer_->send_event(http::error_response(*failure_).body);
    } else if (include_usage_) {
      writer_->send_event(api::render_usage_chunk(endpoint_, meta_, usage));
    }
    writer_->send_event("[DONE]");
    writer_->end();
    return;
  }
  if (failed) {
    http::Response r = http::error_response(*failure_);
    r.headers.insert(r.headers.end(), headers_.begin(), headers_.end());
    for (auto &h : hooks_.headers)
      r.headers.push_back(h);
    for (auto &h : added)
      r.headers.push_back(std::move(h));
    writer_->respond(std::move(r));
    return;
  }
  std::vector<api::Choice> out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    out.push_back({static_cast<int>(i), echo_prefix_ + choices_[i].text, choices_[i].finish});
  }
  http::Response r = http::Response::json(200, api::render_response(endpoint_, meta_, out, usage));
  r.headers.insert(r.headers.end(), headers_.begin(), headers_.end());
  for (auto &h : hooks_.headers)
    r.headers.push_back(h);
  for (auto &h : added)
    r.headers.push_back(std::move(h));
  writer_->respond(std::move(r));
}

void InferenceCall::store_result() {
  CachedCompletion result;
  result.prompt_tokens = prompt_tokens_;
  for (auto &c : choices_) {
    if (c.finish != "stop" && c.finish != "length")
      return;
    result.choices.push_back({std::move(c.pieces), c.finish, c.generated});
  }
  cache_->store(cache_key_, cache_ttl_, result);
}

} // namespace gantry::server
