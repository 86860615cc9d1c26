// The Responses API (/v1/responses) and Anthropic's Messages API (/v1/messages, count_tokens)
// against the real server on the bundled model: the same generation as chat completions (greedy),
// the typed event streams in order with their `event:` names, usage, keys from x-api-key, limits
// answered in Anthropic's shape, and a 400 naming the bad field in each API's own error shape.
#include <gtest/gtest.h>

#include <sstream>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

constexpr const char *kAdminToken = "test-admin-token-0123456789abcdef01234";
constexpr const char *kPrompt = "Once upon a time";

// Greedy and uncached, so every API's answer to the same prompt is the same live generation.
http::Headers no_store(http::Headers h = {}) {
  h.push_back({"Cache-Control", "no-store"});
  return h;
}

struct NamedEvent {
  std::string name;
  json::object data;
};

// An SSE body read whole: each event's `event:` name and its JSON data.
std::vector<NamedEvent> parse_sse(const std::string &body) {
  std::vector<NamedEvent> out;
  std::istringstream in(body);
  std::string line, name, data;
  while (std::getline(in, line)) {
    if (line.starts_with("event: ")) {
      name = line.substr(7);
    } else if (line.starts_with("data: ")) {
      data += line.substr(6);
    } else if (line.empty() && !data.empty()) {
      out.push_back({name, parse_object(data)});
      name.clear();
      data.clear();
    }
  }
  return out;
}

std::vector<std::string> names(const std::vector<NamedEvent> &events) {
  std::vector<std::string> n;
  for (const auto &e : events)
    n.push_back(e.name);
  return n;
}

std::unique_ptr<ServerProcess> start_server() {
  ServerProcessOptions o;
  o.env.push_back(std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken);
  auto s = ServerProcess::start(std::move(o));
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? std::move(s).value() : nullptr;
}

std::string create_key(http::HttpClient &c, json::object body) {
  auto r = c.post("/admin/v1/keys", json::serialize(body),
                  {{"Authorization", std::string("Bearer ") + kAdminToken}});
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : r.error().message);
  return r ? std::string(parse_object(r->body)["key"].as_string()) : "";
}

std::string chat_text(http::HttpClient &c, int max_tokens) {
  auto r = c.post("/v1/chat/completions",
                  chat_body(kPrompt, {{"max_tokens", max_tokens}, {"temperature", 0}}), no_store());
  EXPECT_TRUE(r && r->status == 200);
  return r ? choice_text(parse_object(r->body)) : "";
}

std::string responses_body(json::object extra = {}) {
  json::object o{{"model", kModel}, {"input", kPrompt}, {"temperature", 0}};
  for (auto &kv : extra)
    o[kv.key()] = kv.value();
  return json::serialize(o);
}

std::string messages_body(json::object extra = {}) {
  json::object o{{"model", kModel},
                 {"max_tokens", 12},
                 {"temperature", 0},
                 {"messages", json::array{json::object{{"role", "user"}, {"content", kPrompt}}}}};
  for (auto &kv : extra)
    o[kv.key()] = kv.value();
  return json::serialize(o);
}

// {"type":"error","error":{"type":type,"message":...}}; returns the message.
std::string expect_anthropic_error(const http::ClientResponse &r, int status,
                                   const std::string &type) {
  EXPECT_EQ(r.status, status) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o["type"], "error") << r.body;
  if (!o.contains("error") || !o["error"].is_object())
    return "";
  EXPECT_EQ(o["error"].as_object()["type"], json::value(type)) << r.body;
  EXPECT_FALSE(o["error"].as_object().contains("param")) << r.body;
  return std::string(o["error"].as_object()["message"].as_string());
}

TEST(ResponsesApi, NonStreamedMatchesChatWithUsage) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string expected = chat_text(c, 12);
  auto r =
      c.post("/v1/responses",
             responses_body({{"max_output_tokens", 12}, {"instructions", nullptr}}), no_store());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto o = parse_object(r->body);
  EXPECT_EQ(o["object"], "response");
  EXPECT_TRUE(std::string(o["id"].as_string()).starts_with("resp_"));
  EXPECT_EQ(o["model"], kModel);
  EXPECT_EQ(o["store"], false);
  // The story model does not stop within 12 tokens: cut at the limit.
  EXPECT_EQ(o["status"], "incomplete");
  EXPECT_EQ(o["incomplete_details"].at("reason"), "max_output_tokens");
  auto &out = o["output"].as_array();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].at("type"), "message");
  EXPECT_EQ(out[0].at("content").at(0).at("type"), "output_text");
  EXPECT_EQ(out[0].at("content").at(0).at("text"), json::value(expected));
  auto &u = o["usage"].as_object();
  EXPECT_GT(u["input_tokens"].as_int64(), 0);
  EXPECT_EQ(u["output_tokens"], 12);
  EXPECT_EQ(u["total_tokens"].as_int64(), u["input_tokens"].as_int64() + 12);
  EXPECT_TRUE(r->header("x-gantry-cost-usd"));
}

