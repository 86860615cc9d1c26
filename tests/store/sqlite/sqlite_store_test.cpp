// The SQLite adapter's own behaviour: migrations, the file (reopen, newer versions, permissions),
// the roll-ups, the readiness check on the file, backup and restore. What every adapter of the
// KeyStore, UsageLedger and BudgetStore ports must do is in tests/contract/.
#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "control/temp_dir.h"

namespace gantry::control {
namespace {

using gantry::testing::TempDir;

std::unique_ptr<SqliteStore> open_ok(const std::string &dir) {
  auto s = SqliteStore::open(dir);
  if (!s)
    ADD_FAILURE() << "open " << dir << ": " << s.error().message;
  return s ? std::move(s).value() : nullptr;
}

ApiKey make_key(std::string id, std::string project) {
  ApiKey k;
  k.id = std::move(id);
  k.project = std::move(project);
  k.name = "test key";
  k.hash = "abc123";
  k.created_at = 1000;
  return k;
}

UsageRecord make_row(std::string request_id, std::string key, std::string project,
                     std::string model, int64_t at_ms, int64_t in = 10, int64_t out = 5,
                     double cost = 0.25) {
  UsageRecord r;
  r.request_id = std::move(request_id);
  r.key_id = std::move(key);
  r.project = std::move(project);
  r.model = std::move(model);
  r.endpoint = "/v1/chat/completions";
  r.input_tokens = in;
  r.output_tokens = out;
  r.cost_usd = cost;
  r.finish_reason = "stop";
  r.created_at_ms = at_ms;
  return r;
}

// The user_version field of the SQLite header: 4 bytes, big-endian, at offset 60.
void write_user_version(const std::string &file, uint32_t v) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << file;
  f.seekp(60);
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  f.write(bytes, 4);
}

void overwrite(const std::string &file, std::streamoff at, size_t n, char byte) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << file;
  f.seekp(at);
  std::string junk(n, byte);
  f.write(junk.data(), static_cast<std::streamsize>(n));
}

// 2024-03-01 00:00:00 UTC and the days around it, in unix milliseconds.
constexpr int64_t kMar1 = 1709251200000;
constexpr int64_t kDayMs = 86'400'000;

TEST(SqliteStoreTest, MigratesAnEmptyDirectory) {
  TempDir tmp;
  const std::string dir = tmp.sub("data/nested");
  auto store = open_ok(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(std::filesystem::exists(dir + "/gantry.db"));
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "the data directory holds key hashes";
  EXPECT_EQ(*store->schema_version(), sqlite_schema_version());
  EXPECT_GE(sqlite_schema_version(), 1);
  EXPECT_EQ(*store->integrity_check(), "ok");
  EXPECT_EQ(*store->keys_generation(), 0);
  EXPECT_TRUE(store->list_projects()->empty());
  EXPECT_EQ(*store->count_usage(), 0);
  EXPECT_TRUE(store->check().ok());
}

TEST(SqliteStoreTest, ReopenKeepsData) {
  TempDir tmp;
  {
    auto store = open_ok(tmp.path());
    ASSERT_TRUE(store->put_project({"search", {60, 1000, 4}, 1234}).ok());
    ASSERT_TRUE(store->insert_key(make_key("k1", "search")).ok());
    ASSERT_TRUE(store->append_usage({make_row("r1", "k1", "search", "m", kMar1)}).ok());
  }
  auto store = open_ok(tmp.path());
  EXPECT_EQ(*store->schema_version(), sqlite_schema_version());
  auto p = store->get_project("search");
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->limits.tpm, 1000);
  EXPECT_TRUE(store->get_key("k1")->has_value());
  EXPECT_EQ(*store->count_usage(), 1);
  EXPECT_EQ(*store->keys_generation(), 2);
}

