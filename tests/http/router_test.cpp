#include "http/router.h"

#include <gtest/gtest.h>

namespace gantry::http {
namespace {

// Records what a handler or the router answered; used on the test thread only.
class RecordingWriter : public ResponseWriter {
public:
  void respond(Response r) override { response = std::move(r); }
  void start_sse(Headers) override {}
  bool send_event(std::string) override { return false; }
  bool send_named_event(std::string_view, std::string) override { return false; }
  void end() override {}
  bool is_closed() const override { return false; }
  void on_close(std::function<void()>) override {}
  const std::string &request_id() const override { return id; }

  Response response;
  std::string id = "rid";
};

Request make(Method m, std::string path) {
  Request r;
  r.method = m;
  r.target = path;
  r.path = std::move(path);
  return r;
}

Router make_router(std::string &seen) {
  Router router;
  router.get("/v1/models", [&seen](Request &&, std::shared_ptr<ResponseWriter> w) {
    seen = "models";
    w->respond(Response::json(200, "{}"));
  });
  router.get("/v1/jobs/{id}", [&seen](Request &&req, std::shared_ptr<ResponseWriter> w) {
    seen = "job " + std::string(req.path_param("id"));
    w->respond(Response::json(200, "{}"));
  });
  router.del("/v1/jobs/{id}", [&seen](Request &&req, std::shared_ptr<ResponseWriter> w) {
    seen = "delete " + std::string(req.path_param("id"));
    w->respond(Response::json(200, "{}"));
  });
  router.get("/v1/files/{id}/content", [&seen](Request &&req, std::shared_ptr<ResponseWriter> w) {
    seen = "content " + std::string(req.path_param("id"));
    w->respond(Response::json(200, "{}"));
  });
  return router;
}

TEST(RouterTest, MatchesLiteralAndParameterRoutes) {
  std::string seen;
  Router router = make_router(seen);
  auto w = std::make_shared<RecordingWriter>();
  router.dispatch(make(Method::kGet, "/v1/models"), w);
  EXPECT_EQ(seen, "models");
  router.dispatch(make(Method::kGet, "/v1/jobs/job_42"), w);
  EXPECT_EQ(seen, "job job_42");
  router.dispatch(make(Method::kDelete, "/v1/jobs/7"), w);
  EXPECT_EQ(seen, "delete 7");
  router.dispatch(make(Method::kGet, "/v1/files/f1/content"), w);
  EXPECT_EQ(seen, "content f1");
}

TEST(RouterTest, UnknownPathIs404WithOpenAiError) {
  std::string seen;
  Router router = make_router(seen);
  auto w = std::make_shared<RecordingWriter>();
  router.dispatch(make(Method::kGet, "/v1/nope"), w);
  EXPECT_EQ(w->response.status, 404);
  EXPECT_NE(w->response.body.find("\"type\":\"invalid_request_error\""), std::string::npos)
      << w->response.body;
  EXPECT_NE(w->response.body.find("GET /v1/nope"), std::string::npos) << w->response.body;
  EXPECT_TRUE(seen.empty());
}

TEST(RouterTest, ParameterDoesNotMatchExtraSegments) {
  std::string seen;
  Router router = make_router(seen);
  auto w = std::make_shared<RecordingWriter>();
  router.dispatch(make(Method::kGet, "/v1/jobs/1/2"), w);
  EXPECT_EQ(w->response.status, 404);
}

TEST(RouterTest, WrongMethodIs405WithAllow) {
  std::string seen;
  Router router = make_router(seen);
  auto w = std::make_shared<RecordingWriter>();
  router.dispatch(make(Method::kPost, "/v1/jobs/9"), w);
  EXPECT_EQ(w->response.status, 405);
  auto allow = find_header(w->response.headers, "allow");
  ASSERT_TRUE(allow.has_value());
  EXPECT_EQ(*allow, "GET, DELETE");
  EXPECT_NE(w->response.body.find("method_not_allowed"), std::string::npos);
}

TEST(ErrorResponseTest, PayloadTooLargeShape) {
  Response r = error_response(Error{ErrorCode::kPayloadTooLarge, "too \"big\"", {}});
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body,
            "{\"error\":{\"message\":\"too \\\"big\\\"\",\"type\":\"invalid_request_error\","
            "\"param\":null,\"code\":\"payload_too_large\"}}");
  EXPECT_TRUE(r.headers.empty()) << "a non-retryable error has no Retry-After";
}

// One retry policy for every renderer (the gateway, jobs and embeddings used to differ).
TEST(ErrorResponseTest, RetryableErrorsSayWhenToComeBack) {
  for (auto code : {ErrorCode::kQueueFull, ErrorCode::kRateLimited, ErrorCode::kCircuitOpen}) {
    Response r = error_response(Error{code, "busy", {}});
    EXPECT_EQ(find_header(r.headers, "retry-after"), "1");
    EXPECT_EQ(find_header(r.headers, "retry-after-ms"), "1000");
  }
  Error e{ErrorCode::kRateLimited, "slow down", {}};
  e.retry_after_ms = 2500;
  Response r = error_response(e);
  EXPECT_EQ(find_header(r.headers, "retry-after"), "3");
  EXPECT_EQ(find_header(r.headers, "retry-after-ms"), "2500");
}

} // namespace
} // namespace gantry::http