TEST(ResponsesApi, StreamedEventsInOrderWithNamesAndSequenceNumbers) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string expected = chat_text(c, 8);
  auto r = c.post("/v1/responses", responses_body({{"max_output_tokens", 8}, {"stream", true}}),
                  no_store());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type").value_or(""), "text/event-stream");
  auto ev = parse_sse(r->body);
  ASSERT_GE(ev.size(), 8u) << r->body;
  std::string text;
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].data["type"], json::value(ev[i].name)) << "the event: name is the type";
    EXPECT_EQ(ev[i].data["sequence_number"], static_cast<int64_t>(i));
    if (ev[i].name == "response.output_text.delta")
      text += ev[i].data["delta"].as_string();
  }
  std::vector<std::string> n = names(ev);
  const std::vector<std::string> head{"response.created", "response.in_progress",
                                      "response.output_item.added", "response.content_part.added"};
  const std::vector<std::string> tail{"response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.incomplete"};
  EXPECT_EQ(std::vector<std::string>(n.begin(), n.begin() + 4), head);
  EXPECT_EQ(std::vector<std::string>(n.end() - 4, n.end()), tail);
  for (size_t i = 4; i + 4 < n.size(); ++i)
    EXPECT_EQ(n[i], "response.output_text.delta");
  EXPECT_EQ(text, expected);
  auto final_response = ev.back().data["response"].as_object();
  EXPECT_EQ(final_response["output"].at(0).at("content").at(0).at("text"), json::value(expected));
  EXPECT_EQ(final_response["usage"].at("output_tokens"), 8);
}

TEST(ResponsesApi, BadFieldIsAnOpenAiShaped400NamingIt) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto r = c.post("/v1/responses",
                  json::serialize(json::object{
                      {"model", kModel},
                      {"input", json::array{json::object{{"role", "wizard"}, {"content", "x"}}}}}));
  ASSERT_TRUE(r);
  expect_error(*r, 400, "invalid_request_error", "input[0].role");
  auto prev = c.post("/v1/responses", responses_body({{"previous_response_id", "resp_x"}}));
  ASSERT_TRUE(prev);
  expect_error(*prev, 400, "invalid_request_error", "previous_response_id");
}

TEST(MessagesApi, NonStreamedMatchesChatWithUsage) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string expected = chat_text(c, 12);
  auto r = c.post("/v1/messages", messages_body(), no_store({{"anthropic-version", "2023-06-01"}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto o = parse_object(r->body);
  EXPECT_TRUE(std::string(o["id"].as_string()).starts_with("msg_"));
  EXPECT_EQ(o["type"], "message");
  EXPECT_EQ(o["role"], "assistant");
  EXPECT_EQ(o["stop_reason"], "max_tokens");
  EXPECT_TRUE(o["stop_sequence"].is_null());
  EXPECT_EQ(o["content"].at(0).at("type"), "text");
  EXPECT_EQ(o["content"].at(0).at("text"), json::value(expected));
  auto &u = o["usage"].as_object();
  EXPECT_EQ(u["output_tokens"], 12);
  EXPECT_GT(u["input_tokens"].as_int64() + u["cache_read_input_tokens"].as_int64(), 0);
}

TEST(MessagesApi, StreamedEventsInAnthropicsOrder) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string expected = chat_text(c, 6);
  auto r = c.post("/v1/messages", messages_body({{"max_tokens", 6}, {"stream", true}}), no_store());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto ev = parse_sse(r->body);
  std::vector<std::string> n = names(ev);
  ASSERT_GE(n.size(), 7u) << r->body;
  EXPECT_EQ(std::vector<std::string>(n.begin(), n.begin() + 3),
            (std::vector<std::string>{"message_start", "ping", "content_block_start"}));
  EXPECT_EQ(std::vector<std::string>(n.end() - 3, n.end()),
            (std::vector<std::string>{"content_block_stop", "message_delta", "message_stop"}));
  std::string text;
  for (size_t i = 3; i + 3 < n.size(); ++i) {
    EXPECT_EQ(n[i], "content_block_delta");
    EXPECT_EQ(ev[i].data["delta"].at("type"), "text_delta");
    text += ev[i].data["delta"].at("text").as_string();
  }
  for (const auto &e : ev)
    EXPECT_EQ(e.data.at("type"), json::value(e.name));
  EXPECT_EQ(text, expected);
  EXPECT_GT(ev[0].data["message"].at("usage").at("input_tokens").as_int64(), 0);
  auto delta = ev[n.size() - 2].data;
  EXPECT_EQ(delta["delta"].at("stop_reason"), "max_tokens");
  EXPECT_EQ(delta["usage"].at("output_tokens"), 6);
}

TEST(MessagesApi, CountTokensIsThePreparedPromptAndChargesNothing) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  // One request a minute: count_tokens must not spend it.
  const std::string key = create_key(c, {{"project", "p"}, {"rpm", 1}});
  const http::Headers auth{{"x-api-key", key}, {"anthropic-version", "2023-06-01"}};
  const std::string count_body = json::serialize(json::object{
      {"model", kModel},
      {"system", "Tell a story."},
      {"messages", json::array{json::object{{"role", "user"}, {"content", kPrompt}}}}});
  int64_t counted = -1;
  for (int i = 0; i < 3; ++i) {
    auto r = c.post("/v1/messages/count_tokens", count_body, auth);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    auto o = parse_object(r->body);
    ASSERT_EQ(o.size(), 1u) << r->body;
    counted = o["input_tokens"].as_int64();
  }
  auto m = c.post("/v1/messages", messages_body({{"system", "Tell a story."}}), no_store(auth));
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200) << m->body;
  auto u = parse_object(m->body)["usage"].as_object();
  EXPECT_EQ(u["input_tokens"].as_int64() + u["cache_read_input_tokens"].as_int64(), counted);
  // Authentication still applies to count_tokens.
  auto anon = c.post("/v1/messages/count_tokens", count_body);
  ASSERT_TRUE(anon);
  expect_anthropic_error(*anon, 401, "authentication_error");
}

