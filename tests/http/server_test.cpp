// End-to-end tests of HttpServer + Router + HttpClient over loopback on an ephemeral port.
#include "http/server.h"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "http/client.h"
#include "http/router.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Waits for a condition that another thread makes true; fails the test after `limit`.
template <typename F> bool eventually(F &&condition, std::chrono::milliseconds limit = 2000ms) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (condition())
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return condition();
}

// A request parked by the /park route, answered later by the test thread.
struct Parked {
  std::promise<std::shared_ptr<ResponseWriter>> arrived;
};

class ServerTest : public ::testing::Test {
protected:
  void start(ServerOptions options = {}) {
    options.port = 0;
    options.header_timeout =
        options.header_timeout == ServerOptions{}.header_timeout ? 300ms : options.header_timeout;
    Router router;
    router.get("/v1/models", [](Request &&, std::shared_ptr<ResponseWriter> w) {
      w->respond(Response::json(200, R"({"object":"list","data":[]})"));
    });
    router.post("/echo", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
      w->respond(Response::text(200, std::move(req.body)));
    });
    router.get("/v1/jobs/{id}", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
      std::string out = std::string(req.path_param("id")) + "|" +
                        std::string(req.query_param("x").value_or("-")) + "|" + req.request_id;
      w->respond(Response::text(200, std::move(out)));
    });
    router.get("/park", [this](Request &&, std::shared_ptr<ResponseWriter> w) {
      parked_.arrived.set_value(std::move(w));
    });
    router.get("/sse", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
      int n = std::stoi(std::string(req.query_param("n").value_or("10")));
      w->start_sse();
      // Tokens come from a thread that is not the connection's I/O thread.
      std::thread([w, n] {
        for (int i = 0; i < n; ++i)
          w->send_event("{\"i\":" + std::to_string(i) + "}");
        w->send_event("[DONE]");
        w->end();
      }).detach();
    });
    router.get("/sse-forever", [this](Request &&req, std::shared_ptr<ResponseWriter> w) {
      std::size_t size = std::stoul(std::string(req.query_param("size").value_or("16")));
      w->on_close([this] { closed_.set_value(); });
      w->start_sse();
      producer_ = std::thread([this, w, size] {
        std::string payload(size, 'x');
        if (size >= 1024) {
          // Flood only once the client has the head, so that the test sees the overflow
          // rather than a stream that never opened.
          w->send_event("first");
          flood_.get_future().wait();
        }
        while (w->send_event(payload)) {
          ++events_sent_;
          if (size < 1024)
            std::this_thread::sleep_for(1ms);
        }
        producer_saw_closed_ = true;
      });
    });
    router.get("/abandon", [](Request &&, std::shared_ptr<ResponseWriter>) {});
    router.get("/throw", [](Request &&, std::shared_ptr<ResponseWriter>) -> void {
      throw std::runtime_error("boom");
    });
    router.get("/multiline", [](Request &&, std::shared_ptr<ResponseWriter> w) {
      w->start_sse();
      w->send_event("line1\nline2");
      w->end();
    });
    router.get("/named", [](Request &&, std::shared_ptr<ResponseWriter> w) {
      w->start_sse();
      w->send_named_event("message_start", "{\"type\":\"message_start\"}");
      w->send_named_event("bad\nname", "x"); // a line break would split the event: no name
      w->send_event("plain");
      w->end();
    });
    server_ = std::make_unique<HttpServer>(options, std::move(router).into_handler());
    Status s = server_->start();
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_NE(server_->port(), 0);
  }

  void TearDown() override {
    if (server_)
      server_->shutdown(1000ms);
    if (producer_.joinable())
      producer_.join();
  }

  ClientOptions client_options() const {
    ClientOptions o;
    o.port = server_->port();
    o.timeout = 2000ms;
    return o;
  }

  std::unique_ptr<HttpServer> server_;
  Parked parked_;
  std::promise<void> closed_;
  std::promise<void> flood_;
  std::thread producer_;
  std::atomic<int> events_sent_{0};
  std::atomic<bool> producer_saw_closed_{false};
};

