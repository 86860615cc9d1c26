#include "server/autoscale_executors.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/json_text.h"
#include "server/metrics_text.h"

namespace gantry::server {
namespace {

// A TOML basic string escapes quotes and backslashes as JSON does.
std::string toml_string(std::string_view s) { return json_quoted(s); }

std::string hostname() {
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

} // namespace

bool AutoscaleExecutors::any(const ServerConfig &config) {
  if (config.role != "gateway")
    return false;
  for (const auto &[model, e] : config.autoscale_executors)
    if (e.managed())
      return true;
  return false;
}

// What a worker needs beyond its flags, in a file of its own: the gateway's own config file may
// name other models, roles and ports.
Result<std::string> AutoscaleExecutors::write_worker_config(const std::string &model) const {
  std::string safe;
  for (char c : model)
    safe += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  const std::string path = config_.data_dir + "/autoscale-worker-" + safe + ".toml";
  std::ofstream f(path, std::ios::trunc);
  f << "# Written by the gateway's autoscale executor for model " << toml_string(model)
    << "; rewritten at each start.\n"
    << "worker_heartbeat_ms = " << config_.worker_heartbeat.count() << "\n"
    << "worker_ttl_ms = " << config_.worker_ttl.count() << "\n"
    << "worker_token_env = " << toml_string(config_.worker_token_env) << "\n"
    << "max_queued_requests = " << config_.max_queued_requests << "\n"
    << "default_max_tokens = " << config_.default_max_tokens << "\n"
    << "[redis]\n"
    << "timeout_ms = " << config_.redis.timeout.count() << "\n";
  if (!config_.redis.password_file.empty())
    f << "password_file = " << toml_string(config_.redis.password_file) << "\n";
  f << "[jobs]\n"
    << "visibility_s = " << static_cast<double>(config_.jobs.visibility.count()) / 1000 << "\n"
    << "max_attempts = " << config_.jobs.max_attempts << "\n";
  f.close();
  if (!f)
    return config_error("data_dir", "cannot write " + path + " (the autoscaled workers' config)");
  return path;
}

std::vector<std::string> AutoscaleExecutors::worker_argv(const ModelSpec &m,
                                                         const std::string &config_path) const {
  // The gateway's own binary, by its real path (so `ps` shows gantry, not "exe").
  std::error_code ec;
  std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec || self.empty())
    self = "/proc/self/exe";
  std::vector<std::string> a = {
      self,
      "serve",
      "--role",
      "worker",
      "--config",
      config_path,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--admin-port",
      "-1",
      "--model",
      m.name + "=" + m.path,
      "--data-dir",
      config_.data_dir,
      "--redis-url",
      config_.redis.url,
      "--database-url",
      config_.database_url,
      "--request-log",
      config_.request_log,
      "--drain-s",
      std::to_string(static_cast<double>(config_.shutdown_grace.count()) / 1000),
      "--threads",
      std::to_string(m.threads),
      "--max-seqs",
      std::to_string(m.max_seqs),
      "--max-batch-tokens",
      std::to_string(m.max_batch_tokens),
      "--kv-mb",
      std::to_string(m.kv_mb)};
  if (m.ctx > 0)
    a.insert(a.end(), {"--ctx", std::to_string(m.ctx)});
  if (!m.chat_template.empty())
    a.insert(a.end(), {"--chat-template", m.chat_template});
  if (!m.prefix_cache)
    a.push_back("--no-prefix-cache");
  if (!config_.cache.enabled)
    a.push_back("--no-cache");
  if (!config_.worker_token_file.empty())
    a.insert(a.end(), {"--worker-token-file", config_.worker_token_file});
  return a;
}

Status AutoscaleExecutors::build(WorkerPools &pools, std::function<void()> on_hold) {
  for (const auto &m : config_.models) {
    const auto found = config_.autoscale_executors.find(m.name);
    if (found == config_.autoscale_executors.end() || !found->second.managed())
      continue;
    const AutoscaleExecutorSpec &spec = found->second;
    ColdStartOptions co;
    co.max_held = spec.max_held_requests;
    co.timeout = spec.cold_start_timeout;
    ColdStartGate *gate = nullptr;
    GANTRY_TRY(pools.expect_model(m.name, [&](std::unique_ptr<backend::ModelBackend> pool) {
      auto g = std::make_unique<ColdStartGate>(std::move(pool), co, clock_, on_hold);
      gate = g.get();
      return g;
    }));
    gates_[m.name] = gate;
    ExecutorOptions eo;
    eo.model = m.name;
    eo.spec = spec;
    eo.max_replicas = config_.autoscale.at(m.name).max_replicas;
    eo.kill_after = config_.shutdown_grace + std::chrono::milliseconds(15'000);
    eo.log = log_;
    if (spec.executor == "local") {
      GANTRY_ASSIGN_OR_RETURN(std::string path, write_worker_config(m.name));
      eo.worker_argv = worker_argv(m, path);
      eo.node_prefix = hostname() + ":";
      executors_[m.name] = std::make_unique<LocalExecutor>(std::move(eo), processes_, clock_);
    } else if (spec.executor == "command") {
      executors_[m.name] = std::make_unique<CommandExecutor>(std::move(eo), processes_, clock_);
    } else {
      executors_[m.name] = std::make_unique<ExternalExecutor>(std::move(eo), processes_, clock_);
    }
  }
  return Ok();
}

void AutoscaleExecutors::start() {
  for (auto &[model, g] : gates_)
    g->start_ticker();
}

void AutoscaleExecutors::refresh(cluster::WorkerRegistry &registry) {
  if (executors_.empty())
    return;
  auto live = registry.live();
  if (!live)
    return; // the last view stays (the pools log the outage)
  live_nodes_.clear();
  for (const auto &w : *live)
    live_nodes_.insert(w.node_id);
}

std::optional<autoscale::Signals> AutoscaleExecutors::read(const std::string &model,
                                                           int live_workers) {
  auto e = executors_.find(model);
  auto g = gates_.find(model);
  if (e == executors_.end() || g == gates_.end())
    return std::nullopt;
  const backend::BackendStats st = g->second->stats();
  const int held = g->second->held();
  autoscale::Signals s;
  s.waiting_requests = held;
  s.running_requests = std::max(0, st.in_flight - held);
  s.replicas = e->second->observe(live_nodes_, live_workers);
  return s;
}

void AutoscaleExecutors::act(const std::string &model, int desired) {
  if (stopped_)
    return;
  if (auto e = executors_.find(model); e != executors_.end())
    e->second->reconcile(desired);
}

void AutoscaleExecutors::set_ready(const std::string &model, int live) {
  if (auto g = gates_.find(model); g != gates_.end())
    g->second->set_ready(live);
}

void AutoscaleExecutors::stop_all(std::chrono::milliseconds grace) {
  if (stopped_)
    return;
  stopped_ = true;
  for (auto &[model, e] : executors_)
    e->stop_all(grace);
}

void AutoscaleExecutors::render_metrics(std::ostream &o) const {
  if (executors_.empty())
    return;
  o << "# HELP gantry:autoscale_executor_failures_total Executor failures: workers that exited "
       "unasked or never became ready, scale commands that failed or timed out.\n"
       "# TYPE gantry:autoscale_executor_failures_total counter\n";
  for (const auto &[model, e] : executors_)
    o << "gantry:autoscale_executor_failures_total{" << label("model_name", model) << "} "
      << e->failures() << '\n';
  o << "# HELP gantry:cold_start_held_requests Requests held while no replica is ready.\n"
       "# TYPE gantry:cold_start_held_requests gauge\n";
  for (const auto &[model, g] : gates_)
    o << "gantry:cold_start_held_requests{" << label("model_name", model) << "} "
      << g->counts().held << '\n';
  o << "# HELP gantry:cold_start_requests_total Requests that met a cold start, by outcome.\n"
       "# TYPE gantry:cold_start_requests_total counter\n";
  for (const auto &[model, g] : gates_) {
    const auto c = g->counts();
    const std::pair<const char *, uint64_t> outcomes[] = {{"held", c.held_total},
                                                          {"released", c.released},
                                                          {"refused", c.refused},
                                                          {"timed_out", c.timed_out},
                                                          {"cancelled", c.cancelled}};
    for (const auto &[name, n] : outcomes)
      o << "gantry:cold_start_requests_total{" << label("model_name", model) << ",outcome=\""
        << name << "\"} " << n << '\n';
  }
}

} // namespace gantry::server
