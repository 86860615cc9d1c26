#include "integration/api_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include <gtest/gtest.h>

#include "integration/server_process.h"

namespace gantry::testing {

std::string completion_body(const std::string &prompt, json::object extra) {
  json::object o{{"model", kModel}, {"prompt", prompt}};
  for (auto &[k, v] : extra)
    o[k] = v;
  return json::serialize(o);
}

std::string chat_body(const std::string &content, json::object extra) {
  json::object o{{"model", kModel},
                 {"messages", json::array{json::object{{"role", "user"}, {"content", content}}}}};
  for (auto &[k, v] : extra)
    o[k] = v;
  return json::serialize(o);
}

json::object parse_object(const std::string &body) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "expected a JSON object, got: " << body.substr(0, 500);
    return {};
  }
  return std::move(v.as_object());
}

std::string choice_text(const json::object &response, size_t index) {
  const auto *choices = response.if_contains("choices");
  if (!choices || !choices->is_array() || choices->as_array().size() <= index) {
    ADD_FAILURE() << "no choice " << index << " in " << json::serialize(response);
    return {};
  }
  const auto &c = choices->as_array()[index].as_object();
  if (const auto *m = c.if_contains("message"))
    return std::string(m->at("content").as_string());
  return std::string(c.at("text").as_string());
}

StreamResult read_stream(http::SseStream &stream, size_t max_events) {
  StreamResult r;
  r.status = stream.status();
  while (r.events.size() < max_events) {
    auto ev = stream.next_event();
    if (!ev) {
      r.transport_error = ev.error().message;
      return r;
    }
    if (!*ev)
      return r; // end of the body
    std::string data = std::move(**ev);
    r.events.push_back(data);
    if (data == "[DONE]") {
      r.done = true;
      continue;
    }
    if (r.done)
      ADD_FAILURE() << "event after [DONE]: " << data;
    json::error_code ec;
    json::value v = json::parse(data, ec);
    if (ec || !v.is_object()) {
      ADD_FAILURE() << "event is not a JSON object: " << data;
      continue;
    }
    auto &o = v.as_object();
    if (const auto *e = o.if_contains("error")) {
      r.error = e->as_object();
      continue;
    }
    const std::string id(o.at("id").as_string());
    if (r.id.empty())
      r.id = id;
    r.consistent_ids = r.consistent_ids && id == r.id;
    if (const auto *u = o.if_contains("usage"); u && u->is_object())
      r.usage = u->as_object();
    for (const auto &cv : o.at("choices").as_array()) {
      const auto &c = cv.as_object();
      const int index = static_cast<int>(c.at("index").to_number<int64_t>());
      if (const auto *d = c.if_contains("delta")) {
        if (const auto *t = d->as_object().if_contains("content"); t && t->is_string()) {
          r.text[index] += t->as_string();
        }
      } else if (const auto *t = c.if_contains("text")) {
        r.text[index] += t->as_string();
      }
      if (const auto *f = c.if_contains("finish_reason"); f && f->is_string()) {
        r.finish_reason[index] = std::string(f->as_string());
      }
    }
  }
  return r;
}

StreamResult stream_request(const http::ClientOptions &options, const std::string &path,
                            const std::string &body, http::Headers headers) {
  http::HttpClient client(options);
  auto s = client.open_sse(http::Method::kPost, path, body, std::move(headers));
  if (!s) {
    StreamResult r;
    r.transport_error = s.error().message;
    return r;
  }
  return read_stream(*s);
}

json::object expect_error(const http::ClientResponse &response, int status, const std::string &type,
                          const std::string &param) {
  EXPECT_EQ(response.status, status) << response.body;
  json::object o = parse_object(response.body);
  const auto *e = o.if_contains("error");
  if (!e || !e->is_object()) {
    ADD_FAILURE() << "expected an OpenAI error body, got: " << response.body;
    return {};
  }
  const auto &err = e->as_object();
  EXPECT_TRUE(err.contains("message") && err.at("message").is_string()) << response.body;
  EXPECT_TRUE(err.contains("code")) << response.body;
  EXPECT_EQ(err.contains("type") ? json::serialize(err.at("type")) : "",
            json::serialize(json::value(type)))
      << response.body;
  const json::value want_param = param.empty() ? json::value(nullptr) : json::value(param);
  EXPECT_EQ(err.contains("param") ? json::serialize(err.at("param")) : "<missing>",
            json::serialize(want_param))
      << response.body;
  return err;
}

std::pair<bool, std::string>
wait_for_metrics(const http::ClientOptions &options,
                 const std::function<bool(const std::string &)> &predicate,
                 std::chrono::milliseconds timeout) {
  http::HttpClient client(options);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  while (true) {
    auto r = client.get("/metrics");
    if (!r)
      last = "GET /metrics failed: " + r.error().message;
    if (r && r->status != 200)
      last = "GET /metrics: " + std::to_string(r->status) + " " + r->body;
    if (r && r->status == 200) {
      last = r->body;
      if (predicate(last))
        return {true, last};
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return {false, last};
    // /metrics is a pull interface; polling it every 20 ms is what a scraper does, bounded by
    // the deadline.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

double metric_or_zero(const std::string &text, const std::string &series) {
  return metric_value(text, series).value_or(0);
}

std::string model_series(const std::string &name) {
  return name + "{model_name=\"" + kModel + "\"}";
}

RawConnection::RawConnection(std::uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawConnection::~RawConnection() { close(); }

bool RawConnection::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::pair<std::string, bool> RawConnection::read_until_closed(std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0)
      return {out, false};
    pollfd pfd{fd_, POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      continue;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return {out, true};
    out.append(buf, static_cast<size_t>(n));
  }
}

void RawConnection::reset() {
  if (fd_ < 0)
    return;
  linger l{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close();
}

void RawConnection::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

} // namespace gantry::testing