TEST_F(ServerTest, KeepAliveReusesOneConnection) {
  start();
  HttpClient client(client_options());
  for (int i = 0; i < 5; ++i) {
    auto r = client.get("/v1/models");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, R"({"object":"list","data":[]})");
    EXPECT_EQ(r->header("content-type").value_or(""), "application/json");
  }
  EXPECT_EQ(client.connections_opened(), 1);
  EXPECT_TRUE(eventually([&] { return server_->stats().requests_served == 5; }));
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->stats().active_connections, 1u);
}

TEST_F(ServerTest, PostBodyAndPathAndQueryParameters) {
  start();
  HttpClient client(client_options());
  auto echo = client.post("/echo", "hello body");
  ASSERT_TRUE(echo.ok()) << echo.error().message;
  EXPECT_EQ(echo->body, "hello body");
  auto job = client.get("/v1/jobs/a%20b?x=1%2F2", {{"x-request-id", "rid-1"}});
  ASSERT_TRUE(job.ok()) << job.error().message;
  EXPECT_EQ(job->body, "a b|1/2|rid-1");
}

TEST_F(ServerTest, UnknownRouteIs404AndWrongMethodIs405) {
  start();
  HttpClient client(client_options());
  auto nf = client.get("/v1/unknown");
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->status, 404);
  EXPECT_NE(nf->body.find("\"type\":\"invalid_request_error\""), std::string::npos) << nf->body;
  auto na = client.post("/v1/models", "{}");
  ASSERT_TRUE(na.ok());
  EXPECT_EQ(na->status, 405);
  EXPECT_EQ(na->header("allow").value_or(""), "GET");
  // Errors do not cost the keep-alive connection.
  EXPECT_EQ(client.connections_opened(), 1);
}

TEST_F(ServerTest, OversizedBodyIs413) {
  ServerOptions o;
  o.max_body_bytes = 1024;
  start(o);
  HttpClient client(client_options());
  auto r = client.post("/echo", std::string(200 * 1024, 'a'));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("\"code\":\"payload_too_large\""), std::string::npos) << r->body;
  EXPECT_EQ(r->header("connection").value_or(""), "close");
  EXPECT_EQ(server_->stats().payload_too_large, 1u);
  // A body within the limit still works on a new connection.
  auto ok = client.post("/echo", std::string(1000, 'b'));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 200);
}

