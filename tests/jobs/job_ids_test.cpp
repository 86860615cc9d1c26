// Job, file and batch ids: unique across generators (nodes), well formed, and unpredictable.
#include <gtest/gtest.h>

#include <bitset>
#include <set>

#include "jobs/job_ids.h"
#include "support/fake_clock.h"

namespace gantry::jobs {
namespace {

TEST(JobIds, UniqueAcrossTwoGeneratorsAndWellFormed) {
  JobIds node_a, node_b; // two nodes minting at the same moment
  std::set<std::string> seen;
  for (int i = 0; i < 50'000; ++i) {
    for (JobIds *g : {&node_a, &node_b}) {
      const std::string id = g->next("job_");
      ASSERT_TRUE(is_well_formed_id(id, "job_")) << id;
      ASSERT_TRUE(seen.insert(id).second) << "repeated id " << id;
    }
  }
  EXPECT_EQ(seen.size(), 100'000u);
}

TEST(JobIds, PrefixesAsOpenAISpellsThem) {
  JobIds ids;
  const std::string job = ids.next("job_"), file = ids.next("file-"), batch = ids.next("batch_");
  EXPECT_TRUE(is_well_formed_id(job, "job_")) << job;
  EXPECT_TRUE(is_well_formed_id(file, "file-")) << file;
  EXPECT_TRUE(is_well_formed_id(batch, "batch_")) << batch;
  EXPECT_EQ(job.size(), 4u + 22u);
  EXPECT_FALSE(is_well_formed_id("job_0000000000000001", "job_")) << "the old sequential form";
  EXPECT_FALSE(is_well_formed_id("job_!!!!!!!!!!!!!!!!!!!!!!", "job_"));
  EXPECT_FALSE(is_well_formed_id(file, "job_"));
}

// The old ids were unix_millis << 12 | counter: consecutive ids shared their leading digits and
// differed by one. Random ids share no prefix beyond chance and are spread over all digits.
TEST(JobIds, ConsecutiveIdsShowNoSequence) {
  JobIds ids;
  std::string prev = ids.next("job_").substr(4);
  int long_shared_prefixes = 0;
  int digit_counts[128] = {};
  constexpr int kIds = 20'000;
  for (int i = 0; i < kIds; ++i) {
    const std::string cur = ids.next("job_").substr(4);
    // The first digit carries 3 bits (62^22 > 2^128: it is 0-7), so a prefix counted from it
    // is shared by chance 1 in 8 * 62^2 (20,000 pairs expect 0.65 such, and 3 or more came up
    // in about 1 run in 35). Counted from the second digit: 1 in 62^3 ≈ 238,000.
    size_t shared = 1;
    while (shared < cur.size() && cur[shared] == prev[shared])
      ++shared;
    long_shared_prefixes += shared - 1 >= 3;
    // Count the 21 digits after the first for the same reason.
    for (size_t k = 1; k < cur.size(); ++k)
      digit_counts[static_cast<unsigned char>(cur[k])]++;
    prev = cur;
  }
  EXPECT_LE(long_shared_prefixes, 2);
  // Each of the 62 digits appears about kIds * 21 / 62 ≈ 6,774 times.
  int used = 0;
  for (int c : digit_counts) {
    if (c == 0)
      continue;
    ++used;
    EXPECT_GT(c, 6'000);
    EXPECT_LT(c, 7'600);
  }
  EXPECT_EQ(used, 62);
}

} // namespace
} // namespace gantry::jobs

namespace gantry::jobs {
namespace {

// With a clock, ids sort by creation time (a primary-key index appends them) while keeping 83
// random bits: unique and unguessable within one millisecond too.
TEST(JobIds, WithAClockIdsSortByCreationAndStayRandomWithinAMillisecond) {
  FakeClock clock;
  JobIds ids(&clock);
  std::string last;
  std::set<std::string> same_ms;
  for (int i = 0; i < 200; ++i) {
    const std::string id = ids.next("job_");
    EXPECT_TRUE(is_well_formed_id(id, "job_")) << id;
    if (i % 20 == 0) {
      clock.advance(std::chrono::milliseconds(1));
      const std::string later = ids.next("job_");
      EXPECT_LT(id, later) << "minted a millisecond later, sorts later";
    }
    last = id;
  }
  for (int i = 0; i < 1000; ++i)
    same_ms.insert(ids.next("job_").substr(4 + 8));
  EXPECT_EQ(same_ms.size(), 1000u) << "the random part differs within one millisecond";
}

} // namespace
} // namespace gantry::jobs