TEST(SqliteStoreTest, RefusesADatabaseFromANewerRelease) {
  TempDir tmp;
  { open_ok(tmp.path()); } // the last connection checkpoints the WAL into the file
  write_user_version(tmp.sub("gantry.db"), sqlite_schema_version() + 1);
  auto store = SqliteStore::open(tmp.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(store.error().message.find("newer"), std::string::npos) << store.error().message;
}

TEST(SqliteStoreTest, AppendUsageCountsEachRequestIdOnce) {
  TempDir tmp;
  auto store = open_ok(tmp.path());
  const std::vector<UsageRecord> batch = {
      make_row("r1", "k1", "p", "m", kMar1 + 1000, 10, 5, 0.5),
      make_row("r2", "k1", "p", "m", kMar1 + 2000, 20, 6, 0.25),
      make_row("r3", "k1", "p", "m", kMar1 + kDayMs + 5, 1, 1, 1.0),
  };
  ASSERT_TRUE(store->append_usage(batch).ok());
  ASSERT_TRUE(store->append_usage(batch).ok()) << "a retried flush is not an error";
  EXPECT_EQ(*store->count_usage(), 3);

  auto days = store->usage_daily("2024-03-01", "2024-03-03");
  ASSERT_TRUE(days.ok());
  ASSERT_EQ(days->size(), 2u);
  EXPECT_EQ((*days)[0].day, "2024-03-01");
  EXPECT_EQ((*days)[0].totals.requests, 2);
  EXPECT_EQ((*days)[0].totals.input_tokens, 30);
  EXPECT_EQ((*days)[0].totals.output_tokens, 11);
  EXPECT_DOUBLE_EQ((*days)[0].totals.cost_usd, 0.75);
  EXPECT_EQ((*days)[1].day, "2024-03-02");
  EXPECT_EQ((*days)[1].totals.requests, 1);

  // One old row and one new: only the new one reaches the ledger and the roll-up.
  ASSERT_TRUE(
      store->append_usage({batch[0], make_row("r4", "k1", "p", "m", kMar1 + 3000, 7, 7, 0.0)})
          .ok());
  EXPECT_EQ(*store->count_usage(), 4);
  days = store->usage_daily("2024-03-01", "2024-03-02");
  ASSERT_EQ(days->size(), 1u);
  EXPECT_EQ((*days)[0].totals.requests, 3);
  EXPECT_EQ((*days)[0].totals.input_tokens, 37);
}

// A large batch (as a busy server's writer flushes) with rows already in the ledger and ids
// repeated inside it: each call is counted once, in the ledger and in the roll-up, which is
// summed per batch and must still group by day, key, project and model.
TEST(SqliteStoreTest, LargeBatchesCountEachRequestIdOnceInTheLedgerAndTheRollUp) {
  TempDir tmp;
  auto store = open_ok(tmp.path());
  auto row = [](int i) {
    return make_row("r" + std::to_string(i), i % 2 ? "k1" : "k2", "p", "m",
                    kMar1 + (i % 3 == 0 ? kDayMs : 0) + i, i, 1, 0.125);
  };
  std::vector<UsageRecord> first;
  for (int i = 0; i < 40; ++i)
    first.push_back(row(i));
  ASSERT_TRUE(store->append_usage(first).ok());
  EXPECT_EQ(*store->count_usage(), 40);
  // Again with 30 new rows, all 40 old ones, r50 and r61 twice and r45 once more at the end.
  std::vector<UsageRecord> second = first;
  for (int i = 40; i < 70; ++i)
    second.push_back(row(i));
  second.insert(second.begin() + 5, row(50));
  second.insert(second.begin() + 10, row(61));
  second.insert(second.begin() + 12, row(61));
  second.push_back(row(45));
  ASSERT_TRUE(store->append_usage(second).ok());
  EXPECT_EQ(*store->count_usage(), 70);

  auto days = store->usage_daily("0000", "9999");
  ASSERT_TRUE(days.ok());
  ASSERT_EQ(days->size(), 4u) << "two days x two keys";
  int64_t requests = 0, input = 0;
  double cost = 0;
  for (const auto &d : *days) {
    requests += d.totals.requests;
    input += d.totals.input_tokens;
    cost += d.totals.cost_usd;
    int64_t want = 0;
    for (int i = 0; i < 70; ++i) {
      const UsageRecord r = row(i);
      const bool next_day = r.created_at_ms >= kMar1 + kDayMs;
      if (r.key_id == d.key_id && (d.day == "2024-03-02") == next_day)
        ++want;
    }
    EXPECT_EQ(d.totals.requests, want) << d.day << " " << d.key_id;
  }
  EXPECT_EQ(requests, 70);
  EXPECT_EQ(input, 69 * 70 / 2);
  EXPECT_DOUBLE_EQ(cost, 70 * 0.125);
}

TEST(SqliteStoreTest, CheckFailsWhenTheFileIsRemovedOrReplaced) {
  TempDir tmp;
  auto store = open_ok(tmp.path());
  ASSERT_TRUE(store->check().ok());
  const std::string db = tmp.sub("gantry.db");
  std::filesystem::rename(db, db + ".moved");
  auto gone = store->check();
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kIo);
  std::filesystem::copy_file(db + ".moved", db);
  auto replaced = store->check();
  ASSERT_FALSE(replaced.ok());
  EXPECT_NE(replaced.error().message.find("replaced"), std::string::npos)
      << replaced.error().message;
}