TEST_F(ServerTest, ExpectContinueGetsInterimResponse) {
  start();
  HttpClient client(client_options());
  auto r = client.post("/echo", "payload", {{"Expect", "100-continue"}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "payload");
}

TEST_F(ServerTest, OversizedHeaderIs431) {
  ServerOptions o;
  o.max_header_bytes = 1024;
  start(o);
  HttpClient client(client_options());
  auto r = client.get("/v1/models", {{"x-big", std::string(4096, 'h')}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 431);
  EXPECT_EQ(server_->stats().headers_too_large, 1u);
}

TEST_F(ServerTest, SlowlorisIsCutOffAfterHeaderTimeout) {
  start(); // header_timeout 300 ms
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket sock(ioc);
  sock.connect({boost::asio::ip::make_address("127.0.0.1"), server_->port()});
  auto begin = Clock::now();
  boost::asio::write(sock, boost::asio::buffer(std::string("GET /v1/models HTTP/1.1\r\n")));
  bool cut_off = false;
  for (int i = 0; i < 100 && !cut_off; ++i) {
    boost::system::error_code ec;
    boost::asio::write(sock, boost::asio::buffer(std::string("X-Slow: 1\r\n")), ec);
    if (ec) {
      cut_off = true;
      break;
    }
    pollfd p{sock.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      char c;
      cut_off = sock.read_some(boost::asio::buffer(&c, 1), ec) == 0 && ec;
    }
  }
  auto elapsed = Clock::now() - begin;
  EXPECT_TRUE(cut_off) << "server kept a dribbling header open for 2 s";
  EXPECT_LT(elapsed, 1500ms);
  EXPECT_GE(elapsed, 250ms) << "cut off before the header timeout";
  EXPECT_TRUE(eventually([&] { return server_->stats().header_timeouts == 1; }));
}

TEST_F(ServerTest, IdleKeepAliveConnectionIsClosed) {
  ServerOptions o;
  o.idle_timeout = 100ms;
  start(o);
  HttpClient client(client_options());
  ASSERT_TRUE(client.get("/v1/models").ok());
  EXPECT_TRUE(eventually([&] { return server_->stats().idle_timeouts == 1; }));
  // The timeout is counted before the socket is closed and the connection released: under load
  // the release can trail the count.
  EXPECT_TRUE(eventually([&] { return server_->stats().active_connections == 0u; }));
  // The client notices the closed connection and reconnects.
  auto r = client.get("/v1/models");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(client.connections_opened(), 2);
}

TEST_F(ServerTest, SseEventsFromAnotherThreadArriveInOrder) {
  start();
  HttpClient client(client_options());
  auto stream = client.open_sse(Method::kGet, "/sse?n=200");
  ASSERT_TRUE(stream.ok()) << stream.error().message;
  EXPECT_EQ(stream->status(), 200);
  EXPECT_EQ(find_header(stream->headers(), "content-type").value_or(""), "text/event-stream");
  for (int i = 0; i < 200; ++i) {
    auto ev = stream->next_event();
    ASSERT_TRUE(ev.ok()) << ev.error().message;
    ASSERT_TRUE(ev->has_value()) << "stream ended after " << i << " events";
    EXPECT_EQ(**ev, "{\"i\":" + std::to_string(i) + "}");
  }
  auto done = stream->next_event();
  ASSERT_TRUE(done.ok() && done->has_value());
  EXPECT_EQ(**done, "[DONE]");
  auto end = stream->next_event();
  ASSERT_TRUE(end.ok()) << end.error().message;
  EXPECT_FALSE(end->has_value());
  EXPECT_TRUE(eventually([&] { return server_->stats().requests_served == 1; }));
}

TEST_F(ServerTest, MultiLineEventDataIsSplitIntoDataLines) {
  start();
  HttpClient client(client_options());
  auto stream = client.open_sse(Method::kGet, "/multiline");
  ASSERT_TRUE(stream.ok());
  auto ev = stream->next_event();
  ASSERT_TRUE(ev.ok() && ev->has_value());
  EXPECT_EQ(**ev, "line1\nline2");
}

TEST_F(ServerTest, NamedEventsCarryAnEventLineBeforeTheirData) {
  start();
  HttpClient client(client_options());
  auto r = client.get("/named");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
                     "data: x\n\n"
                     "data: plain\n\n");
}

TEST_F(ServerTest, ClientDisconnectMidStreamRunsCloseCallback) {
  start();
  HttpClient client(client_options());
  auto stream = client.open_sse(Method::kGet, "/sse-forever");
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(stream->next_event().ok());
  stream->close();
  auto closed = closed_.get_future();
  ASSERT_EQ(closed.wait_for(2s), std::future_status::ready) << "on_close never ran";
  EXPECT_TRUE(eventually([&] { return producer_saw_closed_.load(); }));
  EXPECT_EQ(server_->stats().client_disconnects, 1u);
  EXPECT_EQ(server_->stats().requests_in_flight, 0u);
}

TEST_F(ServerTest, SlowReaderIsDroppedAtTheBufferCap) {
  ServerOptions o;
  o.max_pending_write_bytes = 256 * 1024;
  start(o);
  HttpClient client(client_options());
  auto stream = client.open_sse(Method::kGet, "/sse-forever?size=65536");
  ASSERT_TRUE(stream.ok()) << stream.error().message;
  auto first = stream->next_event();
  ASSERT_TRUE(first.ok() && first->has_value());
  flood_.set_value();
  // Never read: the kernel buffers fill, then the server's queue, then it gives up.
  auto closed = closed_.get_future();
  ASSERT_EQ(closed.wait_for(5s), std::future_status::ready) << "slow reader never dropped";
  EXPECT_TRUE(eventually([&] { return producer_saw_closed_.load(); }));
  EXPECT_EQ(server_->stats().slow_client_overflows, 1u);
}

TEST_F(ServerTest, AbandonedWriterAndThrowingHandlerGive500) {
  start();
  HttpClient client(client_options());
  auto a = client.get("/abandon");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 500);
  EXPECT_NE(a->body.find("server_error"), std::string::npos) << a->body;
  auto t = client.get("/throw");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->status, 500);
  // Unwinding out of the throwing handler drops its writer, so both count as abandoned.
  EXPECT_EQ(server_->stats().abandoned_responses, 2u);
}

