#include "server/worker_pools.h"

#include "backend/remote/remote_backend.h"
#include "core/json_text.h"
#include "server/metrics_text.h"

namespace gantry::server {
namespace {

backend::remote::RemoteEndpointConfig member(const cluster::Member &m, const std::string &model,
                                             const WorkerPoolsOptions &o) {
  backend::remote::RemoteEndpointConfig e;
  e.url = m.url;
  e.model = model; // a worker serves the model under the name it announced
  e.api_key = o.token;
  e.kind = backend::remote::BackendKind::kOpenAICompatible;
  e.tls_ca_file = o.tls_ca_file;
  e.reports_cost = true; // a worker prices what it serves by its own prices and engine time
  return e;
}

} // namespace

WorkerPools::WorkerPools(ModelRegistry &models, cluster::WorkerRegistry &registry,
                         WorkerPoolsOptions options, const Clock &clock, Log log)
    : models_(models), registry_(registry), options_(std::move(options)), clock_(clock),
      log_(std::move(log)), directory_(options_.max_models) {
  for (const auto &m : models_.models())
    own_.insert(m->name());
}

WorkerPools::~WorkerPools() { stop(); }

Status WorkerPools::poll_once() {
  auto live = registry_.live();
  if (!live) {
    ++poll_failures_;
    if (registry_ok_.exchange(false) && log_)
      log_(R"({"event":"worker_registry_unreadable","error":")" +
           json_escaped(live.error().message) + R"(","action":"keeping the last membership"})");
    return Err(live.error());
  }
  if (!registry_ok_.exchange(true) && log_)
    log_(R"({"event":"worker_registry_readable"})");
  for (const auto &c : directory_.update(*live, own_))
    apply(c);
  if (options_.on_price) {
    std::map<std::string, cluster::ModelPrice, std::less<>> prices;
    for (const auto &w : *live)
      for (const auto &[m, p] : w.prices) {
        if (own_.contains(m))
          continue;
        auto &top = prices[m];
        top.input_per_mtok = std::max(top.input_per_mtok, p.input_per_mtok);
        top.output_per_mtok = std::max(top.output_per_mtok, p.output_per_mtok);
        top.usd_per_hour = std::max(top.usd_per_hour, p.usd_per_hour);
      }
    for (const auto &[m, p] : prices)
      options_.on_price(m, p);
  }
  return Ok();
}

Status WorkerPools::expect_model(const std::string &model, const Wrap &wrap) {
  backend::remote::RemoteModelConfig rc;
  rc.name = model;
  rc.pool.prefix_affinity = options_.routing == "prefix";
  rc.max_endpoints = options_.max_workers;
  rc.probe_interval = std::max(options_.poll, std::chrono::milliseconds(1000));
  rc.allow_no_endpoints = true;
  GANTRY_ASSIGN_OR_RETURN(auto b, backend::remote::RemoteBackend::create(std::move(rc), clock_));
  backend::remote::RemoteBackend *raw = b.get();
  if (!models_.add(wrap(std::move(b))))
    return Err(
        Error::invalid("model '" + model + "': the name is taken or the table is full", "models"));
  pools_.emplace(model, raw);
  return Ok();
}

void WorkerPools::apply(const cluster::MembershipChange &c) {
  apply_members(c);
  if (options_.on_members)
    options_.on_members(c.model, directory_.live_workers(c.model));
}

