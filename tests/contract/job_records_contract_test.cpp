// The JobRecords contract: every adapter passes the same suite (tests/contract/store_factories.h
// lists them). Compare-and-set batch transitions between two nodes (two adapters on one
// backend), file quotas, metadata without content, delete and retention, batch paging.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "contract/store_factories.h"
#include "jobs/job_ids.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"
#include "support/fake_clock.h"

namespace gantry::jobs {
namespace {

template <typename Factory> class JobRecordsContract : public ::testing::Test {
protected:
  void SetUp() override {
    a_ = open();
    b_ = open();
    ASSERT_TRUE(a_ && b_);
  }
  std::unique_ptr<JobRecords> open() { return factory_.job_records(); }
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

  Factory factory_;
  JobIds ids_;
  std::unique_ptr<JobRecords> a_, b_; // two nodes' adapters
};

TYPED_TEST_SUITE(JobRecordsContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(JobRecordsContract, OfTwoCoordinatorsRacingOneTransitionExactlyOneWins) {
  Batch b = this->batch("in_progress");
  ASSERT_TRUE(this->a_->put_batch(b));
  // Both read the batch in_progress and both try to claim its finalization.
  Batch on_a = **this->a_->get_batch(b.id), on_b = **this->b_->get_batch(b.id);
  on_a.status = on_b.status = "finalizing";
  on_a.finalizing_ms = 1500;
  on_b.finalizing_ms = 1501;
  EXPECT_TRUE(*this->a_->transition_batch(on_a, "in_progress"));
  EXPECT_FALSE(*this->b_->transition_batch(on_b, "in_progress")) << "B lost: the status moved on";
  auto now = **this->b_->get_batch(b.id);
  EXPECT_EQ(now.status, "finalizing");
  EXPECT_EQ(now.finalizing_ms, 1500) << "the loser wrote nothing";
}

TYPED_TEST(JobRecordsContract, ConcurrentTransitionsHaveOneWinnerEach) {
  constexpr int kBatches = 40;
  std::vector<std::string> ids;
  for (int i = 0; i < kBatches; ++i) {
    Batch b = this->batch("in_progress");
    ids.push_back(b.id);
    ASSERT_TRUE(this->a_->put_batch(b));
  }
  std::atomic<int> wins{0}, errors{0};
  auto race = [&](JobRecords &r) {
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
  std::thread t1(race, std::ref(*this->a_)), t2(race, std::ref(*this->b_));
  t1.join();
  t2.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(wins.load(), kBatches) << "each transition won exactly once";
}

TYPED_TEST(JobRecordsContract, ACancelAndAFinalizationCannotBothWin) {
  Batch b = this->batch("in_progress");
  ASSERT_TRUE(this->a_->put_batch(b));
  Batch cancel = b, progress = b;
  cancel.status = "cancelling";
  ASSERT_TRUE(*this->b_->transition_batch(cancel, "in_progress"));
  progress.completed = 3; // a coordinator's progress write, read before the cancel
  EXPECT_FALSE(*this->a_->transition_batch(progress, "in_progress"));
  EXPECT_EQ((**this->a_->get_batch(b.id)).status, "cancelling") << "the cancel is not overwritten";
}

TYPED_TEST(JobRecordsContract, FilesAreBoundedPerProjectInCountAndBytes) {
  const FileQuota quota{2, 100};
  ASSERT_TRUE(this->a_->put_file(this->file("p", "aaaa"), quota));
  ASSERT_TRUE(this->a_->put_file(this->file("p", "bbbb"), quota));
  auto st = this->a_->put_file(this->file("p", "cccc"), quota);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(this->a_->put_file(this->file("q", std::string(100, 'x')), quota)) << "per project";
  st = this->a_->put_file(this->file("q", "y"), FileQuota{10, 100});
  ASSERT_FALSE(st) << "101 bytes in all";
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(this->a_->put_file(this->file("q", "y"), FileQuota{})) << "no quota: unbounded";
}

TYPED_TEST(JobRecordsContract, MetadataWithoutContentDeleteAndRetention) {
  StoredFile old = this->file("p", "old content", 1000), fresh = this->file("p", "fresh", 5000);
  ASSERT_TRUE(this->a_->put_file(old, {}));
  ASSERT_TRUE(this->a_->put_file(fresh, {}));
  auto info = *this->a_->get_file_info(old.id);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->bytes, 11);
  EXPECT_EQ(info->created_ms, 1000);
  EXPECT_TRUE(info->content.empty());
  EXPECT_EQ((*this->a_->get_file(old.id))->content, "old content");
  EXPECT_FALSE(*this->a_->delete_file("other", fresh.id))
      << "another project's file is not deleted";
  EXPECT_TRUE(*this->a_->delete_file("p", fresh.id));
  EXPECT_FALSE(*this->a_->delete_file("p", fresh.id)) << "already gone";
  EXPECT_FALSE(*this->a_->get_file_info(fresh.id));
  EXPECT_EQ(*this->a_->purge_files(2000), 1);
  EXPECT_FALSE(*this->a_->get_file_info(old.id));
}

// A file written piece by piece (an upload): invisible until committed, read back piece by piece
// in order and byte for byte (binary included), bounded by the same quota as put_file, and
// leaving nothing behind when it is abandoned or refused.
TYPED_TEST(JobRecordsContract, AFileWrittenInPiecesIsReadBackInPiecesAndDroppedUnlessCommitted) {
  std::string first(kFilePieceBytes, '\0'), second = "tail\n";
  for (size_t i = 0; i < first.size(); ++i)
    first[i] = static_cast<char>(i * 7 + 3); // every byte value, NULs included
  StoredFile info = this->file("p", "");
  info.bytes = static_cast<int64_t>(first.size() + second.size());
  {
    auto w = this->a_->create_file(info.id, 1000).value();
    ASSERT_TRUE(w->append(first));
    ASSERT_TRUE(w->append(second));
    EXPECT_FALSE(*this->b_->get_file_info(info.id)) << "not visible before commit";
    ASSERT_TRUE(w->commit(info, {}));
  }
  auto meta = *this->b_->get_file_info(info.id);
  ASSERT_TRUE(meta) << "committed through one adapter, seen by another";
  EXPECT_EQ(meta->bytes, info.bytes);
  EXPECT_EQ(**this->b_->read_file_piece(info.id, 0), first);
  EXPECT_EQ(**this->b_->read_file_piece(info.id, 1), second);
  EXPECT_FALSE(*this->b_->read_file_piece(info.id, 2)) << "past the last piece";
  // put_file splits a large content into pieces of kFilePieceBytes.
  StoredFile whole = this->file("p", std::string(kFilePieceBytes + 10, 'w'));
  ASSERT_TRUE(this->a_->put_file(whole, {}));
  EXPECT_EQ((*this->a_->read_file_piece(whole.id, 0))->size(), size_t(kFilePieceBytes));
  EXPECT_EQ((*this->a_->read_file_piece(whole.id, 1))->size(), 10u);
  EXPECT_EQ((*this->a_->get_file(whole.id))->content, whole.content);
  // Abandoned: its pieces go with the writer.
  StoredFile dropped = this->file("p", "");
  {
    auto w = this->a_->create_file(dropped.id, 1000).value();
    ASSERT_TRUE(w->append("half an upload"));
  }
  EXPECT_FALSE(*this->a_->read_file_piece(dropped.id, 0)) << "an abandoned upload leaves nothing";
  // Refused by the quota at commit: nothing stored, the pieces removed.
  StoredFile refused = this->file("q", "");
  refused.bytes = 5;
  {
    auto w = this->a_->create_file(refused.id, 1000).value();
    ASSERT_TRUE(w->append("12345"));
    auto st = w->commit(refused, FileQuota{10, 4});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  }
  EXPECT_FALSE(*this->a_->get_file_info(refused.id));
  EXPECT_FALSE(*this->a_->read_file_piece(refused.id, 0));
  // Deleting a file deletes its pieces; retention removes orphaned pieces (a writer that died).
  EXPECT_TRUE(*this->a_->delete_file("p", info.id));
  EXPECT_FALSE(*this->a_->read_file_piece(info.id, 0));
  StoredFile orphan = this->file("p", "");
  auto w = this->a_->create_file(orphan.id, 1000).value();
  ASSERT_TRUE(w->append("crashed mid-upload"));
  (void)this->b_->purge_files(1001);
  EXPECT_FALSE(*this->b_->read_file_piece(orphan.id, 0)) << "pieces no file owns are purged";
}

TYPED_TEST(JobRecordsContract, BatchesListNewestFirstPagingByCursor) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    Batch b = this->batch("in_progress");
    ids.push_back(b.id);
    ASSERT_TRUE(this->a_->put_batch(b));
  }
  auto page = *this->a_->list_batches("p", "", 3);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].id, ids[4]);
  auto next = *this->a_->list_batches("p", page.back().id, 3);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[1].id, ids[0]);
}

