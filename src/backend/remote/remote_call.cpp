#include "backend/remote/remote_call.h"

#include <algorithm>

#include "core/utf8.h"
#include "http/client.h"

namespace gantry::backend::remote {

namespace {

using Steady = std::chrono::steady_clock;

double ms_between(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

} // namespace

ErrorKind transport_error_kind(const Error &e) {
  if (e.param == http::kConnectFailed || e.param == http::kTlsFailed ||
      e.param == http::kUpstreamReset)
    return ErrorKind::kConnect;
  if (e.param == http::kConnectTimeout || e.param == http::kFirstByteTimeout ||
      e.param == http::kIdleTimeout || e.param == http::kTotalTimeout)
    return ErrorKind::kTimeout;
  if (e.param == http::kBadResponse || e.param == http::kResponseTooLarge)
    return ErrorKind::kBadResponse;
  return ErrorKind::kOther;
}

// What a client sees of a transport failure: a 503 (or 504-like timeout) naming the phase,
// never the upstream's address.
Error client_transport_error(const Error &transport, std::string_view model) {
  std::string what = "the upstream of model '" + echoed(model) + "' ";
  if (transport.param == http::kConnectTimeout)
    what += "did not accept a connection in time (connect timeout)";
  else if (transport.param == http::kFirstByteTimeout)
    what += "did not start answering in time (first-byte timeout)";
  else if (transport.param == http::kIdleTimeout)
    what += "stopped sending mid-response (idle timeout)";
  else if (transport.param == http::kTotalTimeout)
    what += "did not finish in time (total timeout)";
  else if (transport.param == http::kConnectFailed)
    what += "cannot be reached";
  else if (transport.param == http::kTlsFailed)
    what += "failed the TLS handshake or certificate check";
  else if (transport.param == http::kResponseTooLarge)
    what += "sent a response larger than the limit";
  else if (transport.param == http::kCancelledCall)
    return Error{ErrorCode::kCancelled, "cancelled", {}};
  else
    what += "broke the connection";
  return Error{ErrorCode::kUnavailable, std::move(what), {}};
}

bool retryable_status(int status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504 ||
         status == 529;
}

RemoteBackend::Call::Call(RemoteBackend &backend, std::shared_ptr<const State> state,
                          std::shared_ptr<CallSink> sink)
    : b_(backend), loop_(http::IoLoop::current() ? http::IoLoop::current() : backend.loop_.get()),
      state_(std::move(state)), sink_(std::move(sink)) {
  const auto &r = state_->request;
  const std::size_t n_prompts =
      r.endpoint == api::Endpoint::kCompletions ? std::max<std::size_t>(1, r.prompts.size()) : 1;
  finished_.assign(n_prompts * static_cast<std::size_t>(std::max(1, r.n)), false);
}

void RemoteBackend::Call::cancel() {
  cancelled_.store(true);
  std::shared_ptr<http::AsyncUpstreamCall> u;
  {
    std::lock_guard<std::mutex> lk(mu_);
    u = upstream_;
    if (timer_)
      timer_->cancel(); // a back-off or a queue wait ends now
  }
  if (u)
    u->cancel();
}

void RemoteBackend::Call::wake() {
  std::lock_guard<std::mutex> lk(mu_);
  if (timer_)
    timer_->cancel();
}

// Arms the timer; a cancel() that raced the arming is seen here (it set the flag before
// cancelling the timer, so either its cancel or this one comes after the wait).
void RemoteBackend::Call::post_begin() {
  loop_->post([self = shared_from_this()] { self->begin(); });
}

void RemoteBackend::Call::wait(Steady::duration d, std::function<void(bool)> then) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!timer_) // made on first use: most calls never wait
      timer_ = std::make_unique<http::Timer>(*loop_);
  }
  timer_->wait(d, std::move(then));
  if (cancelled_.load())
    timer_->cancel();
}

void RemoteBackend::Call::begin() {
  t_start_ = b_.clock_.now();
  b_.pool_->record_request();
  next_attempt();
}

