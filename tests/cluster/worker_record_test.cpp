// The registry record's codec: round trips, and the hostile records (any client of the shared
// store can write one) that are refused instead of converted — found by worker_record_fuzz.
#include "cluster/worker_record.h"

#include <gtest/gtest.h>

namespace gantry::cluster {
namespace {

TEST(WorkerRecord, RoundTripsEveryField) {
  WorkerInfo w;
  w.node_id = "w\xc3\xa9";
  w.url = "http://127.0.0.1:9000/v1";
  w.models = {"a", "b"};
  w.in_flight = 3;
  w.waiting = 7;
  w.kv_usage = 0.1;
  w.heartbeat_ms = 1764800000123;
  auto back = decode_worker(encode_worker(w));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->node_id, w.node_id);
  EXPECT_EQ(back->url, w.url);
  EXPECT_EQ(back->models, w.models);
  EXPECT_EQ(back->in_flight, 3);
  EXPECT_EQ(back->waiting, 7);
  EXPECT_EQ(back->kv_usage, 0.1);
  EXPECT_EQ(back->heartbeat_ms, 1764800000123);
  EXPECT_TRUE(back->prices.empty());
}

// Prices ride in the record (a gateway bills worker-hosted models by them); a record without
// them (an older worker) is unpriced, and a price that is no number or out of bounds makes the
// record malformed, never a bill.
TEST(WorkerRecord, PricesRoundTripAndJunkPricesAreMalformed) {
  WorkerInfo w;
  w.node_id = "w";
  w.url = "http://127.0.0.1:9000/v1";
  w.models = {"a"};
  w.available = {"b"};
  w.prices["a"] = {0.5, 1.5, 2.0};
  w.prices["b"] = {0, 0, 3.25};
  auto back = decode_worker(encode_worker(w));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->prices, w.prices);
  EXPECT_TRUE(check_worker(*back, WorkerLimits{}));
  const std::string head = R"({"node_id":"w","url":"http://h/v1","models":["m"],"prices":)";
  for (const char *tail : {R"([1,2,3]})", R"({"m":[1,2]}})", R"({"m":[1,2,"3"]}})",
                           R"({"m":[-1,0,0]}})", R"({"m":[0,0,1e300]}})", R"({"m":{}}})"})
    EXPECT_FALSE(decode_worker(head + tail)) << tail;
  auto other = decode_worker(head + R"({"x":[1,2,3]}})");
  ASSERT_TRUE(other) << "decodes; the bounds check refuses it";
  auto st = check_worker(*other, WorkerLimits{});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().param, "prices");
}

TEST(WorkerRecord, NumbersThatDoNotFitTheirFieldMakeTheRecordMalformed) {
  const std::string head = R"({"node_id":"w","url":"http://h/v1","models":["m"],)";
  // 1e300 converted to int64 was undefined behaviour (UBSan: float-cast-overflow), and a
  // negative or huge load would steer routing.
  for (const char *tail :
       {R"("in_flight":1e300})", R"("waiting":-1})", R"("heartbeat_ms":18446744073709551615})",
        R"("in_flight":-0.5e19})", R"("kv_usage":2})", R"("kv_usage":-0.1})",
        R"("kv_usage":"0.5"})", R"("waiting":true})"})
    EXPECT_FALSE(decode_worker(head + tail)) << tail;
  auto ok = decode_worker(head + R"("in_flight":2.9,"kv_usage":1,"heartbeat_ms":1.5e12})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->in_flight, 2);
  EXPECT_EQ(ok->kv_usage, 1.0);
  EXPECT_EQ(ok->heartbeat_ms, 1500000000000);
}

TEST(WorkerRecord, ShapeErrorsAreMalformed) {
  for (const char *text :
       {"", "[]", "{}", R"({"node_id":"w","url":"u"})", R"({"node_id":"w","url":"u","models":[1]})",
        R"({"node_id":1,"url":"u","models":[]})", "{\"node_id\":\"\xff\"}"})
    EXPECT_FALSE(decode_worker(text)) << text;
}

} // namespace
} // namespace gantry::cluster