Delivery delivery(const std::string &id, const std::string &project, int64_t next_at_ms,
                  const std::string &job_id = "job-1") {
  Delivery d;
  d.id = id;
  d.job_id = job_id;
  d.project = project;
  d.url = "https://hooks.example/" + project;
  d.event = "job.completed";
  d.payload = R"({"id":")" + id + R"("})";
  d.next_at_ms = next_at_ms;
  d.created_ms = next_at_ms;
  return d;
}

TYPED_TEST(JobRecordsContract, DueDeliveriesOldestFirstAndAtMostSomeOfEachProject) {
  auto &r = *this->a_;
  ASSERT_TRUE(r.add_delivery(delivery("a1", "a", 100)));
  ASSERT_TRUE(r.add_delivery(delivery("a2", "a", 200)));
  ASSERT_TRUE(r.add_delivery(delivery("a3", "a", 300)));
  ASSERT_TRUE(r.add_delivery(delivery("b1", "b", 150)));
  ASSERT_TRUE(r.add_delivery(delivery("later", "b", 10'000)));
  Delivery again = delivery("a1", "a", 5);
  again.payload = "changed";
  ASSERT_TRUE(r.add_delivery(again)) << "an event's delivery id is stable: a second add is a no-op";

  auto due = *this->b_->due_deliveries(1000, 2, 10);
  ASSERT_EQ(due.size(), 3u) << "a3 waits: at most 2 of project a per page";
  EXPECT_EQ(due[0].id, "a1");
  EXPECT_EQ(due[0].payload, R"({"id":"a1"})");
  EXPECT_EQ(due[0].status, "pending");
  EXPECT_EQ(due[1].id, "b1");
  EXPECT_EQ(due[2].id, "a2");
  EXPECT_EQ(this->b_->due_deliveries(1000, 2, 2)->size(), 2u) << "and `limit` in all";
  EXPECT_EQ(*this->b_->next_delivery_at(), 100);

  Delivery done = due[0];
  done.status = "delivered";
  done.attempts = 1;
  done.last_status = 200;
  done.delivered_ms = 1001;
  ASSERT_TRUE(r.update_delivery(done));
  Delivery retry = due[1];
  retry.attempts = 1;
  retry.last_status = 503;
  retry.last_error = "non_2xx:5xx";
  retry.next_at_ms = 5000;
  ASSERT_TRUE(r.update_delivery(retry));
  due = *this->b_->due_deliveries(1000, 10, 10);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].id, "a2");
  EXPECT_EQ(due[1].id, "a3");
  EXPECT_EQ(*this->b_->next_delivery_at(), 200);

  auto of_job = *this->b_->deliveries_of("job-1");
  ASSERT_EQ(of_job.size(), 5u);
  EXPECT_EQ(of_job[0].id, "a1");
  EXPECT_EQ(of_job[0].status, "delivered");
  EXPECT_EQ(of_job[0].delivered_ms, 1001);
  EXPECT_EQ(of_job[1].id, "b1");
  EXPECT_EQ(of_job[1].last_error, "non_2xx:5xx");
  EXPECT_EQ(of_job[1].next_at_ms, 5000);
  EXPECT_TRUE(this->b_->deliveries_of("job-2")->empty());
}

TYPED_TEST(JobRecordsContract, NoPendingDeliveryMeansNoNextTime) {
  EXPECT_EQ(*this->a_->next_delivery_at(), 0);
  EXPECT_TRUE(this->a_->due_deliveries(1'000'000, 10, 10)->empty());
}

TYPED_TEST(JobRecordsContract, ARotatedSecretKeepsSigningForItsGraceOnly) {
  auto &r = *this->a_;
  EXPECT_TRUE(r.webhook_secrets("p", 1000)->empty());
  ASSERT_TRUE(r.rotate_webhook_secret("p", "whsec_one", 1000, 0));
  EXPECT_EQ(*this->b_->webhook_secrets("p", 1000), std::vector<std::string>{"whsec_one"});
  ASSERT_TRUE(r.rotate_webhook_secret("p", "whsec_two", 2000, 500));
  EXPECT_EQ(*this->b_->webhook_secrets("p", 2499),
            (std::vector<std::string>{"whsec_two", "whsec_one"}))
      << "newest first; the old one verifies during the grace";
  EXPECT_EQ(*this->b_->webhook_secrets("p", 2500), std::vector<std::string>{"whsec_two"});
  EXPECT_TRUE(this->b_->webhook_secrets("q", 2000)->empty()) << "secrets are per project";
}

TYPED_TEST(JobRecordsContract, AGoneEndpointIsDisabledForItsProjectOnly) {
  const std::string url = "https://hooks.example/x";
  EXPECT_FALSE(*this->a_->endpoint_disabled("p", url));
  ASSERT_TRUE(this->a_->disable_endpoint("p", url, 1000));
  ASSERT_TRUE(this->a_->disable_endpoint("p", url, 2000)) << "disabling twice is fine";
  EXPECT_TRUE(*this->b_->endpoint_disabled("p", url));
  EXPECT_FALSE(*this->b_->endpoint_disabled("q", url)) << "another project may use the URL";
}

TYPED_TEST(JobRecordsContract, ABatchRoundTripsAndActiveListsOnlyUnfinishedOnes) {
  Batch b = this->batch("in_progress");
  b.key_id = "k1";
  b.metadata = R"({"team":"search"})";
  b.errors = R"([{"line":3,"message":"bad"}])";
  ASSERT_TRUE(this->a_->put_batch(b));
  Batch done = this->batch("completed");
  ASSERT_TRUE(this->a_->put_batch(done));
  auto got = **this->b_->get_batch(b.id);
  EXPECT_EQ(got.project, "p");
  EXPECT_EQ(got.key_id, "k1");
  EXPECT_EQ(got.input_file_id, "file-x");
  EXPECT_EQ(got.completion_window, "24h");
  EXPECT_EQ(got.metadata, b.metadata);
  EXPECT_EQ(got.errors, b.errors);
  EXPECT_EQ(got.total, 10);
  EXPECT_EQ(got.expires_ms, 2000);
  EXPECT_FALSE(*this->b_->get_batch("batch_missing"));
  auto active = *this->b_->active_batches();
  ASSERT_EQ(active.size(), 1u);
  EXPECT_EQ(active[0].id, b.id);
}

TYPED_TEST(JobRecordsContract, BatchCountsFollowItsJobsInTheQueue) {
  // The records and the queue share one backend: a batch's counts are its lines' outcomes.
  FakeClock clock;
  JobQueueOptions o;
  o.node_id = "node-a";
  auto queue = this->factory_.job_queue(o, clock);
  ASSERT_TRUE(queue);
  std::vector<Job> lines;
  for (int i = 0; i < 3; ++i) {
    Job j;
    j.id = this->ids_.next("job_");
    j.project = "p";
    j.endpoint = "/v1/completions";
    j.body = "{}";
    j.batch_id = "batch_1";
    j.custom_id = "line-" + std::to_string(i);
    j.created_ms = clock.unix_millis();
    lines.push_back(j);
  }
  ASSERT_TRUE(queue->enqueue(lines));
  auto l = queue->lease("w", std::chrono::seconds(10), std::chrono::milliseconds(0));
  ASSERT_TRUE(l && *l);
  JobOutcome ok;
  ok.success = true;
  ok.status = 200;
  ok.body = "{}";
  ASSERT_TRUE(*queue->complete(**l, ok));
  const std::string other = (*l)->job.id == lines[0].id ? lines[1].id : lines[0].id;
  ASSERT_TRUE(*queue->cancel("p", other));
  auto c = *this->a_->batch_counts("batch_1");
  EXPECT_EQ(c.total, 3);
  EXPECT_EQ(c.succeeded, 1);
  EXPECT_EQ(c.failed, 1) << "canceled counts as failed";
  EXPECT_EQ(this->a_->batch_counts("batch_other")->total, 0);
}

} // namespace
} // namespace gantry::jobs
