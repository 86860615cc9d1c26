#include "control/ledger_writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>

#include "control/temp_dir.h"
#include "core/thread_guard.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::control {
namespace {

using gantry::testing::TempDir;
using namespace std::chrono_literals;

UsageRecord row(int64_t id) {
  UsageRecord r;
  r.request_id = "req-" + std::to_string(id);
  r.key_id = "k";
  r.project = "p";
  r.model = "m";
  r.endpoint = "/v1/completions";
  r.input_tokens = 1;
  r.created_at_ms = id;
  return r;
}

// Forwards to a real store, failing append_usage / touch_keys while `failing` is set, and
// signals each successful append (so tests wait on an event, never on a sleep).
class FlakyStore final : public UsageLedger, public KeyStore {
public:
  explicit FlakyStore(SqliteStore &real) : real_(real) {}

  std::atomic<int> fail_appends{0};  // the next this many appends fail
  std::atomic<int> throw_appends{0}; // the next this many appends throw (an adapter's bug)
  std::atomic<bool> fail_touches{false};
  std::atomic<int> append_calls{0};

  std::future<void> next_append() {
    std::lock_guard lock(mu_);
    appended_ = std::promise<void>();
    armed_ = true;
    return appended_.get_future();
  }

  Status append_usage(const std::vector<UsageRecord> &rows) override {
    append_calls.fetch_add(1);
    if (throw_appends.load() > 0) {
      throw_appends.fetch_sub(1);
      throw std::runtime_error("adapter bug (test)");
    }
    if (fail_appends.load() > 0) {
      fail_appends.fetch_sub(1);
      return Error::io("disk unplugged (test)");
    }
    GANTRY_TRY(real_.append_usage(rows));
    std::lock_guard lock(mu_);
    if (armed_) {
      armed_ = false;
      appended_.set_value();
    }
    return Ok();
  }
  Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &t) override {
    if (fail_touches.load())
      return Error::io("disk unplugged (test)");
    return real_.touch_keys(t);
  }

  Status put_project(const Project &p) override { return real_.put_project(p); }
  Result<std::optional<Project>> get_project(std::string_view id) override {
    return real_.get_project(id);
  }
  Result<std::vector<Project>> list_projects() override { return real_.list_projects(); }
  Status insert_key(const ApiKey &k) override { return real_.insert_key(k); }
  Status update_key(const ApiKey &k) override { return real_.update_key(k); }
  Result<std::optional<ApiKey>> get_key(std::string_view id) override { return real_.get_key(id); }
  Result<std::vector<ApiKey>> list_keys(std::string_view project) override {
    return real_.list_keys(project);
  }
  Result<int64_t> count_active_keys(int64_t now) override { return real_.count_active_keys(now); }
  Result<int64_t> count_keys_ever() override { return real_.count_keys_ever(); }
  Result<int64_t> keys_generation() override { return real_.keys_generation(); }
  Result<UsageTotals> usage_of(OwnerKind kind, std::string_view id, int64_t from) override {
    return real_.usage_of(kind, id, from);
  }
  Result<std::vector<UsageGroup>> usage_report(GroupBy g, int64_t from, int64_t to) override {
    return real_.usage_report(g, from, to);
  }
  Result<int64_t> count_usage() override { return real_.count_usage(); }
  Result<int64_t> prune_usage(int64_t before_ms) override { return real_.prune_usage(before_ms); }
  Status check() override { return real_.check(); }

private:
  SqliteStore &real_;
  std::mutex mu_;
  std::promise<void> appended_;
  bool armed_ = false;
};

class LedgerWriterTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = SqliteStore::open(tmp_.path());
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s).value();
    flaky_ = std::make_unique<FlakyStore>(*store_);
  }

  // Only explicit flush() calls (and max_batch) write: the interval never elapses in a test.
  LedgerWriterOptions quiet(size_t max_batch = 512) {
    LedgerWriterOptions o;
    o.flush_interval = 1h;
    o.max_batch = max_batch;
    o.log = [this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    };
    return o;
  }
  std::vector<std::string> log_lines() {
    std::lock_guard lock(log_mu_);
    return log_;
  }

  TempDir tmp_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<FlakyStore> flaky_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(LedgerWriterTest, RetentionPrunesRowsOlderThanItAndOnlyWhenSet) {
  int64_t now = 10'000;
  LedgerWriterOptions o = quiet();
  o.now_ms = [&now] { return now; };
  {
    LedgerWriter keep_all(*flaky_, *flaky_, o); // retention 0: prune() deletes nothing
    for (int64_t i = 1; i <= 10; ++i)
      keep_all.record(row(i * 1000)); // created at 1 s .. 10 s
    ASSERT_TRUE(keep_all.flush().ok());
    ASSERT_TRUE(keep_all.prune().ok());
    EXPECT_EQ(keep_all.pruned(), 0u);
  }
  o.retention = std::chrono::milliseconds(4'500);
  LedgerWriter w(*flaky_, *flaky_, o);
  ASSERT_TRUE(w.prune().ok());
  EXPECT_EQ(w.pruned(), 5u) << "rows created before now - retention (5.5 s): 1 s .. 5 s";
  EXPECT_EQ(*store_->count_usage(), 5);
}

TEST_F(LedgerWriterTest, WritesOneTransactionPerMaxBatchRows) {
  LedgerWriter w(*flaky_, *flaky_, quiet(100));
  for (int64_t i = 0; i < 1234; ++i)
    w.record(row(i));
  ASSERT_TRUE(w.flush().ok());
  EXPECT_EQ(w.batches(), 13u) << "ceil(1234 / 100) transactions";
  EXPECT_EQ(flaky_->append_calls.load(), 13);
  EXPECT_EQ(w.rows_written(), 1234u);
  EXPECT_EQ(w.pending(), 0u);
  EXPECT_EQ(w.dropped(), 0u);
  EXPECT_EQ(*store_->count_usage(), 1234);
}

// Fewer than max_batch rows wait while the store fails, so the writer thread (woken only by a
// full batch or the 1 h interval) never races the explicit flushes for the two failures.
TEST_F(LedgerWriterTest, KeepsRowsWhenTheStoreFailsAndWritesThemLater) {
  LedgerWriter w(*flaky_, *flaky_, quiet(4));
  for (int64_t i = 0; i < 3; ++i)
    w.record(row(i));
  flaky_->fail_appends = 2;
  auto st = w.flush();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kIo);
  EXPECT_EQ(w.pending(), 3u);
  EXPECT_EQ(w.failures(), 1u);
  EXPECT_EQ(w.rows_written(), 0u);
  EXPECT_FALSE(w.flush().ok());
  EXPECT_EQ(w.failures(), 2u);
  EXPECT_EQ(w.pending(), 3u);
  for (int64_t i = 3; i < 11; ++i)
    w.record(row(i));
  ASSERT_TRUE(w.flush().ok());
  EXPECT_EQ(w.pending(), 0u);
  EXPECT_EQ(w.rows_written(), 11u);
  EXPECT_EQ(w.batches(), 3u) << "rows leave in order, four at a time: 4 + 4 + 3";
  EXPECT_EQ(*store_->count_usage(), 11);
  auto lines = log_lines();
  ASSERT_EQ(lines.size(), 2u) << "one line when failing starts, one on recovery";
  EXPECT_NE(lines[0].find("write failed"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("recovered"), std::string::npos) << lines[1];
}

// An adapter that throws costs a retry, not the rows, and the exception reaches the failure
// reporter (the error tracker in a server) instead of ending the process (issue 15, item 4).
TEST_F(LedgerWriterTest, AnAppendThatThrowsKeepsItsRowsAndIsReported) {
  std::vector<std::string> reported;
  ScopedFailureReporter scope([&](std::string_view site, const std::exception &e) {
    reported.push_back(std::string(site) + ": " + e.what());
  });
  {
    LedgerWriter w(*flaky_, *flaky_, quiet(4));
    for (int64_t i = 0; i < 3; ++i)
      w.record(row(i));
    flaky_->throw_appends = 1;
    auto st = w.flush();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kInternal);
    EXPECT_EQ(w.pending(), 3u);
    ASSERT_TRUE(w.flush().ok());
    EXPECT_EQ(w.rows_written(), 3u);
  }
  EXPECT_EQ(*store_->count_usage(), 3);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], "ledger.writer: adapter bug (test)");
}

