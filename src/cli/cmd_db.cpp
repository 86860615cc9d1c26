// `gantry db backup FILE` and `gantry db restore FILE`: an online copy of the control-plane
// database and putting one back. The data directory resolves as for `gantry serve`: defaults <
// --config TOML < GANTRY_DATA_DIR < --data-dir (the database URL likewise, from database_url,
// GANTRY_DATABASE_URL and --database-url). Both are the embedded store's operations: with
// PostgreSQL they refuse and point to pg_dump/pg_restore rather than act on a SQLite file the
// servers do not use.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/clock.h"
#include "server/config.h"
#include "server/stores.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::cli {
namespace {

struct DbFlags {
  std::string file;
  std::string data_dir;
  std::string database_url;
  std::string config_file;
};

Result<server::ServerConfig> resolve_config(const DbFlags &f) {
  server::ServerConfig cfg;
  if (!f.config_file.empty())
    GANTRY_TRY(server::apply_toml_file(f.config_file, cfg));
  GANTRY_TRY(server::apply_env(server::process_env(), cfg));
  if (!f.data_dir.empty())
    cfg.data_dir = f.data_dir;
  if (!f.database_url.empty())
    cfg.database_url = f.database_url;
  return cfg;
}

// 0 when the state is in the data directory's SQLite file; otherwise the error is printed.
int refuse_postgres(const server::ServerConfig &cfg, const char *what, const char *instead) {
  if (cfg.database_url.empty())
    return 0;
  std::fprintf(stderr,
               "error: `gantry db %s` works on the SQLite file; the state is in PostgreSQL "
               "(database_url): use %s or your provider's backups\n",
               what, instead);
  return 1;
}

std::string file_size_text(const std::string &path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? std::string("? bytes") : std::to_string(n) + " bytes";
}

int run_backup(const DbFlags &f) {
  auto cfg = resolve_config(f);
  if (!cfg) {
    std::fprintf(stderr, "error: %s\n", cfg.error().message.c_str());
    return 2;
  }
  if (int rc = refuse_postgres(*cfg, "backup", "pg_dump"); rc != 0)
    return rc;
  const std::string live = control::database_path(cfg->data_dir);
  std::error_code ec;
  // Opening would create an empty database; a backup of nothing is a mistake to report.
  if (!std::filesystem::exists(live, ec)) {
    std::fprintf(stderr, "error: no database at %s (check --data-dir)\n", live.c_str());
    return 1;
  }
  const SystemClock clock;
  auto stores = server::open_stores(*cfg, clock, server::StoreSet::kControlOnly);
  if (!stores) {
    std::fprintf(stderr, "error: %s\n", stores.error().message.c_str());
    return 1;
  }
  if (!stores->backup_to) {
    std::fprintf(stderr, "error: this store has no database file to back up\n");
    return 1;
  }
  if (auto st = stores->backup_to(f.file); !st) {
    std::fprintf(stderr, "error: backup to %s failed: %s\n", f.file.c_str(),
                 st.error().message.c_str());
    return 1;
  }
  std::printf("backed up %s to %s (%s, integrity ok)\n", live.c_str(), f.file.c_str(),
              file_size_text(f.file).c_str());
  return 0;
}

// Restoring replaces the embedded database's file, so it is the SQLite adapter's own operation
// (no port has it) and needs the database closed: nothing is opened through open_stores().
int run_restore(const DbFlags &f) {
  auto cfg = resolve_config(f);
  if (!cfg) {
    std::fprintf(stderr, "error: %s\n", cfg.error().message.c_str());
    return 2;
  }
  // Replacing gantry.db would print "restored" and change nothing the servers read.
  if (int rc = refuse_postgres(*cfg, "restore", "pg_restore"); rc != 0)
    return rc;
  if (auto st = control::restore_database(f.file, cfg->data_dir); !st) {
    std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
    return 1;
  }
  const std::string live = control::database_path(cfg->data_dir);
  std::printf("restored %s to %s (%s)\n", f.file.c_str(), live.c_str(),
              file_size_text(live).c_str());
  return 0;
}

void add_common(CLI::App *cmd, DbFlags &f) {
  cmd->add_option("--data-dir", f.data_dir, "where state lives (default ./gantry-data)");
  cmd->add_option("--database-url", f.database_url,
                  "PostgreSQL the servers share (default $GANTRY_DATABASE_URL): refused, the "
                  "commands work on the SQLite file");
  cmd->add_option("--config", f.config_file, "TOML config file (for its data_dir)");
}

} // namespace

void register_db_command(CLI::App &app, int &rc) {
  static DbFlags backup_flags;
  static DbFlags restore_flags;
  auto *db = app.add_subcommand("db", "Back up or restore the control-plane database");
  db->require_subcommand(1);

  auto *backup = db->add_subcommand(
      "backup", "Copy the live database to FILE (consistent while a server writes)");
  backup->add_option("file", backup_flags.file, "backup file to write")->required();
  add_common(backup, backup_flags);
  backup->callback([&rc] { rc = run_backup(backup_flags); });

  auto *restore = db->add_subcommand(
      "restore", "Replace the database with FILE after checking it (stop the server first)");
  restore->add_option("file", restore_flags.file, "backup file to restore")->required();
  add_common(restore, restore_flags);
  restore->callback([&rc] { rc = run_restore(restore_flags); });
}

} // namespace gantry::cli
