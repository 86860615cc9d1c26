#include "backend/local/model_worker.h"

#include <optional>

#include "core/thread_guard.h"

namespace gantry::backend {

ModelWorker::ModelWorker(std::unique_ptr<engine::Model> model, WorkerConfig config,
                         const Clock &clock)
    : model_(std::move(model)), config_(std::move(config)), clock_(clock),
      n_ctx_(config_.engine.n_ctx > 0 ? config_.engine.n_ctx : model_->config().n_ctx_train) {
  // run() itself handles what escapes a step; the guard covers building the engine (bad_alloc
  // for its KV cache), after which the requests still in the inbox are served by a new run().
  thread_ = std::thread([this] {
    guarded_loop(
        "engine: " + config_.name, [this] { run(); },
        [this] {
          std::lock_guard<std::mutex> lk(mu_);
          return stop_;
        });
  });
}

ModelWorker::~ModelWorker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cancel_all_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

Result<int64_t> ModelWorker::reserve_queue_slot(int64_t tokens) {
  // Reserve a queue slot optimistically, then undo if over the bounds: two racing submitters
  // can never both take the last slot.
  if (queued_requests_.fetch_add(1) + 1 > config_.max_queued_requests) {
    queued_requests_.fetch_sub(1);
    ++rejected_queue_full_;
    return Err(ErrorCode::kQueueFull, "model '" + config_.name + "' has " +
                                          std::to_string(config_.max_queued_requests) +
                                          " requests waiting; retry shortly");
  }
  if (queued_tokens_.fetch_add(tokens) + tokens > config_.max_queued_tokens &&
      queued_requests_.load() > 1) {
    queued_tokens_.fetch_sub(tokens);
    queued_requests_.fetch_sub(1);
    ++rejected_queue_full_;
    return Err(ErrorCode::kQueueFull,
               "model '" + config_.name + "' has too many prompt tokens waiting; retry shortly");
  }
  return tokens;
}

Result<Ticket> ModelWorker::submit(engine::GenerationRequest request,
                                   std::shared_ptr<TokenSink> sink) {
  if (!accepting_.load()) {
    return Err(ErrorCode::kUnavailable, "the server is shutting down");
  }
  GANTRY_TRY(reserve_queue_slot(static_cast<int64_t>(request.prompt.size())));
  const Ticket t = next_ticket_.fetch_add(1);
  ++in_flight_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    inbox_.push_back({t, std::move(request), std::move(sink), clock_.now()});
  }
  cv_.notify_one();
  return t;
}

Status ModelWorker::embed(std::vector<std::vector<int32_t>> inputs, WorkerEmbedDone done) {
  if (!accepting_.load()) {
    return Err(ErrorCode::kUnavailable, "the server is shutting down");
  }
  int64_t tokens = 0;
  for (const auto &in : inputs)
    tokens += static_cast<int64_t>(in.size());
  GANTRY_TRY(reserve_queue_slot(tokens));
  ++in_flight_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    embed_inbox_.push_back({std::move(inputs), std::move(done), tokens, {}});
  }
  cv_.notify_one();
  return Ok();
}

void ModelWorker::finish_job(std::deque<EmbedJob> &jobs,
                             Result<std::vector<std::vector<float>>> result) {
  EmbedJob job = std::move(jobs.front());
  jobs.pop_front();
  queued_requests_.fetch_sub(1);
  queued_tokens_.fetch_sub(job.tokens);
  job.done(std::move(result), job.engine_seconds);
  finished_one();
}

bool ModelWorker::embed_next(engine::Engine &eng, std::deque<EmbedJob> &jobs) {
  EmbedJob &job = jobs.front();
  const size_t i = job.out.size();
  const std::string param = job.inputs.size() == 1 ? "input" : "input[" + std::to_string(i) + "]";
  const auto started = clock_.now();
  auto v = eng.embed(job.inputs[i], param);
  job.engine_seconds += std::chrono::duration<double>(clock_.now() - started).count();
  if (!v) {
    // Running sequences hold the KV blocks: wait for them unless nothing else would free any.
    if (v.error().code == ErrorCode::kResourceExhausted && !eng.idle())
      return false;
    finish_job(jobs, v.take_error());
    return true;
  }
  job.out.push_back(std::move(v).value());
  if (job.out.size() == job.inputs.size()) {
    std::vector<std::vector<float>> out = std::move(job.out);
    finish_job(jobs, std::move(out));
  }
  return true;
}