TEST(SqliteStoreTest, CheckFailsWhenTheFileBecomesReadOnly) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "root writes through file modes";
  TempDir tmp;
  auto store = open_ok(tmp.path());
  ASSERT_TRUE(store->check().ok());
  const std::string db = tmp.sub("gantry.db");
  std::filesystem::permissions(db, std::filesystem::perms::owner_read);
  EXPECT_FALSE(store->check().ok()) << "a 0444 database must fail the readiness check";
  std::filesystem::permissions(db, std::filesystem::perms::owner_read |
                                       std::filesystem::perms::owner_write);
  EXPECT_TRUE(store->check().ok());
  std::filesystem::permissions(tmp.path(), std::filesystem::perms::owner_read |
                                               std::filesystem::perms::owner_exec);
  EXPECT_FALSE(store->check().ok()) << "a read-only data directory must fail the check";
  std::filesystem::permissions(tmp.path(), std::filesystem::perms::owner_all);
}

// Rows are appended in transactions of 10; a consistent snapshot holds whole transactions only,
// and its roll-ups agree with its ledger.
TEST(SqliteStoreTest, BackupWhileWritingIsAConsistentSnapshot) {
  TempDir tmp;
  auto store = open_ok(tmp.sub("live"));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> batches{0};
  std::thread writer([&] {
    for (int64_t b = 0; !stop.load(); ++b) {
      std::vector<UsageRecord> rows;
      for (int i = 0; i < 10; ++i) {
        rows.push_back(make_row("r" + std::to_string(b * 10 + i), "k", "p", "m",
                                kMar1 + (b * 10 + i) * 60'000));
      }
      if (!store->append_usage(rows).ok())
        return;
      batches.fetch_add(1);
    }
  });
  while (batches.load() < 50)
    std::this_thread::yield();
  const std::string backup = tmp.sub("backup.db");
  auto st = store->backup_to(backup);
  stop = true;
  writer.join();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_FALSE(std::filesystem::exists(backup + ".tmp"));
  ASSERT_TRUE(verify_database_file(backup).ok());

  ASSERT_TRUE(restore_database(backup, tmp.sub("copy")).ok());
  auto copy = open_ok(tmp.sub("copy"));
  EXPECT_EQ(*copy->integrity_check(), "ok");
  const int64_t n = *copy->count_usage();
  EXPECT_GE(n, 500);
  EXPECT_EQ(n % 10, 0) << "the copy holds a partial transaction";
  EXPECT_LE(n, *store->count_usage());
  auto days = copy->usage_daily("0000", "9999");
  int64_t rolled_up = 0;
  for (const auto &d : *days)
    rolled_up += d.totals.requests;
  EXPECT_EQ(rolled_up, n) << "roll-ups disagree with the ledger in the copy";
}

TEST(SqliteStoreTest, RestoreRefusesACorruptFileAndAcceptsAGoodOne) {
  TempDir tmp;
  const std::string live_dir = tmp.sub("live");
  const std::string good = tmp.sub("good.db");
  {
    auto store = open_ok(live_dir);
    std::vector<UsageRecord> rows;
    for (int i = 0; i < 2000; ++i) {
      rows.push_back(make_row("r" + std::to_string(i), "k", "p", "m", kMar1 + i));
    }
    ASSERT_TRUE(store->append_usage(rows).ok());
    ASSERT_TRUE(store->backup_to(good).ok());
    ASSERT_TRUE(store->append_usage({make_row("after-backup", "k", "p", "m", kMar1)}).ok());
  }
  const auto size = std::filesystem::file_size(good);
  ASSERT_GT(size, 16u * 4096u) << "the test needs a multi-page file";

  const std::string damaged = tmp.sub("damaged.db");
  std::filesystem::copy_file(good, damaged);
  overwrite(damaged, static_cast<std::streamoff>(size / 2), 8192, '\x5a');
  auto st = restore_database(damaged, live_dir);
  ASSERT_FALSE(st.ok()) << "a damaged backup must be refused";
  EXPECT_EQ(st.error().code, ErrorCode::kCorruptData) << st.error().message;
  EXPECT_NE(st.error().message.find("refusing"), std::string::npos) << st.error().message;

  const std::string garbage = tmp.sub("garbage.db");
  std::filesystem::copy_file(good, garbage);
  overwrite(garbage, 0, 100, '\x01');
  st = restore_database(garbage, live_dir);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kCorruptData) << st.error().message;

  const std::string future = tmp.sub("future.db");
  std::filesystem::copy_file(good, future);
  write_user_version(future, sqlite_schema_version() + 1);
  st = restore_database(future, live_dir);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kUnsupported) << st.error().message;

  {
    auto live = open_ok(live_dir);
    EXPECT_EQ(*live->count_usage(), 2001) << "a refused restore must leave the database alone";
  }
  ASSERT_TRUE(restore_database(good, live_dir).ok());
  EXPECT_FALSE(std::filesystem::exists(live_dir + "/gantry.db-wal"));
  auto live = open_ok(live_dir);
  EXPECT_EQ(*live->integrity_check(), "ok");
  EXPECT_EQ(*live->count_usage(), 2000) << "the restored database is the backup";
}