void RemoteBackend::Call::next_attempt() {
  ++attempt_;
  failure_.reset();
  retry_ = false;
  acquire();
}

void RemoteBackend::Call::acquire() {
  if (queued_ && cancelled_.load()) {
    queued_ = false;
    b_.pool_->leave_queue();
    return lease_failed(Error{ErrorCode::kCancelled, "cancelled while queued", {}});
  }
  const uint64_t gen = b_.slot_generation_.load();
  auto got = b_.pool_->try_acquire(exclude_, state_->affinity);
  if (!got) {
    if (queued_) {
      queued_ = false;
      b_.pool_->leave_queue();
    }
    return lease_failed(got.take_error());
  }
  if (*got) {
    if (queued_) {
      queued_ = false;
      b_.pool_->leave_queue();
    }
    lease_ = **got;
    return send();
  }
  // Every usable backend is at its max_concurrent: wait in the queue for a freed slot.
  const auto now = b_.clock_.now();
  if (!queued_) {
    if (auto entered = b_.pool_->enter_queue(); !entered)
      return lease_failed(entered.take_error());
    queued_ = true;
    queue_deadline_ = now + b_.pool_->max_queue_wait();
  }
  if (now >= queue_deadline_) {
    queued_ = false;
    b_.pool_->leave_queue();
    return lease_failed(b_.pool_->queue_timeout());
  }
  auto self = shared_from_this();
  std::lock_guard<std::mutex> lk(b_.waiters_mu_);
  if (b_.slot_generation_.load() != gen) { // a slot was freed since the try: try again
    loop_->post([self] { self->acquire(); });
    return;
  }
  b_.waiters_.push_back(self);
  // Armed under the lock: a wake (which cancels the timer) cannot slip in before the wait.
  wait(queue_deadline_ - now, [self](bool) {
    {
      std::lock_guard<std::mutex> lk(self->b_.waiters_mu_);
      std::erase(self->b_.waiters_, self);
    }
    self->acquire();
  });
}

// No backend for this attempt: every usable one is cooling down (Retry-After) or ejected —
// waited out when short — or the queue refused.
void RemoteBackend::Call::lease_failed(Error error) {
  const auto &config = b_.config_;
  failure_ = upstream_failure_ ? *upstream_failure_ : error;
  int64_t wait_ms = 0;
  if (error.code == ErrorCode::kUnavailable && !exclude_.empty() &&
      error.retry_after_ms <= config.max_retry_wait.count()) {
    exclude_.clear();
    wait_ms = error.retry_after_ms;
    retry_ = attempt_ < config.max_attempts && b_.pool_->allow_retry();
  } else if (error.code == ErrorCode::kUnavailable && exclude_.empty() &&
             error.retry_after_ms <= config.max_retry_wait.count() &&
             attempt_ < config.max_attempts && b_.pool_->allow_retry()) {
    wait_ms = error.retry_after_ms;
    retry_ = true;
  }
  after_attempt(wait_ms);
}

void RemoteBackend::Call::send() {
  ep_ = b_.endpoint(lease_->index); // held for the attempt: membership may change
  Endpoint &ep = *ep_;
  const auto &r = state_->request;
  summary_.served_by = ep.served_by;
  served_reports_cost_ = ep.reports_cost;
  outcome_ = Outcome::kSuccess;
  ekind_.reset();
  retry_after_ = 0;
  attempt_start_ = b_.clock_.now();
  const bool stream = r.stream;
  auto body = ep.codec->request_body(r, ep.model, stream, state_->default_max_tokens);
  if (!body) {
    sent_ = b_.clock_.now();
    outcome_ = Outcome::kFailure;
    ekind_ = transport_error_kind(body.error());
    failure_ = client_transport_error(body.error(), b_.config_.name);
    return end_attempt();
  }
  const int which = r.endpoint == api::Endpoint::kChatCompletions ? 0 : 1;
  auto self = shared_from_this();
  auto up = ep.async_client->call(http::Method::kPost, ep.path[which], std::move(*body),
                                  ep.headers[stream ? 1 : 0], loop_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    upstream_ = up;
  }
  if (cancelled_.load())
    up->cancel();
  up->start([self](Status head) { self->on_head(std::move(head)); });
}