TEST(MessagesApi, XApiKeyAuthAndRefusalsInAnthropicsShape) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string key = create_key(c, {{"project", "p"}, {"rpm", 1}});
  auto ok = c.post("/v1/messages", messages_body({{"max_tokens", 2}}), {{"x-api-key", key}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  // Over the key's RPM: a 429 rate_limit_error with Retry-After.
  auto over = c.post("/v1/messages", messages_body({{"max_tokens", 2}}), {{"x-api-key", key}});
  ASSERT_TRUE(over);
  expect_anthropic_error(*over, 429, "rate_limit_error");
  EXPECT_TRUE(over->header("retry-after"));
  // A wrong key, and no key at all.
  auto wrong = c.post("/v1/messages", messages_body(), {{"x-api-key", "gsk_abc_def"}});
  ASSERT_TRUE(wrong);
  expect_anthropic_error(*wrong, 401, "authentication_error");
  auto none = c.post("/v1/messages", messages_body());
  ASSERT_TRUE(none);
  expect_anthropic_error(*none, 401, "authentication_error");
  // x-api-key is the Messages routes' alone: the OpenAI routes still want a bearer token.
  auto chat =
      c.post("/v1/chat/completions", chat_body(kPrompt, {{"max_tokens", 2}}), {{"x-api-key", key}});
  ASSERT_TRUE(chat);
  expect_error(*chat, 401, "authentication_error", "");
  auto responses =
      c.post("/v1/responses", responses_body({{"max_output_tokens", 2}}), {{"x-api-key", key}});
  ASSERT_TRUE(responses);
  EXPECT_EQ(responses->status, 401);
}

TEST(MessagesApi, BadFieldIsAnAnthropicShaped400NamingIt) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  json::object body = parse_object(messages_body());
  body.erase("max_tokens");
  auto r = c.post("/v1/messages", json::serialize(body));
  ASSERT_TRUE(r);
  EXPECT_TRUE(expect_anthropic_error(*r, 400, "invalid_request_error").starts_with("max_tokens"));
  auto img = c.post(
      "/v1/messages",
      messages_body(
          {{"messages", json::array{json::object{
                            {"role", "user"},
                            {"content", json::array{json::object{
                                            {"type", "image"}, {"source", json::object{}}}}}}}}}));
  ASSERT_TRUE(img);
  EXPECT_TRUE(expect_anthropic_error(*img, 400, "invalid_request_error")
                  .starts_with("messages.0.content.0.type"));
  auto unknown = c.post("/v1/messages", messages_body({{"model", "no-such-model"}}));
  ASSERT_TRUE(unknown);
  expect_anthropic_error(*unknown, 404, "not_found_error");
}

TEST(TypedApis, MetricsCountEachRoute) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  ASSERT_EQ(c.post("/v1/responses", responses_body({{"max_output_tokens", 2}}))->status, 200);
  ASSERT_EQ(c.post("/v1/messages", messages_body({{"max_tokens", 2}}))->status, 200);
  auto [seen, text] = wait_for_metrics(
      s->client_options(),
      [](const std::string &t) {
        return metric_or_zero(t, "gantry:requests_total{model_name=\"stories260K\",endpoint=\"/"
                                 "v1/messages\",status=\"200\",project=\"\"}") == 1;
      },
      std::chrono::seconds(5));
  EXPECT_TRUE(seen) << text;
  EXPECT_EQ(metric_or_zero(text, "gantry:requests_total{model_name=\"stories260K\",endpoint=\"/v1/"
                                 "responses\",status=\"200\",project=\"\"}"),
            1);
}

} // namespace
} // namespace gantry::testing
