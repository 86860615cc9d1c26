// The Idempotency-Key recorder: what it hands to the store, and that it stops copying past the
// store's per-entry cap (security audit H8) while the client still gets every byte.
#include "server/recording_writer.h"

#include <gtest/gtest.h>

namespace gantry::server {
namespace {

// The connection's end of the decorator: counts what reached the client (test thread only).
class CountingWriter final : public http::ResponseWriter {
public:
  void respond(http::Response r) override { body = std::move(r.body); }
  void start_sse(http::Headers) override {}
  bool send_event(std::string data) override {
    ++events;
    bytes += data.size();
    return true;
  }
  bool send_named_event(std::string_view, std::string data) override {
    return send_event(std::move(data));
  }
  void end() override { ended = true; }
  bool is_closed() const override { return false; }
  void on_close(std::function<void()>) override {}
  const std::string &request_id() const override { return id; }

  std::string body, id = "rid";
  int events = 0;
  size_t bytes = 0;
  bool ended = false;
};

struct Recorded {
  bool called = false, complete = false;
  control::StoredResponse response;
};

TEST(RecordingWriter, RecordsAStreamUnderTheCap) {
  auto inner = std::make_shared<CountingWriter>();
  Recorded got;
  {
    RecordingWriter w(
        inner,
        [&](bool complete, control::StoredResponse r) {
          got = {true, complete, std::move(r)};
        },
        1 << 20);
    w.start_sse({{"x-a", "1"}});
    w.send_event("{\"x\":1}");
    w.send_event("[DONE]");
    w.end();
  }
  ASSERT_TRUE(got.called);
  EXPECT_TRUE(got.complete);
  EXPECT_FALSE(got.response.truncated);
  EXPECT_EQ(got.response.events, (std::vector<std::string>{"{\"x\":1}", "[DONE]"}));
}

TEST(RecordingWriter, StopsCopyingPastTheCapButForwardsEverything) {
  auto inner = std::make_shared<CountingWriter>();
  Recorded got;
  RecordingWriter w(
      inner,
      [&](bool complete, control::StoredResponse r) {
        got = {true, complete, std::move(r)};
      },
      64 << 10);
  w.start_sse({});
  const std::string chunk(1000, 'x');
  for (int i = 0; i < 1000; ++i) // ~1 MB streamed
    w.send_event(chunk);
  w.send_event("[DONE]");
  w.end();
  EXPECT_EQ(inner->events, 1001);
  EXPECT_EQ(inner->bytes, 1000u * 1000u + 6u);
  ASSERT_TRUE(got.called);
  EXPECT_TRUE(got.complete);
  EXPECT_TRUE(got.response.truncated);
  EXPECT_TRUE(got.response.events.empty()) << "nothing past the cap is held";
}

TEST(RecordingWriter, AnErrorEventPastTheCapIsStillSeen) {
  auto inner = std::make_shared<CountingWriter>();
  Recorded got;
  RecordingWriter w(
      inner,
      [&](bool complete, control::StoredResponse r) {
        got = {true, complete, std::move(r)};
      },
      1000);
  w.start_sse({});
  w.send_event(std::string(2000, 'x'));
  w.send_event("{\"error\":{\"message\":\"engine failed\"}}");
  w.send_event("[DONE]");
  ASSERT_TRUE(got.called);
  EXPECT_TRUE(got.response.truncated);
  ASSERT_EQ(got.response.events.size(), 1u);
  EXPECT_TRUE(got.response.events[0].starts_with("{\"error\""));
}

TEST(RecordingWriter, ABodyOverTheCapIsReportedTruncated) {
  auto inner = std::make_shared<CountingWriter>();
  Recorded got;
  RecordingWriter w(
      inner,
      [&](bool complete, control::StoredResponse r) {
        got = {true, complete, std::move(r)};
      },
      1000);
  w.respond(http::Response::json(200, std::string(5000, 'b')));
  EXPECT_EQ(inner->body.size(), 5000u);
  EXPECT_TRUE(got.response.truncated);
  EXPECT_TRUE(got.response.body.empty());
}

} // namespace
} // namespace gantry::server