void RemoteBackend::Call::on_head(Status head) {
  sent_ = b_.clock_.now();
  auto self = shared_from_this();
  if (!head) {
    const Error &e = head.error();
    if (e.param == http::kCancelledCall) {
      outcome_ = Outcome::kNeutral;
      failure_ = Error{ErrorCode::kCancelled, "cancelled", {}};
    } else {
      outcome_ = Outcome::kFailure;
      ekind_ = transport_error_kind(e);
      failure_ = client_transport_error(e, b_.config_.name);
      // Connect errors and resets before the head are safe to retry; a first-byte timeout may
      // mean the upstream is still working on it: not retried.
      retry_ = e.param != http::kFirstByteTimeout && e.param != http::kTotalTimeout &&
               e.param.size() > 0;
    }
    return end_attempt();
  }
  http::AsyncUpstreamCall &u = *upstream_;
  if (u.status() < 200 || u.status() > 299) {
    u.read_all(64 * 1024, [self](Result<std::string> err_body) {
      http::AsyncUpstreamCall &u = *self->upstream_;
      const int status = u.status();
      Endpoint &ep = *self->ep_;
      Error e = ep.codec->error_from(status, err_body ? *err_body : std::string());
      e.message = scrub_upstream_message(e.message, self->b_.secrets());
      self->retry_after_ = retry_after_ms(u.header("retry-after"), u.header("retry-after-ms"));
      if (status == 429) {
        self->outcome_ = Outcome::kOverloaded;
        self->ekind_ = ErrorKind::kStatus429;
      } else if (status >= 500) {
        self->outcome_ = Outcome::kFailure;
        self->ekind_ = ErrorKind::kStatus5xx;
      }
      if (self->retry_after_ > 0)
        e.retry_after_ms = self->retry_after_;
      self->retry_ = retryable_status(status);
      self->failure_ = std::move(e);
      self->end_attempt();
    });
    return;
  }
  const std::string_view ctype = u.header("content-type").value_or("");
  if (ctype.find("text/event-stream") != std::string_view::npos) {
    parser_.emplace(b_.config_.sse);
    decoder_ = ep_->codec->stream_decoder();
    done_ = false;
    return read_stream();
  }
  u.read_all(b_.config_.max_response_bytes,
             [self](Result<std::string> body) { self->on_body(std::move(body)); });
}

void RemoteBackend::Call::on_body(Result<std::string> all) {
  const Endpoint &ep = *ep_;
  if (!all) {
    failure_ = client_transport_error(all.error(), b_.config_.name);
    outcome_ = failure_->code == ErrorCode::kCancelled ? Outcome::kNeutral : Outcome::kFailure;
    ekind_ = transport_error_kind(all.error());
    retry_ = all.error().param == http::kUpstreamReset;
  } else if (auto parsed = ep.codec->parse_response(*all); !parsed) {
    failure_ = parsed.error();
    failure_->message = scrub_upstream_message(failure_->message, b_.secrets());
    outcome_ = Outcome::kFailure;
    ekind_ = ErrorKind::kBadResponse;
  } else {
    usage_ = parsed->usage;
    if (usage_ && !usage_->cost_usd && upstream_) // a whole response carries it as a header
      if (auto h = upstream_->header("x-gantry-cost-usd"))
        usage_->cost_usd = parse_cost(*h);
    // One event per choice carries all its tokens (the response cache replays them).
    const int64_t per_choice =
        usage_ ? usage_->completion_tokens /
                     std::max<int64_t>(1, static_cast<int64_t>(parsed->choices.size()))
               : 0;
    for (const auto &ch : parsed->choices)
      emit(ch, per_choice > 0 ? static_cast<int>(per_choice)
                              : static_cast<int>(b_.count_tokens(ch.text)));
  }
  end_attempt();
}

