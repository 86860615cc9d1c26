#include "backend/remote/sse_parser.h"

#include <gtest/gtest.h>

namespace gantry::backend::remote {
namespace {

std::vector<SseEvent> feed_all(SseParser &p, std::string_view bytes, std::size_t piece) {
  std::vector<SseEvent> out;
  for (std::size_t i = 0; i < bytes.size(); i += piece)
    EXPECT_TRUE(p.feed(bytes.substr(i, piece), out).ok());
  return out;
}

TEST(SseParser, EventsAcrossArbitraryPieceBoundaries) {
  const std::string stream = "data: {\"a\":1}\n\n: ping\r\n\r\nevent: message_delta\r\ndata: x\r\n"
                             "data: y\r\n\r\ndata: [DONE]\n\n";
  for (std::size_t piece : {1, 2, 3, 7, 1000}) {
    SseParser p;
    auto ev = feed_all(p, stream, piece);
    ASSERT_EQ(ev.size(), 3u) << "piece " << piece;
    EXPECT_EQ(ev[0].data, "{\"a\":1}");
    EXPECT_EQ(ev[1].event, "message_delta");
    EXPECT_EQ(ev[1].data, "x\ny");
    EXPECT_EQ(ev[2].data, "[DONE]");
    EXPECT_TRUE(p.at_boundary());
  }
}

TEST(SseParser, CutMidEventIsNotAtBoundary) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.feed("data: {\"a\":", out).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(p.at_boundary());
}

TEST(SseParser, HugeLineIsAnErrorWithoutBufferingIt) {
  SseParser p({/*max_line=*/1024, /*max_event=*/4096});
  std::vector<SseEvent> out;
  const std::string piece(512, 'x');
  ASSERT_TRUE(p.feed("data: ", out).ok());
  ASSERT_TRUE(p.feed(piece, out).ok());
  auto st = p.feed(piece, out); // 6 + 1024 > 1024
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(p.feed("\n\n", out).ok()) << "stays failed";
  EXPECT_TRUE(out.empty());
}

TEST(SseParser, HugeEventOfShortLinesIsAnError) {
  SseParser p({/*max_line=*/100, /*max_event=*/300});
  std::vector<SseEvent> out;
  Status st = Ok();
  for (int i = 0; i < 10 && st.ok(); ++i)
    st = p.feed("data: " + std::string(50, 'y') + "\n", out);
  EXPECT_FALSE(st.ok());
}

} // namespace
} // namespace gantry::backend::remote
