// `gantry serve`: the OpenAI-compatible server. Defaults < --config TOML < GANTRY_* < flags.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <pthread.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "server/gateway.h"

namespace gantry::cli {
namespace {

struct ServeFlags {
  std::string config_file;
  std::string host;
  int port = -1;
  std::vector<std::string> models;
  std::string data_dir;
  int threads = -1;
  int max_seqs = -1;
  int max_batch_tokens = -1;
  int kv_mb = -1;
  int ctx = -1;
  int io_threads = -1;
  int max_queued_requests = -1;
  int64_t max_queued_tokens = -1;
  int default_max_tokens = -1;
  std::string chat_template;
  bool no_prefix_cache = false;
  std::string request_log;
  std::string auth;
  bool no_metrics = false;
  int admin_port = -2;
  bool no_cache = false;
  int64_t cache_max_bytes = -1;
  int64_t cache_ttl_s = -1;
  std::string redis_url;
  std::string database_url;
  std::string role;
  std::string advertise_url;
  std::string worker_token_file;
  double drain_s = -1;
  double replica_price_per_hour = -1;
  int models_max = -1;
};

int run_serve(const ServeFlags &f) {
  server::ServerConfig cfg;
  if (!f.config_file.empty()) {
    auto st = server::apply_toml_file(f.config_file, cfg);
    if (!st) {
      std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
      return 2;
    }
  }
  if (auto st = server::apply_env(server::process_env(), cfg); !st) {
    std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
    return 2;
  }
  if (!f.host.empty())
    cfg.host = f.host;
  if (f.port >= 0)
    cfg.port = f.port;
  if (!f.data_dir.empty())
    cfg.data_dir = f.data_dir;
  if (f.io_threads > 0)
    cfg.io_threads = f.io_threads;
  if (f.max_queued_requests > 0)
    cfg.max_queued_requests = f.max_queued_requests;
  if (f.max_queued_tokens > 0)
    cfg.max_queued_tokens = f.max_queued_tokens;
  if (f.default_max_tokens > 0)
    cfg.default_max_tokens = f.default_max_tokens;
  if (!f.request_log.empty())
    cfg.request_log = f.request_log;
  if (!f.auth.empty())
    cfg.auth = f.auth;
  if (f.no_metrics)
    cfg.metrics = false;
  if (f.admin_port >= -1)
    cfg.admin_port = f.admin_port;
  if (!f.redis_url.empty())
    cfg.redis.url = f.redis_url;
  if (!f.database_url.empty())
    cfg.database_url = f.database_url;
  if (!f.role.empty())
    cfg.role = f.role;
  if (!f.advertise_url.empty())
    cfg.advertise_url = f.advertise_url;
  if (!f.worker_token_file.empty())
    cfg.worker_token_file = f.worker_token_file;
  if (f.drain_s >= 0)
    cfg.shutdown_grace = std::chrono::milliseconds(static_cast<int64_t>(f.drain_s * 1000));
  if (f.replica_price_per_hour >= 0)
    cfg.replica_price_per_hour = f.replica_price_per_hour;
  if (f.models_max >= 0)
    cfg.models_max = f.models_max;
  if (f.no_cache)
    cfg.cache.enabled = false;
  if (f.cache_max_bytes >= 0)
    cfg.cache.max_bytes = static_cast<uint64_t>(f.cache_max_bytes);
  if (f.cache_ttl_s >= 0)
    cfg.cache.ttl = std::chrono::seconds(f.cache_ttl_s);
  if (!f.models.empty()) {
    cfg.models.clear();
    cfg.remote_models.clear();
    for (const auto &m : f.models) {
      if (server::is_remote_model_arg(m)) { // NAME=http(s)://.../v1: a remote model
        if (auto st = server::add_remote_model_arg(m, cfg.remote_models); !st) {
          std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
          return 2;
        }
        continue;
      }
      auto spec = server::parse_model_arg(m);
      if (!spec) {
        std::fprintf(stderr, "error: %s\n", spec.error().message.c_str());
        return 2;
      }
      cfg.models.push_back(*spec);
    }
  }
  // A gateway loads no engine: its models are remote or announced by workers.
  if (cfg.models.empty() && cfg.remote_models.empty() && cfg.role != "gateway") {
    auto spec = server::parse_model_arg(default_model_path());
    cfg.models.push_back(*spec);
  }
  for (auto &m : cfg.models) {
    if (f.threads >= 0)
      m.threads = f.threads;
    if (f.max_seqs > 0)
      m.max_seqs = f.max_seqs;
    if (f.max_batch_tokens > 0)
      m.max_batch_tokens = f.max_batch_tokens;
    if (f.kv_mb > 0)
      m.kv_mb = f.kv_mb;
    if (f.ctx > 0)
      m.ctx = f.ctx;
    if (!f.chat_template.empty())
      m.chat_template = f.chat_template;
    if (f.no_prefix_cache)
      m.prefix_cache = false;
  }
  std::error_code ec;
  // Private from the start (audit M5); the store also tightens a directory that existed.
  if (std::filesystem::create_directories(cfg.data_dir, ec)) {
    std::filesystem::permissions(cfg.data_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }
  if (ec) {
    std::fprintf(stderr, "error: config 'data_dir': cannot create %s: %s\n", cfg.data_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }

  // Signals are taken synchronously by this thread (sigwait) so that shutdown runs as normal
  // code, not in a signal handler. Block them before any thread starts so all inherit the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  SystemClock clock;
  std::unique_ptr<Progress> bar;
  std::string bar_model;
  auto gw = server::Gateway::create(cfg, clock, [&](const std::string &m, uint64_t d, uint64_t t) {
    if (m != bar_model) {
      if (bar)
        bar->finish();
      bar = std::make_unique<Progress>("loading " + m);
      bar_model = m;
    }
    bar->update(d, t);
  });
  if (bar)
    bar->finish();
  if (!gw) {
    std::fprintf(stderr, "error: %s\n", gw.error().message.c_str());
    return 1;
  }
  for (const auto &m : (*gw)->local_models()) {
    if (!m.template_recognized) {
      std::fprintf(stderr,
                   "warning: model '%s': chat template not recognised; using %s. Set "
                   "chat_template in the config to choose one.\n",
                   m.spec.name.c_str(), std::string(api::chat_format_name(m.chat_format)).c_str());
    }
  }
  if (auto warn = control::open_api_warning(
          control::auth_mode_from_name(cfg.auth).value_or(control::AuthMode::kRequired),
          (*gw)->auth_required(), cfg.host)) {
    std::fprintf(stderr, "%s\n", warn->c_str());
  }
  // A preemption notice through POST /admin/v1/drain takes the SIGTERM path below: the signal
  // is blocked in every thread, so sigwait here receives it.
  (*gw)->on_drain_requested([] { ::kill(::getpid(), SIGTERM); });
  if (auto st = (*gw)->start(); !st) {
    std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
    return 1;
  }
  const auto served = (*gw)->models().models();
  const std::string first = served.empty() ? "MODEL" : served.front()->name();
  const std::string url = "http://" + cfg.host + ":" + std::to_string((*gw)->port());
  std::printf("Gantry listening on %s\n", url.c_str());
  if (cfg.role == "gateway")
    std::printf("  role: gateway (worker-hosted models are routed to live workers)\n");
  else if (cfg.role == "worker")
    std::printf("  role: worker, announced as %s\n", (*gw)->advertised_url().c_str());
  if ((*gw)->admin_port() != 0) {
    std::printf("  admin port: http://%s:%u (health, metrics, /admin/v1)\n",
                (cfg.admin_host.empty() ? cfg.host : cfg.admin_host).c_str(),
                static_cast<unsigned>((*gw)->admin_port()));
  }
  bool first_embeds = false; // the first model is embeddings-only: show that endpoint
  for (const auto &m : (*gw)->local_models()) {
    if (m.embeddings_only) {
      std::printf("  model %-20s %s (embeddings only)\n", m.spec.name.c_str(), m.spec.path.c_str());
      first_embeds |= m.spec.name == first;
      continue;
    }
    std::printf("  model %-20s %s (chat template: %s)\n", m.spec.name.c_str(), m.spec.path.c_str(),
                std::string(api::chat_format_name(m.chat_format)).c_str());
  }
  for (const auto &m : cfg.remote_models) {
    std::printf("  model %-20s remote, %zu backend(s)%s\n", m.name.c_str(), m.backends.size(),
                m.routing == "prefix" ? ", prefix affinity" : "");
  }
  if (first_embeds) {
    std::printf("Try:\n  curl %s/v1/embeddings -H 'Content-Type: application/json' \\\n"
                "    -d '{\"model\":\"%s\",\"input\":\"Once upon a time\"}'\n",
                url.c_str(), first.c_str());
  } else {
    std::printf("Try:\n  curl %s/v1/chat/completions -H 'Content-Type: application/json' \\\n"
                "    -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Once "
                "upon a time\"}],\"max_tokens\":64}'\n",
                url.c_str(), first.c_str());
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&sigs, &sig);
  std::printf("received %s, draining (drain_s %.1f)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
              static_cast<double>(cfg.shutdown_grace.count()) / 1000);
  std::fflush(stdout);
  const bool clean = (*gw)->shutdown();
  std::printf("jobs handed back: %d\n", (*gw)->jobs_handed_back());
  std::printf("shutdown %s\n", clean ? "complete" : "complete (in-flight requests cancelled)");
  return 0;
}

} // namespace

void register_serve_command(CLI::App &app, int &rc) {
  static ServeFlags f;
  auto *cmd = app.add_subcommand("serve", "Serve models over an OpenAI-compatible HTTP API");
  cmd->add_option("--config", f.config_file, "TOML config file");
  cmd->add_option("--host", f.host, "bind address (default 127.0.0.1)");
  cmd->add_option("--port", f.port, "port (default 8080; 0 = any free port)");
  cmd->add_option("--model,-m", f.models,
                  "model to serve, NAME=PATH or PATH (repeatable; default: the bundled model)");
  cmd->add_option("--data-dir", f.data_dir, "where state lives (default ./gantry-data)");
  cmd->add_option("--threads,-t", f.threads, "compute threads per model (0 = one per core)");
  cmd->add_option("--max-seqs", f.max_seqs, "sequences generating together per model");
  cmd->add_option("--max-batch-tokens", f.max_batch_tokens,
                  "tokens per engine step (raised to --max-seqs when below it)");
  cmd->add_option("--kv-mb", f.kv_mb, "KV cache budget per model in MiB");
  cmd->add_option("--ctx", f.ctx, "context length per sequence (default: the model's)");
  cmd->add_option("--io-threads", f.io_threads, "HTTP I/O threads");
  cmd->add_option("--max-queued-requests", f.max_queued_requests, "waiting requests before 429");
  cmd->add_option("--drain-s", f.drain_s,
                  "on SIGTERM or POST /admin/v1/drain: seconds for in-flight work to finish "
                  "(default 30)");
  cmd->add_option("--replica-price-per-hour", f.replica_price_per_hour,
                  "what this replica costs per hour (spot or on-demand), for cost attribution");
  cmd->add_option("--models-max", f.models_max,
                  "at most N models loaded at once; the others load on demand, least recently "
                  "used idle one unloaded first (0 = all loaded)");
  cmd->add_option("--max-queued-tokens", f.max_queued_tokens, "waiting prompt tokens before 429");
  cmd->add_option("--default-max-tokens", f.default_max_tokens,
                  "completion length when a request sets no max_tokens");
  cmd->add_option("--chat-template", f.chat_template, "force a chat template family by name");
  cmd->add_option("--request-log", f.request_log,
                  "one JSON line per inference call: - (stdout, default), a file, or off");
  cmd->add_option(
      "--auth", f.auth,
      "auto (keys required once one exists), required, or off (no keys: local development)");
  cmd->add_option("--database-url", f.database_url,
                  "keep keys, projects, the ledger and budgets in PostgreSQL, shared with other "
                  "nodes (postgresql://user@host:port/db; also GANTRY_DATABASE_URL)");
  cmd->add_option("--redis-url", f.redis_url,
                  "share limits, quotas, budgets and breakers with other nodes through this Redis "
                  "(redis://[:password@]host[:port][/db]; also GANTRY_REDIS_URL)");
  cmd->add_option("--role", f.role,
                  "all (default: API and engines), gateway (API and control plane, routes to "
                  "workers) or worker (engines, serves gateways); also role in the config");
  cmd->add_option("--advertise-url", f.advertise_url,
                  "a worker's base URL as gateways reach it (default http://HOST:PORT/v1)");
  cmd->add_option("--worker-token-file", f.worker_token_file,
                  "the internal token gateways and workers share (default: $GANTRY_WORKER_TOKEN)");
  cmd->add_option("--admin-port", f.admin_port,
                  "also serve health, metrics and the admin API on this port (-1 = off)");
  cmd->add_flag("--no-metrics", f.no_metrics, "skip request histograms/counters (benchmarks)");
  cmd->add_flag("--no-prefix-cache", f.no_prefix_cache,
                "do not reuse KV blocks across requests that share a prompt prefix");
  cmd->add_flag("--no-cache", f.no_cache, "disable the response and embedding caches");
  cmd->add_option("--cache-max-bytes", f.cache_max_bytes,
                  "response cache budget in bytes (default 64 MiB)");
  cmd->add_option("--cache-ttl-s", f.cache_ttl_s, "default cache entry lifetime (default 3600)");
  cmd->callback([&rc] { rc = run_serve(f); });
}

} // namespace gantry::cli