void ModelWorker::cancel(Ticket ticket) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.push_back(ticket);
  }
  cv_.notify_one();
}

void ModelWorker::cancel_all() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancel_all_ = true;
  }
  cv_.notify_one();
}

WorkerStats ModelWorker::stats() const {
  WorkerStats s;
  s.running = running_.load();
  s.waiting = waiting_.load();
  s.queued_requests = queued_requests_.load();
  s.queued_tokens = queued_tokens_.load();
  s.kv_blocks_used = kv_used_.load();
  s.kv_blocks_total = kv_total_.load();
  s.steps = steps_.load();
  s.prompt_tokens = prompt_tokens_.load();
  s.generated_tokens = generated_tokens_.load();
  s.prefix_queried_tokens = prefix_queried_.load();
  s.prefix_hit_tokens = prefix_hits_.load();
  s.kv_blocks_cached = kv_cached_.load();
  s.rejected_queue_full = rejected_queue_full_.load();
  s.cancelled = cancelled_.load();
  s.in_flight = in_flight_.load();
  return s;
}

void ModelWorker::finished_one() {
  if (in_flight_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lk(mu_);
    idle_cv_.notify_all();
  }
}

bool ModelWorker::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  return idle_cv_.wait_for(lk, timeout, [&] { return in_flight_.load() == 0; });
}

void ModelWorker::account_started(Active &a) {
  if (a.started)
    return;
  a.started = true;
  queued_requests_.fetch_sub(1);
  queued_tokens_.fetch_sub(a.prompt_tokens);
}

