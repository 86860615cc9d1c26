#include "server/autoscale_monitor.h"

#include "autoscale/decision_log.h"
#include "core/thread_guard.h"
#include "server/metrics_text.h"

namespace gantry::server {

AutoscaleMonitor::AutoscaleMonitor(const std::map<std::string, autoscale::PolicyConfig> &policies,
                                   AutoscaleDeps deps, std::chrono::milliseconds interval)
    : deps_(std::move(deps)), interval_(interval) {
  for (const auto &[name, config] : policies)
    models_[name].policy = std::make_unique<autoscale::Policy>(config, *deps_.clock);
}

AutoscaleMonitor::~AutoscaleMonitor() { stop(); }

void AutoscaleMonitor::start() {
  if (models_.empty() || thread_.joinable())
    return;
  thread_ = std::thread([this] {
    guarded_loop(
        "autoscale", [this] { run(); },
        [this] {
          std::lock_guard<std::mutex> lk(mu_);
          return stop_;
        });
  });
}

void AutoscaleMonitor::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void AutoscaleMonitor::run() {
  while (true) {
    tick();
    std::unique_lock<std::mutex> lk(mu_);
    if (cv_.wait_for(lk, interval_, [this] { return stop_ || poked_; }) && stop_)
      return;
    poked_ = false;
  }
}

void AutoscaleMonitor::poke() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    poked_ = true;
  }
  cv_.notify_all();
}

void AutoscaleMonitor::tick() {
  if (deps_.before_tick)
    deps_.before_tick();
  const JobBacklog jobs = deps_.read_jobs ? deps_.read_jobs() : JobBacklog{};
  const auto now = deps_.clock->now();
  for (auto &[name, m] : models_) {
    std::optional<ModelReading> reading = deps_.read_model(name);
    if (!reading)
      continue;
    autoscale::Signals s = reading->signals;
    s.queued_jobs = jobs.queued;
    s.oldest_wait_s = std::max(s.oldest_wait_s, jobs.oldest_wait_s);
    if (m.tokens_at && s.replicas.ready > 0) {
      const double dt = std::chrono::duration<double>(now - m.tokens_at->second).count();
      const uint64_t before = m.tokens_at->first;
      if (dt > 0 && reading->generated_tokens >= before)
        s.tokens_per_s_per_replica =
            static_cast<double>(reading->generated_tokens - before) / dt / s.replicas.ready;
    }
    m.tokens_at = {reading->generated_tokens, now};
    const autoscale::Decision d = m.policy->evaluate(s);
    bool log = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      m.evaluated = true;
      m.signals = s;
      m.decision = d;
      m.ups += d.desired > d.previous;
      m.downs += d.desired < d.previous;
      log = !m.logged || autoscale::worth_logging(*m.logged, d);
      if (log)
        m.logged = d;
    }
    if (log && deps_.log)
      deps_.log(autoscale::decision_json(name, d, s, deps_.clock->unix_millis()));
    if (deps_.act)
      deps_.act(name, d);
  }
}

void AutoscaleMonitor::render_metrics(std::ostream &o) const {
  if (models_.empty())
    return;
  std::lock_guard<std::mutex> lk(mu_);
  o << "# HELP gantry:desired_replicas Replicas the model's autoscale policy asks for.\n"
       "# TYPE gantry:desired_replicas gauge\n";
  for (const auto &[name, m] : models_)
    if (m.evaluated)
      o << "gantry:desired_replicas{" << label("model_name", name) << "} " << m.decision.desired
        << '\n';
  o << "# HELP gantry:replicas The model's replicas by state.\n"
       "# TYPE gantry:replicas gauge\n";
  for (const auto &[name, m] : models_) {
    if (!m.evaluated)
      continue;
    const std::string model = label("model_name", name);
    const auto &r = m.signals.replicas;
    o << "gantry:replicas{" << model << ",state=\"starting\"} " << r.starting << '\n'
      << "gantry:replicas{" << model << ",state=\"ready\"} " << r.ready << '\n'
      << "gantry:replicas{" << model << ",state=\"draining\"} " << r.draining << '\n';
  }
  o << "# HELP gantry:autoscale_changes_total Times the desired replica count moved, by "
       "direction.\n"
       "# TYPE gantry:autoscale_changes_total counter\n";
  for (const auto &[name, m] : models_) {
    const std::string model = label("model_name", name);
    o << "gantry:autoscale_changes_total{" << model << ",direction=\"up\"} " << m.ups << '\n'
      << "gantry:autoscale_changes_total{" << model << ",direction=\"down\"} " << m.downs << '\n';
  }
}

std::optional<autoscale::Decision> AutoscaleMonitor::last(const std::string &model) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = models_.find(model);
  if (it == models_.end() || !it->second.evaluated)
    return std::nullopt;
  return it->second.decision;
}

} // namespace gantry::server