void WorkerPools::apply_members(const cluster::MembershipChange &c) {
  auto it = pools_.find(c.model);
  if (it == pools_.end()) {
    if (c.added.empty())
      return;
    backend::remote::RemoteModelConfig rc;
    rc.name = c.model;
    for (const auto &m : c.added)
      rc.endpoints.push_back(member(m, c.model, options_));
    rc.pool.prefix_affinity = options_.routing == "prefix";
    rc.max_endpoints = options_.max_workers;
    // The registry's TTL already removes dead workers; probes add a faster, independent check.
    rc.probe_interval = std::max(options_.poll, std::chrono::milliseconds(1000));
    auto b = backend::remote::RemoteBackend::create(std::move(rc), clock_);
    if (!b) {
      if (log_)
        log_(R"({"event":"worker_model_refused","model":")" + json_escaped(c.model) +
             R"(","error":")" + json_escaped(b.error().message) + "\"}");
      return;
    }
    backend::remote::RemoteBackend *raw = b->get();
    ServedModel *entry = models_.add(
        std::move(*b), [this, name = c.model] { return directory_.live_workers(name); });
    if (!entry) {
      if (log_)
        log_(R"({"event":"worker_model_refused","model":")" + json_escaped(c.model) +
             R"(","error":"the model table is full"})");
      return;
    }
    // /v1/models: "loaded" while some worker has it loaded, else "unloaded" (it loads on one).
    entry->loaded = [this, name = c.model] { return directory_.loaded_workers(name) > 0; };
    pools_.emplace(c.model, raw);
    members_added_ += c.added.size();
    for (const auto &m : c.added) // placement: workers that would have to load it first
      if (!m.loaded)
        raw->set_endpoint_preferred(m.url, false);
    if (log_)
      log_(R"({"event":"worker_model_added","model":")" + json_escaped(c.model) +
           R"(","workers":)" + std::to_string(c.added.size()) + "}");
    return;
  }
  backend::remote::RemoteBackend &pool = *it->second;
  for (const auto &m : c.added) {
    if (auto r = pool.add_endpoint(member(m, c.model, options_)); r) {
      ++members_added_;
      pool.set_endpoint_preferred(m.url, m.loaded);
    } else if (log_)
      log_(R"({"event":"worker_member_refused","model":")" + json_escaped(c.model) +
           R"(","node":")" + json_escaped(m.node_id) + R"(","error":")" +
           json_escaped(r.error().message) + "\"}");
  }
  for (const auto &m : c.removed)
    if (pool.remove_endpoint(m.url))
      ++members_removed_;
  for (const auto &m : c.updated)
    pool.set_endpoint_preferred(m.url, m.loaded);
}

void WorkerPools::start() {
  thread_ = std::thread([this] { loop(); });
}

void WorkerPools::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!cv_.wait_for(lk, options_.poll, [&] { return stopping_; })) {
    lk.unlock();
    (void)poll_once(); // failures are counted and logged once per outage
    lk.lock();
  }
}

void WorkerPools::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_)
      return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

Result<std::map<std::string, int64_t>> WorkerPools::check() const {
  const auto counts = directory_.counts();
  int64_t serving = 0;
  for (const auto &[model, n] : counts)
    serving += n > 0 ? 1 : 0;
  return std::map<std::string, int64_t>{
      {"degraded", registry_ok_.load() ? 0 : 1},
      {"live_workers", directory_.workers()},
      {"models", serving},
      {"poll_failures", static_cast<int64_t>(poll_failures_.load())}};
}

void WorkerPools::render_metrics(std::ostream &o) const {
  o << "# HELP gantry:workers Live worker nodes that have the model loaded (roles).\n"
       "# TYPE gantry:workers gauge\n";
  const auto loaded = directory_.loaded_counts();
  for (const auto &[model, n] : loaded)
    o << "gantry:workers{" << label("model_name", model) << "} " << n << '\n';
  o << "# HELP gantry:workers_available Live worker nodes that host the model without having it "
       "loaded now: they load it on demand (placement).\n"
       "# TYPE gantry:workers_available gauge\n";
  for (const auto &[model, n] : directory_.counts())
    o << "gantry:workers_available{" << label("model_name", model) << "} "
      << n - (loaded.contains(model) ? loaded.at(model) : 0) << '\n';
  o << "# HELP gantry:worker_registry_poll_failures_total Registry reads that failed (the last "
       "membership was kept).\n# TYPE gantry:worker_registry_poll_failures_total counter\n"
       "gantry:worker_registry_poll_failures_total "
    << poll_failures_.load() << '\n';
  o << "# HELP gantry:worker_pool_changes_total Workers added to and removed from model pools.\n"
       "# TYPE gantry:worker_pool_changes_total counter\n"
       "gantry:worker_pool_changes_total{change=\"added\"} "
    << members_added_.load() << "\ngantry:worker_pool_changes_total{change=\"removed\"} "
    << members_removed_.load() << '\n';
}

} // namespace gantry::server