void RemoteBackend::Call::read_stream() {
  upstream_->read_some([self = shared_from_this()](Result<std::optional<std::string_view>> piece) {
    self->on_piece(std::move(piece));
  });
}

void RemoteBackend::Call::on_piece(Result<std::optional<std::string_view>> piece) {
  const auto &name = b_.config_.name;
  if (!piece) {
    failure_ = client_transport_error(piece.error(), name);
    if (failure_->code != ErrorCode::kCancelled) {
      outcome_ = Outcome::kFailure;
      ekind_ = transport_error_kind(piece.error());
    } else {
      outcome_ = Outcome::kNeutral;
    }
    return stream_end();
  }
  if (!*piece) {
    const bool all_finished =
        std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; });
    if (!parser_->at_boundary() || !all_finished) {
      failure_ =
          Error{ErrorCode::kUnavailable,
                "the upstream of model '" + name + "' ended its stream early (cut mid-response)",
                {}};
      outcome_ = Outcome::kFailure;
      ekind_ = ErrorKind::kBadResponse;
    }
    return stream_end();
  }
  events_.clear();
  if (auto fed = parser_->feed(**piece, events_); !fed) {
    failure_ = Error{ErrorCode::kUnavailable,
                     "the upstream of model '" + name +
                         "' sent a malformed event stream: " + fed.error().message,
                     {}};
    outcome_ = Outcome::kFailure;
    ekind_ = ErrorKind::kBadResponse;
    return stream_end();
  }
  deliver(0);
}

void RemoteBackend::Call::deliver(std::size_t from) {
  for (std::size_t i = from; i < events_.size(); ++i) {
    const bool started = output_started_;
    auto step = decoder_->on_event(events_[i]);
    if (!step) {
      failure_ = step.error();
      failure_->message = scrub_upstream_message(failure_->message, b_.secrets());
      ekind_ = ErrorKind::kBadResponse;
      outcome_ = Outcome::kFailure;
      return stream_end();
    }
    for (const auto &d : step->deltas)
      emit(d);
    if (step->usage)
      usage_ = step->usage;
    if (step->done) {
      done_ = true;
      return stream_end();
    }
    if (!started && output_started_ && i + 1 < events_.size()) {
      // The first output of the call, with more events behind it in the same read (an upstream
      // that sends a burst): the client's first bytes are queued and their write posted, so the
      // rest waits one turn of the loop behind that write instead of the write waiting for the
      // whole burst to be decoded and rendered.
      loop_->post([self = shared_from_this(), i] { self->deliver(i + 1); });
      return;
    }
  }
  read_stream();
}

void RemoteBackend::Call::stream_end() {
  if (!failure_ && !done_ &&
      !std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; })) {
    failure_ = Error{ErrorCode::kUnavailable, "upstream stream ended early", {}};
    outcome_ = Outcome::kFailure;
    ekind_ = ErrorKind::kBadResponse;
  }
  if (done_ && !failure_)
    return drain(4); // to the end, so the connection can be kept
  retry_ = failure_ && !output_started_ && outcome_ == Outcome::kFailure &&
           ekind_ != ErrorKind::kTimeout;
  end_attempt();
}

void RemoteBackend::Call::drain(int left) {
  if (left == 0)
    return end_attempt();
  upstream_->read_some(
      [self = shared_from_this(), left](Result<std::optional<std::string_view>> rest) {
        if (!rest || !*rest)
          return self->end_attempt();
        self->drain(left - 1);
      });
}