TEST_F(ServerTest, RequestIdIsEchoedSanitizedOrGenerated) {
  start();
  HttpClient client(client_options());
  auto given = client.get("/v1/models", {{"X-Request-Id", "abc-123_x.y"}});
  ASSERT_TRUE(given.ok());
  EXPECT_EQ(given->header("x-request-id").value_or(""), "abc-123_x.y");
  auto dirty = client.get("/v1/models", {{"x-request-id", "a<b>c;d"}});
  ASSERT_TRUE(dirty.ok());
  EXPECT_EQ(dirty->header("x-request-id").value_or(""), "abcd");
  auto gen1 = client.get("/v1/models");
  auto gen2 = client.get("/v1/unknown"); // router-made errors carry one too
  ASSERT_TRUE(gen1.ok() && gen2.ok());
  std::string id1(gen1->header("x-request-id").value_or(""));
  std::string id2(gen2->header("x-request-id").value_or(""));
  EXPECT_EQ(id1.size(), 32u) << id1;
  EXPECT_EQ(id2.size(), 32u) << id2;
  EXPECT_NE(id1, id2);
}

TEST_F(ServerTest, GracefulShutdownWaitsForInFlightRequest) {
  start();
  auto writer_future = parked_.arrived.get_future();
  std::promise<Result<ClientResponse>> response;
  std::thread requester([&] {
    HttpClient client(client_options());
    response.set_value(client.get("/park"));
  });
  ASSERT_EQ(writer_future.wait_for(2s), std::future_status::ready);
  std::shared_ptr<ResponseWriter> writer = writer_future.get();

  auto shutdown = std::async(std::launch::async, [&] { return server_->shutdown(5000ms); });
  // New connections are refused once accepting stopped.
  EXPECT_TRUE(eventually([&] {
    HttpClient probe(client_options());
    return !probe.get("/v1/models").ok();
  }));
  EXPECT_EQ(shutdown.wait_for(0ms), std::future_status::timeout)
      << "shutdown returned while a request was in flight";
  writer->respond(Response::text(200, "late"));
  writer.reset();
  ASSERT_EQ(shutdown.wait_for(3s), std::future_status::ready);
  EXPECT_TRUE(shutdown.get()) << "shutdown reported requests cut off";
  requester.join();
  auto r = response.get_future().get();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "late");
  EXPECT_EQ(r->header("connection").value_or(""), "close");
  server_.reset();
}

TEST_F(ServerTest, ShutdownDeadlineClosesStuckStreams) {
  start();
  HttpClient client(client_options());
  auto stream = client.open_sse(Method::kGet, "/sse-forever");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE(stream->next_event().ok());
  auto begin = Clock::now();
  EXPECT_FALSE(server_->shutdown(100ms));
  EXPECT_LT(Clock::now() - begin, 1000ms);
  EXPECT_TRUE(eventually([&] { return producer_saw_closed_.load(); }));
  auto closed = closed_.get_future();
  EXPECT_EQ(closed.wait_for(0ms), std::future_status::ready);
}

TEST_F(ServerTest, BindFailureIsAnError) {
  start();
  ServerOptions o;
  o.port = server_->port();
  HttpServer second(o, [](Request &&, std::shared_ptr<ResponseWriter>) {});
  Status s = second.start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kIo);
}

} // namespace
} // namespace gantry::http