TEST(SqliteStoreTest, RestoreRefusesWhileTheDatabaseIsOpen) {
  TempDir tmp;
  const std::string live_dir = tmp.sub("live");
  const std::string backup = tmp.sub("backup.db");
  auto store = open_ok(live_dir);
  ASSERT_TRUE(store->backup_to(backup).ok());
  auto self = store->backup_to(tmp.sub("live/gantry.db"));
  ASSERT_FALSE(self.ok()) << "a backup over the live file would destroy it";
  EXPECT_EQ(self.error().code, ErrorCode::kInvalidArgument);
  auto st = restore_database(backup, live_dir);
  ASSERT_FALSE(st.ok()) << "a server still has the database open";
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable) << st.error().message;
  EXPECT_TRUE(store->check().ok()) << "the refused restore left the open database alone";
  store.reset();
  EXPECT_TRUE(restore_database(backup, live_dir).ok());
}

TEST(SqliteStoreTest, RestoreIntoAnEmptyDirectory) {
  TempDir tmp;
  const std::string backup = tmp.sub("backup.db");
  {
    auto store = open_ok(tmp.sub("a"));
    ASSERT_TRUE(store->insert_key(make_key("k1", "p")).ok());
    ASSERT_TRUE(store->backup_to(backup).ok());
  }
  ASSERT_TRUE(restore_database(backup, tmp.sub("b/c")).ok());
  auto store = open_ok(tmp.sub("b/c"));
  EXPECT_TRUE(store->get_key("k1")->has_value());
}

TEST(StoreNamesTest, RoundTrip) {
  for (auto k : {OwnerKind::kKey, OwnerKind::kProject})
    EXPECT_EQ(owner_kind_from(to_string(k)), k);
  for (auto p : {Period::kDay, Period::kMonth})
    EXPECT_EQ(period_from(to_string(p)), p);
  EXPECT_EQ(to_string(OwnerKind::kKey), "key");
  EXPECT_EQ(to_string(Period::kMonth), "month");
  EXPECT_FALSE(owner_kind_from("team").has_value());
  EXPECT_FALSE(period_from("week").has_value());
}

mode_t mode_of(const std::string &path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// Audit M5: the data directory, the database with its -wal and -shm, and backups are the
// owner's alone, whatever the umask, and a looser directory or database left by an older
// version is tightened when the store opens it.
TEST(SqliteStoreFiles, DataDirectoryDatabaseAndBackupsAreOwnerOnly) {
  const mode_t old_mask = ::umask(022); // the usual default, under which SQLite made 0644
  TempDir tmp;
  const std::string fresh = tmp.sub("fresh");
  {
    auto store = open_ok(fresh);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append_usage({make_row("r1", "k", "p", "m", 1000)}).ok());
    EXPECT_EQ(mode_of(fresh), 0700u);
    for (const char *f : {"/gantry.db", "/gantry.db-wal", "/gantry.db-shm"})
      EXPECT_EQ(mode_of(fresh + f), 0600u) << f;
    const std::string backup = tmp.sub("backup.db");
    ASSERT_TRUE(store->backup_to(backup).ok());
    EXPECT_EQ(mode_of(backup), 0600u);
  }
  // An existing, world-readable directory and database are tightened on open.
  const std::string old = tmp.sub("old");
  std::filesystem::create_directories(old);
  std::filesystem::copy_file(tmp.sub("backup.db"), old + "/gantry.db");
  ::chmod(old.c_str(), 0755);
  ::chmod((old + "/gantry.db").c_str(), 0644);
  {
    auto store = open_ok(old);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->append_usage({make_row("r2", "k", "p", "m", 2000)}).ok());
    EXPECT_EQ(mode_of(old), 0700u);
    for (const char *f : {"/gantry.db", "/gantry.db-wal", "/gantry.db-shm"})
      EXPECT_EQ(mode_of(old + f), 0600u) << f;
  }
  ::umask(old_mask);
}

} // namespace
} // namespace gantry::control
