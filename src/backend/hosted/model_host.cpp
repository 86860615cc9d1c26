#include "backend/hosted/model_host.h"

#include <algorithm>

#include "core/json_text.h"

namespace gantry::backend {
namespace {

void add_counters(BackendStats &into, const BackendStats &s) {
  into.steps += s.steps;
  into.prompt_tokens += s.prompt_tokens;
  into.generated_tokens += s.generated_tokens;
  into.prefix_queried_tokens += s.prefix_queried_tokens;
  into.prefix_hit_tokens += s.prefix_hit_tokens;
  into.rejected_queue_full += s.rejected_queue_full;
  into.cancelled += s.cancelled;
}

Error unavailable(std::string message) {
  Error e{ErrorCode::kUnavailable, std::move(message), "model"};
  e.retry_after_ms = 1000;
  return e;
}

} // namespace

ModelPin::~ModelPin() { host_.release(index_, use_); }

ModelHost::ModelHost(HostOptions options, const Clock &clock, Log log)
    : options_(options), clock_(clock), log_(std::move(log)) {}

ModelHost::~ModelHost() {
  std::vector<std::unique_ptr<ModelBackend>> engines;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &s : slots_)
      engines.push_back(std::move(s->backend));
  }
  engines.clear(); // joins the engine threads outside the mutex
}

Result<int> ModelHost::add(HostedModelSpec spec) {
  std::lock_guard<std::mutex> lk(mu_);
  if (static_cast<int>(slots_.size()) >= kMaxModels)
    return Err(Error{ErrorCode::kQueueFull,
                     "a process hosts at most " + std::to_string(kMaxModels) + " models",
                     "models"});
  auto s = std::make_unique<Slot>();
  s->spec = std::move(spec);
  slots_.push_back(std::move(s));
  return static_cast<int>(slots_.size()) - 1;
}

Status ModelHost::preload() {
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      std::vector<int> victims;
      bool never = false;
      if (!plan_room(i, victims, never) || !victims.empty())
        continue; // loads on demand later
    }
    GANTRY_ASSIGN_OR_RETURN(auto pin, acquire(i));
  }
  return Ok();
}

bool ModelHost::plan_room(int index, std::vector<int> &victims, bool &never) const {
  victims.clear();
  never = false;
  int count = 1;
  uint64_t bytes = slots_[index]->spec.bytes;
  if (options_.max_bytes > 0 && bytes > options_.max_bytes) {
    never = true;
    return false;
  }
  std::vector<int> idle;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    const Slot &s = *slots_[i];
    if (i == index || s.state == State::kUnloaded)
      continue;
    ++count; // loading, loaded or unloading: all take memory now
    bytes += s.spec.bytes;
    if (s.state == State::kLoaded && s.pins == 0)
      idle.push_back(i);
  }
  std::sort(idle.begin(), idle.end(),
            [&](int a, int b) { return slots_[a]->last_used < slots_[b]->last_used; });
  auto fits = [&] {
    return (options_.max_loaded <= 0 || count <= options_.max_loaded) &&
           (options_.max_bytes == 0 || bytes <= options_.max_bytes);
  };
  for (int v : idle) {
    if (fits())
      break;
    victims.push_back(v);
    --count;
    bytes -= slots_[v]->spec.bytes;
  }
  return fits();
}

Result<std::shared_ptr<ModelPin>> ModelHost::acquire(int index) {
  if (index < 0 || index >= static_cast<int>(slots_.size()))
    return Err(Error{ErrorCode::kNotFound, "no such hosted model", "model"});
  std::unique_lock<std::mutex> lk(mu_);
  Slot &s = *slots_[index];
  const auto deadline = clock_.now() + options_.load_wait;
  const uint64_t failures_seen = s.failure_gen;
  for (;;) {
    if (!s.accepting)
      return Err(unavailable("model '" + s.spec.info.name + "' is shutting down"));
    if (s.state == State::kLoaded) {
      ++s.pins;
      s.last_used = ++tick_;
      return std::make_shared<ModelPin>(*this, index, s.backend.get(), true);
    }
    if (s.failure_gen != failures_seen) // the load this call waited for failed
      return Err(unavailable("model '" + s.spec.info.name + "' failed to load: " + s.last_error));
    std::vector<int> victims;
    bool never = false;
    if (s.state == State::kUnloaded && plan_room(index, victims, never)) {
      // This caller loads it; others asking meanwhile wait for this load.
      s.state = State::kLoading;
      std::vector<std::unique_ptr<ModelBackend>> engines;
      for (int v : victims) {
        slots_[v]->state = State::kUnloading;
        engines.push_back(std::move(slots_[v]->backend));
      }
      lk.unlock();
      for (std::size_t k = 0; k < victims.size(); ++k)
        unload(victims[k], std::move(engines[k]), "lru");
      const auto t0 = clock_.now();
      auto loaded = s.spec.load();
      const double ms = std::chrono::duration<double, std::milli>(clock_.now() - t0).count();
      lk.lock();
      for (int v : victims) {
        slots_[v]->state = State::kUnloaded;
        ++slots_[v]->unloads;
      }
      if (!loaded) {
        s.state = State::kUnloaded;
        ++s.load_failures;
        ++s.failure_gen;
        s.last_error = loaded.error().message;
        changed_.notify_all();
        lk.unlock();
        if (log_)
          log_(R"({"event":"model_load_failed","model":")" + json_escaped(s.spec.info.name) +
               R"(","error":")" + json_escaped(s.last_error) + "\"}");
        return Err(loaded.take_error());
      }
      s.backend = std::move(*loaded);
      s.state = State::kLoaded;
      ++s.loads;
      ++s.pins;
      s.last_used = ++tick_;
      if (!s.accepting)
        s.backend->stop_accepting();
      changed_.notify_all();
      const int now_loaded = loaded_count_locked();
      lk.unlock();
      if (log_)
        log_(R"({"event":"model_loaded","model":")" + json_escaped(s.spec.info.name) +
             R"(","load_ms":)" + std::to_string(static_cast<int64_t>(ms)) + R"(,"loaded":)" +
             std::to_string(now_loaded) + "}");
      return std::make_shared<ModelPin>(*this, index, s.backend.get(), true);
    }
    if (never)
      return Err(Error{ErrorCode::kUnavailable,
                       "model '" + s.spec.info.name + "' (" + std::to_string(s.spec.bytes) +
                           " bytes) does not fit in models_max_bytes (" +
                           std::to_string(options_.max_bytes) + ")",
                       "model"});
    // Loading elsewhere, unloading, or no idle model to make room: wait for a change.
    const auto left = deadline - clock_.now();
    if (left <= std::chrono::steady_clock::duration::zero() ||
        (changed_.wait_for(lk, left) == std::cv_status::timeout && clock_.now() >= deadline))
      return Err(unavailable(s.state == State::kUnloaded
                                 ? "model '" + s.spec.info.name +
                                       "' is not loaded and every loaded model is busy " +
                                       "(models_max " + std::to_string(options_.max_loaded) + ")"
                                 : "model '" + s.spec.info.name + "' is still loading"));
  }
}

