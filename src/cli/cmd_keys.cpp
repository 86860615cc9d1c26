// `gantry keys ...`: API key management straight on the data directory's database. Works with or
// without a server running on it (SQLite WAL lets both write; the server notices key changes
// within its 250 ms poll).
#include <CLI/CLI.hpp>

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "control/api_key.h"
#include "control/key_service.h"
#include "control/webhook_signature.h"
#include "core/clock.h"
#include "core/time_format.h"
#include "server/stores.h"

namespace gantry::cli {
namespace {

namespace json = boost::json;

struct KeysFlags {
  std::string data_dir;
  std::string database_url;
  std::string project, name, models, expires, id, grace = "0s";
  int64_t rpm = 0, tpm = 0, max_concurrent = 0;
  bool as_json = false;
};

std::string resolve_data_dir(const std::string &flag) {
  if (!flag.empty())
    return flag;
  if (const char *e = std::getenv("GANTRY_DATA_DIR"); e && *e)
    return e;
  return "./gantry-data";
}

// The one clock of a `gantry keys` command.
const SystemClock &cli_clock() {
  static const SystemClock c;
  return c;
}

int64_t now_s() { return cli_clock().unix_seconds(); }

int fail(const Error &e) {
  std::fprintf(stderr, "error: %s\n", e.message.c_str());
  return 1;
}

// The key store open_stores() chooses for this data directory (the server's own choice).
std::shared_ptr<control::KeyStore> open_store(const KeysFlags &f, int &rc) {
  server::ServerConfig cfg;
  cfg.data_dir = resolve_data_dir(f.data_dir);
  cfg.database_url = f.database_url;
  if (const char *e = std::getenv("GANTRY_DATABASE_URL"); cfg.database_url.empty() && e)
    cfg.database_url = e;
  auto stores = server::open_stores(cfg, cli_clock(), server::StoreSet::kControlOnly);
  if (!stores) {
    rc = fail(stores.error());
    return nullptr;
  }
  return std::move(stores->control.keys);
}

std::string fmt_time(int64_t t) {
  if (t == 0)
    return "-";
  return format_utc(t, "%Y-%m-%d %H:%M");
}

// The one place a secret is ever shown.
void print_issued(const control::IssuedKey &k, const char *what, bool as_json) {
  if (as_json) {
    json::object out = control::key_json(k.record, now_s());
    out["key"] = k.key;
    std::printf("%s\n", json::serialize(out).c_str());
    return;
  }
  std::printf("%s key %s for project %s\n", what, k.record.id.c_str(), k.record.project.c_str());
  std::printf("\n  %s\n\n", k.key.c_str());
  std::printf("This secret is shown once; it cannot be recovered, only rotated.\n");
}

// The store and the pepper, for the commands that hash secrets.
struct Opened {
  std::shared_ptr<control::KeyStore> store;
  std::string pepper;
};
std::optional<Opened> open_with_pepper(const KeysFlags &f, int &rc) {
  auto store = open_store(f, rc);
  if (!store)
    return std::nullopt;
  auto pepper = control::load_pepper(resolve_data_dir(f.data_dir));
  if (!pepper) {
    rc = fail(pepper.error());
    return std::nullopt;
  }
  return Opened{std::move(store), std::move(pepper).value()};
}

int run_create(const KeysFlags &f) {
  int rc = 0;
  auto opened = open_with_pepper(f, rc);
  if (!opened)
    return rc;
  control::CreateKeyOptions o;
  o.project = f.project;
  o.name = f.name;
  o.limits = {f.rpm, f.tpm, f.max_concurrent};
  for (size_t s = 0; s < f.models.size();) {
    size_t c = f.models.find(',', s);
    if (c == std::string::npos)
      c = f.models.size();
    if (c > s)
      o.models.push_back(f.models.substr(s, c - s));
    s = c + 1;
  }
  if (!f.expires.empty()) {
    auto d = control::parse_duration_s(f.expires);
    if (!d)
      return fail(d.error());
    o.expires_in_s = *d;
  }
  auto issued = control::create_key(*opened->store, opened->pepper, o, now_s());
  if (!issued)
    return fail(issued.error());
  print_issued(*issued, "Created", f.as_json);
  return 0;
}

int run_list(const KeysFlags &f) {
  int rc = 0;
  auto store = open_store(f, rc);
  if (!store)
    return rc;
  auto keys = store->list_keys(f.project);
  if (!keys)
    return fail(keys.error());
  if (f.as_json) {
    json::array a;
    for (const auto &k : *keys)
      a.push_back(control::key_json(k, now_s()));
    std::printf("%s\n", json::serialize(a).c_str());
    return 0;
  }
  std::printf("%-14s %-16s %-16s %-8s %-17s %-17s %s\n", "ID", "PROJECT", "NAME", "STATUS",
              "CREATED (UTC)", "LAST USED", "LIMITS");
  for (const auto &k : *keys) {
    auto j = control::key_json(k, now_s());
    std::string limits =
        "rpm=" + std::to_string(k.limits.rpm) + " tpm=" + std::to_string(k.limits.tpm);
    std::printf("%-14s %-16s %-16s %-8s %-17s %-17s %s\n", k.id.c_str(), k.project.c_str(),
                k.name.c_str(), std::string(j["status"].as_string()).c_str(),
                fmt_time(k.created_at).c_str(), fmt_time(k.last_used_at).c_str(), limits.c_str());
  }
  return 0;
}

int run_rotate(const KeysFlags &f) {
  int rc = 0;
  auto opened = open_with_pepper(f, rc);
  if (!opened)
    return rc;
  auto grace = control::parse_duration_s(f.grace);
  if (!grace)
    return fail(grace.error());
  auto issued = control::rotate_key(*opened->store, opened->pepper, f.id, *grace, now_s());
  if (!issued)
    return fail(issued.error());
  print_issued(*issued, "Rotated", f.as_json);
  if (!f.as_json && *grace > 0) {
    std::printf("The previous secret keeps working until %s UTC.\n",
                fmt_time(issued->record.prev_expires_at).c_str());
  }
  return 0;
}

int run_revoke(const KeysFlags &f) {
  int rc = 0;
  auto store = open_store(f, rc);
  if (!store)
    return rc;
  auto k = control::revoke_key(*store, f.id, now_s());
  if (!k)
    return fail(k.error());
  std::printf("Revoked key %s (project %s)\n", k->id.c_str(), k->project.c_str());
  return 0;
}

} // namespace

void register_keys_command(CLI::App &app, int &rc) {
  auto f = std::make_shared<KeysFlags>();
  auto *keys = app.add_subcommand("keys", "Create, list, rotate and revoke API keys");
  keys->require_subcommand(1);
  auto add_dir = [f](CLI::App *c) {
    c->add_option("--data-dir", f->data_dir,
                  "Data directory (default $GANTRY_DATA_DIR or ./gantry-data)");
    c->add_option("--database-url", f->database_url,
                  "PostgreSQL the servers share (default $GANTRY_DATABASE_URL; else the data "
                  "directory's SQLite file)");
    c->add_flag("--json", f->as_json, "Print JSON");
  };

  auto *create = keys->add_subcommand("create", "Create a key; prints its secret once");
  create->add_option("--project", f->project, "Project the key belongs to")->required();
  create->add_option("--name", f->name, "A label");
  create->add_option("--models", f->models, "Comma-separated models it may use (default all)");
  create->add_option("--rpm", f->rpm, "Requests per minute (0 = no key limit)");
  create->add_option("--tpm", f->tpm, "Tokens per minute (0 = no key limit)");
  create->add_option("--max-concurrent", f->max_concurrent, "Concurrent requests (0 = any)");
  create->add_option("--expires", f->expires, "Lifetime, e.g. 30d, 12h");
  add_dir(create);
  create->callback([f, &rc] { rc = run_create(*f); });

  auto *list = keys->add_subcommand("list", "List keys (never secrets)");
  list->add_option("--project", f->project, "Only this project's keys");
  add_dir(list);
  list->callback([f, &rc] { rc = run_list(*f); });

  auto *rotate = keys->add_subcommand("rotate", "Give a key a new secret");
  rotate->add_option("id", f->id, "Key id (gsk_<id>_...)")->required();
  rotate->add_option("--grace", f->grace, "How long the old secret keeps working, e.g. 24h");
  add_dir(rotate);
  rotate->callback([f, &rc] { rc = run_rotate(*f); });

  auto *revoke = keys->add_subcommand("revoke", "Revoke a key (a running server stops "
                                                "accepting it within a second)");
  revoke->add_option("id", f->id, "Key id")->required();
  add_dir(revoke);
  revoke->callback([f, &rc] { rc = run_revoke(*f); });

  auto *whsec =
      keys->add_subcommand("webhook-secret", "Print a new whsec_ secret for signing webhooks");
  whsec->callback([&rc] {
    std::printf("%s\n", control::generate_webhook_secret().c_str());
    rc = 0;
  });
}

} // namespace gantry::cli
