#include "observe/error_tracker.h"
#include "support/fake_clock.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include <boost/json.hpp>

namespace gantry::observe {
namespace {

using namespace std::chrono_literals;

const std::string kKeyId = "AbCdEf123456";
const std::string kSecret = "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tX"; // 43 characters
const std::string kKey = "gsk_" + kKeyId + "_" + kSecret;

ErrorEvent event(std::string message, std::string location = "gateway.inference",
                 std::map<std::string, std::string> tags = {}) {
  ErrorEvent e;
  e.type = "internal_error";
  e.message = std::move(message);
  e.location = std::move(location);
  e.tags = std::move(tags);
  return e;
}

TEST(MessageTemplate, NormalizesVolatileParts) {
  ASSERT_EQ(kSecret.size(), 43u);
  struct Case {
    std::string in, want;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"KV cache full after 812 tokens", "KV cache full after <n> tokens"},
      {"model 'llama-3' not found", "model <s> not found"},
      {"field \"temperature\" must be <= 2.5", "field <s> must be <= <n>"},
      {"request 3f2a9c1d4e5b6a7f8091a2b3c4d5e6f7 failed", "request <id> failed"},
      {"job 123e4567-e89b-12d3-a456-426614174000 lost", "job <id> lost"},
      {"bad pointer 0x7ffd1234", "bad pointer <id>"},
      {"timeout after 1500ms", "timeout after <n>ms"},
      {"can't map file", "can't map file"},
      {"utf8 decode failed at layer12 on H100", "utf8 decode failed at layer12 on H100"},
      {"blk.12.attn_q missing", "blk.<n>.attn_q missing"},
      {"key gsk_AbCdEf123456_*** revoked", "key gsk_<id>_*** revoked"},
      {"request id req7Hk2mP9qL4xW8zR3t", "request id <id>"},
      {"unterminated \"quote 12", "unterminated \"quote <n>"},
      {"peer 10.0.0.7:8080 reset", "peer <n>.<n>:<n> reset"},
      {"offset -42 of 'a' and \"b\"", "offset -<n> of <s> and <s>"},
  };
  for (const Case &c : cases)
    EXPECT_EQ(message_template(c.in), c.want) << "input: " << c.in;
}

TEST(MessageTemplate, IsBoundedForHugeMessages) {
  EXPECT_LE(message_template(std::string(100'000, 'x') + " 1").size(), 512u);
}

TEST(RedactSecrets, ReplacesKeySecretsAndKeepsTheId) {
  EXPECT_EQ(redact_secrets("bad key " + kKey + ", retry"), "bad key gsk_" + kKeyId + "_***, retry");
  EXPECT_EQ(redact_secrets("Bearer " + kKey), "Bearer gsk_" + kKeyId + "_***");
  EXPECT_EQ(redact_secrets(kKey + kKey), "gsk_" + kKeyId + "_***"); // one alnum run, all hidden
  // A truncated secret is still mostly secret.
  EXPECT_EQ(redact_secrets("gsk_" + kKeyId + "_abc"), "gsk_" + kKeyId + "_***");
  EXPECT_EQ(redact_secrets("gsk_short_abc and gsk_"), "gsk_short_abc and gsk_");
  EXPECT_EQ(redact_secrets("no keys here"), "no keys here");
}

TEST(ErrorFingerprint, IsSixteenHexDigitsAndStable) {
  const std::string a = error_fingerprint("t", "m <n>", "x.cpp:1");
  EXPECT_EQ(a.size(), 16u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(a, error_fingerprint("t", "m <n>", "x.cpp:1"));
  EXPECT_NE(a, error_fingerprint("t", "m <n>", "x.cpp:2"));
  EXPECT_NE(a, error_fingerprint("u", "m <n>", "x.cpp:1"));
  // Field boundaries matter: ("ab","c") and ("a","bc") are different errors.
  EXPECT_NE(error_fingerprint("ab", "c", ""), error_fingerprint("a", "bc", ""));
}

TEST(ErrorTracker, SameTemplateGroupsAndLocationSplits) {
  FakeClock clock;
  ErrorTracker tracker(clock);
  CaptureResult a = tracker.capture(event("KV cache full after 812 tokens"));
  CaptureResult b = tracker.capture(event("KV cache full after 90 tokens"));
  CaptureResult c = tracker.capture(event("KV cache full after 90 tokens", "engine.step"));
  EXPECT_TRUE(a.new_group);
  EXPECT_FALSE(b.new_group);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(b.count, 2u);
  EXPECT_TRUE(c.new_group);
  EXPECT_NE(c.fingerprint, a.fingerprint);
  ErrorEvent other_type = event("KV cache full after 1 tokens");
  other_type.type = "resource_exhausted";
  EXPECT_TRUE(tracker.capture(other_type).new_group);
  EXPECT_EQ(tracker.groups().size(), 3u);
  EXPECT_EQ(tracker.stats().captured, 4u);
}

TEST(ErrorTracker, CountsFirstAndLastSeenAndKeepsTheLatestSample) {
  FakeClock clock;
  ErrorTracker tracker(clock);
  const std::int64_t t0 = clock.unix_seconds();
  tracker.capture(event("engine failed on step 1", "engine", {{"request_id", "r1"}}));
  clock.advance(5s);
  tracker.capture(event("engine failed on step 2", "engine", {{"request_id", "r2"}}));
  clock.advance(7s);
  tracker.capture(event("engine failed on step 3", "engine", {{"request_id", "r3"}}));
  auto groups = tracker.groups();
  ASSERT_EQ(groups.size(), 1u);
  const ErrorGroup &g = groups[0];
  EXPECT_EQ(g.count, 3u);
  EXPECT_EQ(g.first_seen, t0);
  EXPECT_EQ(g.last_seen, t0 + 12);
  EXPECT_EQ(g.message_template, "engine failed on step <n>");
  EXPECT_EQ(g.type, "internal_error");
  EXPECT_EQ(g.location, "engine");
  EXPECT_EQ(g.sample.message, "engine failed on step 3");
  EXPECT_EQ(g.sample.tags.at("request_id"), "r3");
}

TEST(ErrorTracker, GroupsAreSortedByLastSeenAndEvictedLeastRecentlySeenFirst) {
  FakeClock clock;
  ErrorTrackerOptions options;
  options.max_groups = 3;
  ErrorTracker tracker(clock, options);
  const std::string a = tracker.capture(event("a", "A")).fingerprint;
  clock.advance(1s);
  const std::string b = tracker.capture(event("b", "B")).fingerprint;
  clock.advance(1s);
  const std::string c = tracker.capture(event("c", "C")).fingerprint;
  clock.advance(1s);
  tracker.capture(event("a", "A")); // A is now the most recent; B the least
  clock.advance(1s);
  const std::string d = tracker.capture(event("d", "D")).fingerprint;

  auto groups = tracker.groups();
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].fingerprint, d);
  EXPECT_EQ(groups[1].fingerprint, a);
  EXPECT_EQ(groups[2].fingerprint, c);
  EXPECT_EQ(groups[1].count, 2u);
  EXPECT_EQ(tracker.stats().groups_evicted, 1u);
  EXPECT_EQ(tracker.stats().groups, 3u);
  // B was forgotten, so it starts over as a new group (and C, now the oldest, goes).
  CaptureResult again = tracker.capture(event("b", "B"));
  EXPECT_TRUE(again.new_group);
  EXPECT_EQ(again.fingerprint, b);
  EXPECT_EQ(again.count, 1u);
  EXPECT_EQ(tracker.groups().back().fingerprint, a);
  EXPECT_EQ(tracker.stats().groups_evicted, 2u);
}

TEST(ErrorTracker, TagValueCountsKeepTheTopValuesWithinTheBound) {
  FakeClock clock;
  ErrorTrackerOptions options;
  options.max_tag_values = 2;
  ErrorTracker tracker(clock, options);
  auto capture = [&](const std::string &model) {
    tracker.capture(event("boom", "x", {{"model", model}, {"endpoint", "/v1/chat/completions"}}));
  };
  capture("m1");
  capture("m2");
  capture("m1");
  capture("m1");
  capture("m3"); // displaces m2 (the rarest) and inherits its count + 1
  auto groups = tracker.groups();
  ASSERT_EQ(groups.size(), 1u);
  ASSERT_EQ(groups[0].tag_counts.size(), 2u);
  const TagCounts &models = groups[0].tag_counts[0];
  EXPECT_EQ(models.key, "model");
  ASSERT_EQ(models.values.size(), 2u);
  EXPECT_EQ(models.values[0].value, "m1");
  EXPECT_EQ(models.values[0].count, 3u);
  EXPECT_EQ(models.values[1].value, "m3");
  EXPECT_EQ(models.values[1].count, 2u);
  const TagCounts &endpoints = groups[0].tag_counts[1];
  EXPECT_EQ(endpoints.key, "endpoint");
  ASSERT_EQ(endpoints.values.size(), 1u);
  EXPECT_EQ(endpoints.values[0].count, 5u);
  EXPECT_EQ(tracker.stats().tag_values_replaced, 1u);
}

TEST(ErrorTracker, NeverStoresRawKeys) {
  FakeClock clock;
  ErrorTracker tracker(clock);
  tracker.capture(event("auth backend failed for " + kKey, "gateway.auth",
                        {{"Authorization", "Bearer " + kKey},
                         {"api_key", kKey},
                         {"key_id", kKeyId},
                         {"note", "saw " + kKey}}));
  auto groups = tracker.groups();
  ASSERT_EQ(groups.size(), 1u);
  const ErrorEvent &s = groups[0].sample;
  EXPECT_EQ(s.message, "auth backend failed for gsk_" + kKeyId + "_***");
  EXPECT_EQ(groups[0].message_template, "auth backend failed for gsk_<id>_***");
  EXPECT_EQ(s.tags.count("Authorization"), 0u);
  EXPECT_EQ(s.tags.count("api_key"), 0u);
  EXPECT_EQ(s.tags.at("key_id"), kKeyId);
  EXPECT_EQ(s.tags.at("note"), "saw gsk_" + kKeyId + "_***");
  const std::string json = tracker.render_json();
  EXPECT_EQ(json.find(kSecret), std::string::npos) << json;
}

TEST(ErrorTracker, RendersTheListShape) {
  FakeClock clock;
  ErrorTracker tracker(clock);
  tracker.capture(event("first 1", "a", {{"model", "tiny"}, {"endpoint", "/v1/completions"}}));
  clock.advance(1s);
  ErrorEvent e = event("second 2", "b", {{"model", "tiny"}, {"project", "p1"}});
  e.status = 503;
  tracker.capture(e);

  boost::json::value all = boost::json::parse(tracker.render_json());
  EXPECT_EQ(all.at("object").as_string(), "list");
  EXPECT_FALSE(all.at("has_more").as_bool());
  const auto &data = all.at("data").as_array();
  ASSERT_EQ(data.size(), 2u);
  const auto &g = data[0].as_object();
  EXPECT_EQ(g.at("object").as_string(), "error_group");
  EXPECT_EQ(g.at("id").as_string(), g.at("fingerprint").as_string());
  EXPECT_EQ(g.at("type").as_string(), "internal_error");
  EXPECT_EQ(g.at("message_template").as_string(), "second <n>");
  EXPECT_EQ(g.at("location").as_string(), "b");
  EXPECT_EQ(g.at("count").to_number<int>(), 1);
  EXPECT_EQ(g.at("first_seen").to_number<std::int64_t>(), clock.unix_seconds());
  EXPECT_EQ(g.at("last_seen").to_number<std::int64_t>(), clock.unix_seconds());
  EXPECT_EQ(g.at("sample").at("message").as_string(), "second 2");
  EXPECT_EQ(g.at("sample").at("status").to_number<int>(), 503);
  EXPECT_EQ(g.at("sample").at("tags").at("project").as_string(), "p1");
  EXPECT_EQ(g.at("tag_counts").at("model").at(0).at("value").as_string(), "tiny");
  EXPECT_EQ(g.at("tag_counts").at("model").at(0).at("count").to_number<int>(), 1);
  EXPECT_EQ(data[1].at("location").as_string(), "a");

  boost::json::value limited = boost::json::parse(tracker.render_json(1));
  EXPECT_EQ(limited.at("data").as_array().size(), 1u);
  EXPECT_TRUE(limited.at("has_more").as_bool());
}

class RecordingSink : public ErrorSink {
public:
  void on_error(const ErrorEvent &event, const CaptureResult &capture) override {
    events.push_back(event);
    captures.push_back(capture);
  }
  std::vector<ErrorEvent> events;
  std::vector<CaptureResult> captures;
};

TEST(ErrorTracker, PassesTheRedactedEventToTheSink) {
  FakeClock clock;
  RecordingSink sink;
  ErrorTracker tracker(clock, {}, &sink);
  tracker.capture(event("x " + kKey, "s", {{"authorization", kKey}}));
  tracker.capture(event("x " + kKey, "s"));
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(sink.events[0].message, "x gsk_" + kKeyId + "_***");
  EXPECT_TRUE(sink.events[0].tags.empty());
  EXPECT_TRUE(sink.captures[0].new_group);
  EXPECT_FALSE(sink.captures[1].new_group);
  EXPECT_EQ(sink.captures[1].count, 2u);
}

TEST(ErrorTracker, CountsEveryCaptureFromConcurrentThreads) {
  FakeClock clock;
  ErrorTracker tracker(clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&tracker, t] {
      for (int i = 0; i < 500; ++i)
        tracker.capture(event("failure " + std::to_string(i), "loc" + std::to_string(i % 2),
                              {{"model", "m" + std::to_string(t)}}));
    });
  }
  for (auto &th : threads)
    th.join();
  auto groups = tracker.groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].count + groups[1].count, 2000u);
  EXPECT_EQ(tracker.stats().captured, 2000u);
}

TEST(ErrorEvents, FromErrorsAndExceptions) {
  ErrorEvent e = error_event(Error::internal("disk on fire"), "store.write");
  EXPECT_EQ(e.type, "internal_error");
  EXPECT_EQ(e.status, 500);
  EXPECT_EQ(e.message, "disk on fire");
  EXPECT_EQ(e.location, "store.write");
  EXPECT_EQ(error_event(Error{ErrorCode::kUnavailable, "x", {}, 0}, "l").status, 503);

  ErrorEvent x = exception_event(std::out_of_range("index 7"), "gateway.handler");
  EXPECT_EQ(x.type, "std::out_of_range");
  EXPECT_EQ(x.message, "index 7");
  EXPECT_EQ(x.status, 500);
}

} // namespace
} // namespace gantry::observe