// A row that already reached the ledger (an attempt whose commit landed but whose answer was
// lost) is written again by the retry and must not be counted twice.
TEST_F(LedgerWriterTest, RewritingARowAlreadyInTheLedgerCountsItOnce) {
  LedgerWriter w(*flaky_, *flaky_, quiet(5));
  for (int64_t i = 0; i < 12; ++i)
    w.record(row(i));
  ASSERT_TRUE(store_->append_usage({row(5)}).ok());
  ASSERT_TRUE(w.flush().ok());
  EXPECT_EQ(*store_->count_usage(), 12);
  auto days = store_->usage_daily("0000", "9999");
  ASSERT_EQ(days->size(), 1u);
  EXPECT_EQ((*days)[0].totals.requests, 12);
}

TEST_F(LedgerWriterTest, DropsTheOldestRowsBeyondMaxPending) {
  auto o = quiet(5);
  o.max_pending = 10;
  LedgerWriter w(*flaky_, *flaky_, o);
  flaky_->fail_appends = 1'000'000;
  for (int64_t i = 0; i < 25; ++i) {
    w.record(row(i));
    (void)w.flush();
  }
  EXPECT_EQ(w.pending(), 10u);
  EXPECT_EQ(w.dropped(), 15u);
  flaky_->fail_appends = 0;
  ASSERT_TRUE(w.flush().ok());
  auto kept = store_->usage_report(GroupBy::kKey, 15, 25);
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].totals.requests, 10) << "the newest 10 rows survive";
  EXPECT_EQ(*store_->count_usage(), 10);
}

TEST_F(LedgerWriterTest, TouchedKeepsTheLatestTimePerKeyWithoutBumpingTheGeneration) {
  ApiKey k;
  k.id = "k";
  k.project = "p";
  k.hash = "h";
  ASSERT_TRUE(store_->insert_key(k).ok());
  const int64_t gen = *store_->keys_generation();
  LedgerWriter w(*flaky_, *flaky_, quiet());
  flaky_->fail_touches = true;
  w.touched("k", 100);
  w.touched("k", 300);
  EXPECT_FALSE(w.flush().ok());
  flaky_->fail_touches = false;
  w.touched("k", 200);
  ASSERT_TRUE(w.flush().ok());
  EXPECT_EQ((*store_->get_key("k"))->last_used_at, 300);
  EXPECT_EQ(*store_->keys_generation(), gen);
}

TEST_F(LedgerWriterTest, TheWriterThreadFlushesOnItsInterval) {
  auto o = quiet();
  o.flush_interval = 10ms;
  auto appended = flaky_->next_append();
  LedgerWriter w(*flaky_, *flaky_, o);
  w.record(row(1));
  ASSERT_EQ(appended.wait_for(10s), std::future_status::ready) << "no flush after the interval";
  EXPECT_EQ(*store_->count_usage(), 1);
}

TEST_F(LedgerWriterTest, TheWriterThreadWakesWhenABatchIsFull) {
  auto appended = flaky_->next_append();
  LedgerWriter w(*flaky_, *flaky_, quiet(8)); // the interval (1 h) never elapses
  for (int64_t i = 0; i < 8; ++i)
    w.record(row(i));
  ASSERT_EQ(appended.wait_for(10s), std::future_status::ready) << "a full batch waited";
  EXPECT_EQ(*store_->count_usage(), 8);
}

TEST_F(LedgerWriterTest, TheDestructorFlushes) {
  {
    LedgerWriter w(*flaky_, *flaky_, quiet());
    for (int64_t i = 0; i < 7; ++i)
      w.record(row(i));
    w.touched("nobody", 5);
  }
  EXPECT_EQ(*store_->count_usage(), 7);
}

} // namespace
} // namespace gantry::control