void ModelHost::unload(int index, std::unique_ptr<ModelBackend> backend, const char *reason) {
  Slot &s = *slots_[index];
  const BackendStats last = backend->stats();
  const auto t0 = clock_.now();
  backend.reset(); // the engine thread joined, the weights unmapped
  const double ms = std::chrono::duration<double, std::milli>(clock_.now() - t0).count();
  {
    std::lock_guard<std::mutex> lk(mu_);
    add_counters(s.retired, last);
  }
  if (log_)
    log_(R"({"event":"model_unloaded","model":")" + json_escaped(s.spec.info.name) +
         R"(","reason":")" + reason + R"(","unload_ms":)" +
         std::to_string(static_cast<int64_t>(ms)) + "}");
}

std::shared_ptr<ModelPin> ModelHost::pin_if_loaded(int index) {
  std::lock_guard<std::mutex> lk(mu_);
  if (index < 0 || index >= static_cast<int>(slots_.size()))
    return nullptr;
  Slot &s = *slots_[index];
  if (s.state != State::kLoaded)
    return nullptr;
  ++s.pins; // not a use: a probe does not keep a model from being the LRU one
  return std::make_shared<ModelPin>(*this, index, s.backend.get(), false);
}

bool ModelHost::is_loaded(int index) const {
  std::lock_guard<std::mutex> lk(mu_);
  return index >= 0 && index < static_cast<int>(slots_.size()) &&
         slots_[index]->state == State::kLoaded;
}

void ModelHost::release(int index, bool use) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    Slot &s = *slots_[index];
    if (--s.pins == 0 && use)
      s.last_used = ++tick_;
  }
  changed_.notify_all();
}

void ModelHost::stop_accepting(int index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    slots_[index]->accepting = false; // a load finishing now stops its engine itself
  }
  if (auto pin = pin_if_loaded(index))
    pin->backend().stop_accepting();
  changed_.notify_all(); // waiters give up
}

bool ModelHost::wait_idle(int index, std::chrono::milliseconds timeout) {
  auto pin = pin_if_loaded(index);
  return pin ? pin->backend().wait_idle(timeout) : true;
}

void ModelHost::cancel_all(int index) {
  if (auto pin = pin_if_loaded(index))
    pin->backend().cancel_all();
}

BackendStats ModelHost::stats(int index) {
  BackendStats retired;
  {
    std::lock_guard<std::mutex> lk(mu_);
    retired = slots_[index]->retired;
  }
  auto pin = pin_if_loaded(index); // keeps the engine while stats() reads it
  if (!pin)
    return retired;
  BackendStats live = pin->backend().stats();
  add_counters(live, retired);
  return live;
}

std::vector<HostedModelState> ModelHost::states() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<HostedModelState> out;
  for (const auto &s : slots_) {
    HostedModelState st;
    st.name = s->spec.info.name;
    st.loaded = s->state == State::kLoaded;
    st.bytes = s->spec.bytes;
    st.loads = s->loads;
    st.unloads = s->unloads;
    st.load_failures = s->load_failures;
    out.push_back(std::move(st));
  }
  return out;
}

int ModelHost::loaded_count_locked() const {
  return static_cast<int>(std::count_if(slots_.begin(), slots_.end(),
                                        [](const auto &s) { return s->state == State::kLoaded; }));
}

int ModelHost::loaded_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return loaded_count_locked();
}

uint64_t ModelHost::loaded_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t b = 0;
  for (const auto &s : slots_)
    if (s->state == State::kLoaded)
      b += s->spec.bytes;
  return b;
}

} // namespace gantry::backend
