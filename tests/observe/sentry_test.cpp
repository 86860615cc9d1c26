#include "observe/sentry.h"

#include <gtest/gtest.h>

#include "observe/envelope_check.h"
#include "observe/http_poster.h"

namespace gantry::observe {
namespace {

using namespace std::chrono_literals;

TEST(SentryDsn, ParsesTheDocumentedForms) {
  auto a = parse_dsn("https://abc123@o0.ingest.sentry.io/42");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->scheme, "https");
  EXPECT_EQ(a->public_key, "abc123");
  EXPECT_EQ(a->host, "o0.ingest.sentry.io");
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(a->path, "");
  EXPECT_EQ(a->project_id, "42");
  EXPECT_EQ(a->envelope_url(), "https://o0.ingest.sentry.io/api/42/envelope/");
  EXPECT_EQ(a->raw, "https://abc123@o0.ingest.sentry.io/42");

  auto b = parse_dsn("http://key@127.0.0.1:9000/sentry/7/");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->port, 9000);
  EXPECT_EQ(b->path, "/sentry");
  EXPECT_EQ(b->project_id, "7");
  EXPECT_EQ(b->envelope_url(), "http://127.0.0.1:9000/sentry/api/7/envelope/");

  // The legacy secret is accepted but never repeated in envelopes.
  auto c = parse_dsn("HTTP://pub:legacysecret@host/1");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->public_key, "pub");
  EXPECT_EQ(c->raw, "http://pub@host/1");
  EXPECT_EQ(c->auth_header(kSentryClient),
            "Sentry sentry_version=7, sentry_client=gantry/0.1, sentry_key=pub");
}

TEST(SentryDsn, RejectsMalformedDsns) {
  for (const char *bad : {"", "not a url", "ftp://k@h/1", "http://h/1", "http://@h/1", "http://k@h",
                          "http://k@h/", "http://k@h/abc", "http://k@:80/1", "http://k@h:0/1"}) {
    auto r = parse_dsn(bad);
    ASSERT_FALSE(r) << "accepted: " << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message.rfind("sentry_dsn: ", 0), 0u) << r.error().message;
  }
}

TEST(SentryEnvelope, HasTheEnvelopeShape) {
  auto dsn = parse_dsn("http://pub@127.0.0.1:9/5");
  ASSERT_TRUE(dsn);
  ErrorEvent e;
  e.type = "internal_error";
  e.message = "naïve – ünïcode broke \"x\"\nline two"; // multi-byte and a newline
  e.location = "gateway.inference";
  e.status = 503;
  e.tags = {{"model", "tiny"}, {"endpoint", "/v1/chat/completions"}, {"request_id", "r1"}};
  SentryEventContext context;
  context.server_name = "node-1";
  const std::string id = "0123456789abcdef0123456789abcdef";
  const std::string env =
      build_envelope(*dsn, context, e, "00aa11bb22cc33dd", id, 1'700'000'000'123);

  // Three newline-terminated lines: the payload's own newlines are escaped by JSON.
  EXPECT_EQ(std::count(env.begin(), env.end(), '\n'), 3) << env;
  testing::ParsedEnvelope p = testing::parse_envelope(env);
  ASSERT_EQ(p.error, "") << env;
  EXPECT_EQ(p.header.at("event_id").as_string(), id);
  EXPECT_EQ(p.header.at("sent_at").as_string(), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(p.header.at("dsn").as_string(), "http://pub@127.0.0.1:9/5");
  EXPECT_EQ(p.item.at("type").as_string(), "event");

  const auto &ev = p.payload;
  EXPECT_TRUE(testing::is_hex32(ev.at("event_id")));
  EXPECT_EQ(ev.at("event_id").as_string(), id);
  EXPECT_EQ(ev.at("timestamp").as_string(), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(ev.at("platform").as_string(), "native");
  EXPECT_EQ(ev.at("level").as_string(), "error");
  EXPECT_EQ(ev.at("logger").as_string(), "gantry");
  EXPECT_EQ(ev.at("server_name").as_string(), "node-1");
  EXPECT_EQ(ev.at("release").as_string(), "gantry@0.1.0");
  EXPECT_EQ(ev.at("environment").as_string(), "production");
  const auto &exc = ev.at("exception").at("values").at(0);
  EXPECT_EQ(exc.at("type").as_string(), "internal_error");
  EXPECT_EQ(exc.at("value").as_string(), e.message);
  EXPECT_EQ(ev.at("tags").at("model").as_string(), "tiny");
  EXPECT_EQ(ev.at("tags").at("request_id").as_string(), "r1");
  EXPECT_EQ(ev.at("tags").at("status").as_string(), "503");
  EXPECT_EQ(ev.at("tags").at("location").as_string(), "gateway.inference");
  EXPECT_EQ(ev.at("fingerprint").at(0).as_string(), "00aa11bb22cc33dd");
}

TEST(SentryEnvelope, RandomEventIdsAreUuid4Hex) {
  const std::string a = random_event_id(), b = random_event_id();
  EXPECT_TRUE(testing::is_hex32(boost::json::value(a))) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a[12], '4'); // version nibble
}

TEST(SentryRateLimits, PauseComesFromTheHeadersOrTheFallback) {
  auto pause = [](std::string retry_after, std::string limits) {
    return rate_limit_pause(PostResponse{429, std::move(retry_after), std::move(limits)}, 60s);
  };
  EXPECT_EQ(pause("30", ""), 30s);
  EXPECT_EQ(pause(" 7 ", ""), 7s);
  EXPECT_EQ(pause("", ""), 60s);
  EXPECT_EQ(pause("Wed, 21 Oct 2015 07:28:00 GMT", ""), 60s);
  EXPECT_EQ(pause("5", "60:error:organization, 120:transaction:project"), 60s);
  EXPECT_EQ(pause("5", "2700::organization"), 2700s);
  EXPECT_EQ(pause("5", "10:default;error:key, 20:error:project"), 20s);
  EXPECT_EQ(pause("5", "1.5:error:key"), 2s);
  // Limits that do not cover errors leave Retry-After in charge.
  EXPECT_EQ(pause("5", "100:transaction:key"), 5s);
  EXPECT_EQ(pause("", "garbage"), 60s);
}

TEST(HttpPoster, AcceptsHttpAndHttps) {
  EXPECT_TRUE(check_postable_url("http://127.0.0.1:9000/api/1/envelope/"));
  // https DSNs work now that the outbound client speaks TLS (parsed only; nothing is sent).
  EXPECT_TRUE(check_postable_url("https://o0.ingest.sentry.io/api/1/envelope/"));
  auto other = check_postable_url("ftp://h/x");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::kInvalidArgument);
}

TEST(HttpPoster, ReportsConnectionFailuresAsValues) {
  // Port 1 on loopback: nothing listens there, so the connect is refused at once.
  auto r = make_http_poster(2s)("http://127.0.0.1:1/api/1/envelope/", "x", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kIo);
}

} // namespace
} // namespace gantry::observe