void ModelWorker::run() {
  const std::string site = "engine: " + config_.name;
  std::optional<engine::Engine> eng;
  eng.emplace(*model_, config_.engine);
  std::unordered_map<engine::SeqId, Active> active;
  std::unordered_map<Ticket, engine::SeqId> by_ticket;
  std::deque<Pending> inbox;
  std::deque<EmbedJob> embeds; // jobs in arrival order; the first one runs
  std::vector<Ticket> cancels;
  auto publish = [&] {
    auto st = eng->stats();
    running_.store(st.running);
    waiting_.store(st.waiting);
    kv_used_.store(st.kv_blocks_used);
    kv_total_.store(st.kv_blocks_total);
    steps_.store(st.steps);
    prompt_tokens_.store(st.prompt_tokens);
    generated_tokens_.store(st.generated_tokens);
    prefix_queried_.store(st.prefix_queried_tokens);
    prefix_hits_.store(st.prefix_hit_tokens);
    kv_cached_.store(st.kv_blocks_cached);
  };
  // An exception escaped a step (a bug, or bad_alloc): the engine's state can no longer be
  // trusted, so every request it held ends with an error (none is left hanging), and a fresh
  // engine over the same weights takes the next ones. The failure is in the error tracker.
  auto restart = [&](const std::string &why) {
    const Error err{ErrorCode::kInternal, "the engine failed and was restarted: " + why, ""};
    for (auto &entry : active) {
      auto &a = entry.second; // not a structured binding: clang 14 cannot capture those
      account_started(a);
      run_reporting(site, [&] { a.sink->on_rejected(a.ticket, err); });
      finished_one();
    }
    active.clear();
    by_ticket.clear();
    for (auto &p : inbox) {
      queued_requests_.fetch_sub(1);
      queued_tokens_.fetch_sub(static_cast<int64_t>(p.request.prompt.size()));
      run_reporting(site, [&] { p.sink->on_rejected(p.ticket, err); });
      finished_one();
    }
    inbox.clear();
    while (!embeds.empty()) {
      if (!run_reporting(site, [&] { finish_job(embeds, err); })) {
        // finish_job pops the job before calling its callback; only the count is left to do.
        finished_one();
      }
    }
    cancels.clear();
    eng.reset(); // frees the old KV cache before the new one is allocated
    eng.emplace(*model_, config_.engine);
  };
  publish();

  for (;;) {
    try {
      bool cancel_everything = false;
      bool stopping = false;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] {
          return stop_ || cancel_all_ || !inbox_.empty() || !cancels_.empty() || !eng->idle() ||
                 !embed_inbox_.empty() || !embeds.empty();
        });
        inbox.swap(inbox_);
        for (auto &j : embed_inbox_)
          embeds.push_back(std::move(j));
        embed_inbox_.clear();
        cancels.swap(cancels_);
        cancel_everything = cancel_all_;
        cancel_all_ = false;
        stopping = stop_;
      }
      // One at a time off the front, so that after an exception `inbox` holds exactly the
      // requests not yet handed to the engine.
      while (!inbox.empty()) {
        const int64_t n_prompt = static_cast<int64_t>(inbox.front().request.prompt.size());
        // A copy, so the request stays whole in `inbox` if submit() throws (restart() fails it).
        auto seq = eng->submit(inbox.front().request);
        Pending p = std::move(inbox.front());
        inbox.pop_front();
        if (!seq) {
          queued_requests_.fetch_sub(1);
          queued_tokens_.fetch_sub(n_prompt);
          run_reporting(site, [&] { p.sink->on_rejected(p.ticket, seq.error()); });
          finished_one();
          continue;
        }
        Active a;
        a.ticket = p.ticket;
        a.sink = std::move(p.sink);
        a.prompt_tokens = n_prompt;
        a.timing.submitted = p.submitted;
        active.emplace(*seq, std::move(a));
        by_ticket.emplace(p.ticket, *seq);
      }
      if (cancel_everything) {
        for (auto &[seq, a] : active)
          eng->cancel(seq);
        while (!embeds.empty()) {
          finish_job(embeds, Error{ErrorCode::kUnavailable, "the server is shutting down", ""});
        }
      }
      // One input per iteration, so that a large batch of embeddings delays each decode step by
      // at most one input's forward passes.
      if (!embeds.empty())
        (void)embed_next(*eng, embeds);
      for (Ticket t : cancels) {
        auto it = by_ticket.find(t);
        if (it != by_ticket.end())
          eng->cancel(it->second);
      }
      cancels.clear();

      const auto t0 = clock_.now();
      auto events = eng->step();
      const auto t1 = clock_.now();
      const double dt = std::chrono::duration<double>(t1 - t0).count();
      int step_total = 0;
      for (const auto &[seq, n] : eng->last_step_tokens())
        step_total += n;
      if (step_total > 0) {
        for (const auto &[seq, n] : eng->last_step_tokens()) {
          auto it = active.find(seq);
          if (it == active.end())
            continue;
          SeqTiming &tm = it->second.timing;
          if (tm.scheduled == std::chrono::steady_clock::time_point{})
            tm.scheduled = t0;
          tm.engine_seconds += dt * n / step_total;
        }
      }
      for (const auto &ev : events) {
        auto it = active.find(ev.seq);
        if (it == active.end())
          continue;
        Active &a = it->second;
        account_started(a);
        if (ev.finish == engine::FinishReason::kCancelled)
          ++cancelled_;
        if (ev.token >= 0 && a.timing.first_token == std::chrono::steady_clock::time_point{}) {
          a.timing.first_token = t1;
        }
        // A sink that throws is a bug of that one request, not of the engine: it is reported
        // and its sequence cancelled, and every other sequence keeps running.
        if (ev.finish == engine::FinishReason::kNone) {
          if (!run_reporting(site, [&] { a.sink->on_event(a.ticket, ev); }))
            eng->cancel(ev.seq);
          continue;
        }
        a.timing.finished = t1;
        std::shared_ptr<TokenSink> sink = std::move(a.sink);
        const Ticket ticket = a.ticket;
        const SeqTiming timing = a.timing;
        by_ticket.erase(ticket);
        active.erase(it);
        run_reporting(site, [&] {
          sink->on_timing(ticket, timing);
          sink->on_event(ticket, ev);
        });
        finished_one();
      }
      publish();
      if (stopping && eng->idle() && embeds.empty())
        break;
    } catch (const std::exception &e) {
      report_failure(site, e);
      restart(e.what());
      publish();
    } catch (...) {
      report_unknown_failure(site);
      restart("an exception of an unknown type");
      publish();
    }
  }
}

} // namespace gantry::backend
