// The embedded JobRecords on a real SQLite file: compare-and-set batch transitions between two
// "nodes" (two instances on one file), file quotas, metadata without content, delete and
// retention.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "control/temp_dir.h"
#include "jobs/job_ids.h"
#include "store/sqlite/sqlite_job_records.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::jobs {
namespace {

using gantry::testing::TempDir;

class JobRecordsTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto store = control::SqliteStore::open(dir_.path()); // creates and migrates gantry.db
    ASSERT_TRUE(store) << store.error().message;
    a_ = open();
    b_ = open();
  }
  std::unique_ptr<SqliteJobRecords> open() {
    auto r = SqliteJobRecords::open(control::database_path(dir_.path()));
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : nullptr;
  }
  Batch batch(const std::string &status) {
    Batch b;
    b.id = ids_.next("batch_");
    b.project = "p";
    b.endpoint = "/v1/completions";
    b.input_file_id = "file-x";
    b.completion_window = "24h";
    b.status = status;
    b.total = 10;
    b.created_ms = 1000;
    b.expires_ms = 2000;
    return b;
  }
  StoredFile file(const std::string &project, std::string content, int64_t created_ms = 1000) {
    StoredFile f;
    f.id = ids_.next("file-");
    f.project = project;
    f.purpose = "batch";
    f.filename = "in.jsonl";
    f.bytes = static_cast<int64_t>(content.size());
    f.content = std::move(content);
    f.created_ms = created_ms;
    return f;
  }

  TempDir dir_;
  JobIds ids_;
  std::unique_ptr<SqliteJobRecords> a_, b_; // two nodes' adapters
};

TEST_F(JobRecordsTest, OfTwoCoordinatorsRacingOneTransitionExactlyOneWins) {
  Batch b = batch("in_progress");
  ASSERT_TRUE(a_->put_batch(b));
  // Both read the batch in_progress and both try to claim its finalization.
  Batch on_a = **a_->get_batch(b.id), on_b = **b_->get_batch(b.id);
  on_a.status = on_b.status = "finalizing";
  on_a.finalizing_ms = 1500;
  on_b.finalizing_ms = 1501;
  EXPECT_TRUE(*a_->transition_batch(on_a, "in_progress"));
  EXPECT_FALSE(*b_->transition_batch(on_b, "in_progress")) << "B lost: the status moved on";
  auto now = **b_->get_batch(b.id);
  EXPECT_EQ(now.status, "finalizing");
  EXPECT_EQ(now.finalizing_ms, 1500) << "the loser wrote nothing";
}

TEST_F(JobRecordsTest, ConcurrentTransitionsHaveOneWinnerEach) {
  constexpr int kBatches = 40;
  std::vector<std::string> ids;
  for (int i = 0; i < kBatches; ++i) {
    Batch b = batch("in_progress");
    ids.push_back(b.id);
    ASSERT_TRUE(a_->put_batch(b));
  }
  std::atomic<int> wins{0}, errors{0};
  auto race = [&](SqliteJobRecords &r) {
    for (const auto &id : ids) {
      auto got = r.get_batch(id);
      if (!got || !*got) {
        errors++;
        continue;
      }
      Batch b = **got;
      b.status = "finalizing";
      auto won = r.transition_batch(b, "in_progress");
      if (!won)
        errors++;
      else
        wins += *won;
    }
  };
  std::thread t1(race, std::ref(*a_)), t2(race, std::ref(*b_));
  t1.join();
  t2.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(wins.load(), kBatches) << "each transition won exactly once";
}

TEST_F(JobRecordsTest, ACancelAndAFinalizationCannotBothWin) {
  Batch b = batch("in_progress");
  ASSERT_TRUE(a_->put_batch(b));
  Batch cancel = b, progress = b;
  cancel.status = "cancelling";
  ASSERT_TRUE(*b_->transition_batch(cancel, "in_progress"));
  progress.completed = 3; // a coordinator's progress write, read before the cancel
  EXPECT_FALSE(*a_->transition_batch(progress, "in_progress"));
  EXPECT_EQ((**a_->get_batch(b.id)).status, "cancelling") << "the cancel is not overwritten";
}

TEST_F(JobRecordsTest, FilesAreBoundedPerProjectInCountAndBytes) {
  const FileQuota quota{2, 100};
  ASSERT_TRUE(a_->put_file(file("p", "aaaa"), quota));
  ASSERT_TRUE(a_->put_file(file("p", "bbbb"), quota));
  auto st = a_->put_file(file("p", "cccc"), quota);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(a_->put_file(file("q", std::string(100, 'x')), quota)) << "per project";
  st = a_->put_file(file("q", "y"), FileQuota{10, 100});
  ASSERT_FALSE(st) << "101 bytes in all";
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(a_->put_file(file("q", "y"), FileQuota{})) << "no quota: unbounded";
}

TEST_F(JobRecordsTest, MetadataWithoutContentDeleteAndRetention) {
  StoredFile old = file("p", "old content", 1000), fresh = file("p", "fresh", 5000);
  ASSERT_TRUE(a_->put_file(old, {}));
  ASSERT_TRUE(a_->put_file(fresh, {}));
  auto info = *a_->get_file_info(old.id);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->bytes, 11);
  EXPECT_EQ(info->created_ms, 1000);
  EXPECT_TRUE(info->content.empty());
  EXPECT_EQ((*a_->get_file(old.id))->content, "old content");
  EXPECT_FALSE(*a_->delete_file("other", fresh.id)) << "another project's file is not deleted";
  EXPECT_TRUE(*a_->delete_file("p", fresh.id));
  EXPECT_FALSE(*a_->delete_file("p", fresh.id)) << "already gone";
  EXPECT_FALSE(*a_->get_file_info(fresh.id));
  EXPECT_EQ(*a_->purge_files(2000), 1);
  EXPECT_FALSE(*a_->get_file_info(old.id));
}

TEST_F(JobRecordsTest, BatchesListNewestFirstPagingByCursor) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    Batch b = batch("in_progress");
    ids.push_back(b.id);
    ASSERT_TRUE(a_->put_batch(b));
  }
  auto page = *a_->list_batches("p", "", 3);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].id, ids[4]);
  auto next = *a_->list_batches("p", page.back().id, 3);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[1].id, ids[0]);
}

} // namespace
} // namespace gantry::jobs