void RemoteBackend::Call::end_attempt() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    upstream_.reset(); // its connection goes back to the keep-alive pool when reusable
  }
  const auto &config = b_.config_;
  if (failure_ && failure_->code != ErrorCode::kCancelled)
    upstream_failure_ = failure_;
  b_.pool_->release(*lease_, outcome_, ekind_, retry_after_,
                    std::chrono::duration<double>(b_.clock_.now() - attempt_start_));
  b_.wake_waiters();
  if (failure_ && failure_->code == ErrorCode::kCancelled)
    return finish();
  // Another backend is tried after a short back-off; when every one was tried, the same ones
  // again after their Retry-After (when it is short enough to wait out).
  int64_t wait_ms = 0;
  const bool all_tried = static_cast<int>(exclude_.size()) + 1 >= b_.pool_->members();
  if (failure_ && retry_ && !output_started_ && attempt_ < config.max_attempts &&
      !(all_tried && retry_after_ > config.max_retry_wait.count()) && b_.pool_->allow_retry()) {
    exclude_.push_back(lease_->index);
    if (all_tried)
      exclude_.clear();
    wait_ms = b_.pool_
                  ->backoff(attempt_, all_tried ? retry_after_ : 0, config.retry_backoff,
                            config.max_retry_wait)
                  .count();
  } else {
    retry_ = false;
  }
  lease_.reset();
  ep_.reset();
  after_attempt(wait_ms);
}

void RemoteBackend::Call::after_attempt(int64_t wait_ms) {
  if (!retry_ || output_started_)
    return finish();
  auto go_on = [self = shared_from_this()](bool) {
    if (self->cancelled_.load()) {
      self->failure_ = Error{ErrorCode::kCancelled, "cancelled", {}};
      return self->finish();
    }
    self->next_attempt();
  };
  if (wait_ms > 0) // back-off, cut short by a cancel
    return wait(std::chrono::milliseconds(wait_ms), std::move(go_on));
  go_on(true);
}

void RemoteBackend::Call::emit(const UpstreamChoice &d, int tokens) {
  ChoiceEvent ev;
  ev.choice = d.index;
  ev.text = d.text;
  ev.tokens = tokens >= 0           ? tokens
              : !d.logprobs.empty() ? static_cast<int>(d.logprobs.size())
              : d.text.empty()      ? 0
                                    : 1;
  ev.finish_reason = d.finish_reason;
  ev.tool_calls = d.tool_calls;
  ev.logprobs = d.logprobs;
  if (!d.text.empty() || !d.tool_calls.empty() || !d.logprobs.empty()) {
    const auto now = b_.clock_.now();
    if (!first_token_)
      first_token_ = now;
    last_token_ = now;
    ++delta_count_;
    if (d.index == 0 && text0_.size() < (1 << 20))
      text0_ += d.text;
  }
  if (!d.finish_reason.empty() && d.index >= 0 &&
      static_cast<std::size_t>(d.index) < finished_.size()) {
    finished_[d.index] = true;
    if (d.index == 0)
      summary_.finish_reason = d.finish_reason;
  }
  output_started_ = true;
  sink_->on_event(ev);
}

void RemoteBackend::Call::finish() {
  if (usage_) {
    summary_.usage.prompt_tokens = usage_->prompt_tokens;
    summary_.usage.completion_tokens = usage_->completion_tokens;
    summary_.usage.cached_tokens = usage_->cached_tokens;
    if (served_reports_cost_)
      summary_.reported_cost_usd = usage_->cost_usd;
  } else if (output_started_) { // the upstream reported none: the estimates stand
    summary_.usage.prompt_tokens = state_->prompt_estimate;
    summary_.usage.completion_tokens = std::max<int64_t>(delta_count_, b_.count_tokens(text0_));
  }
  if (sent_) {
    summary_.timings.queue_ms = ms_between(t_start_, *sent_);
    if (first_token_) {
      summary_.timings.prefill_ms = ms_between(*sent_, *first_token_);
      summary_.timings.decode_ms = ms_between(*first_token_, *last_token_);
    }
  }
  if (failure_) {
    if (failure_->code == ErrorCode::kCancelled)
      ++b_.cancelled_;
    summary_.error = BackendError{std::move(*failure_), !output_started_};
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    timer_.reset();
  }
  auto sink = std::move(sink_);
  sink->on_done(summary_);
  b_.call_ended();
}

} // namespace gantry::backend::remote
