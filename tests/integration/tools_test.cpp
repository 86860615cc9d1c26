// Tool calling end to end on the bundled model (stories260K: no chat template, so the generic
// JSON fallback renders the tools): the request works, the tools reach the prompt, the answer
// has OpenAI's shapes streamed and not, tool history is accepted, bad tools are 400s naming the
// field. A story model answers in text; forced calls are tested with the grammar engine.
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

json::array weather_tools() {
  return json::array{json::object{
      {"type", "function"},
      {"function", json::object{{"name", "get_weather"},
                                {"description", "The weather in a city"},
                                {"parameters", json::parse(R"({"type":"object","properties":{"city":
                       {"type":"string"}},"required":["city"]})")}}}}};
}

class ToolsTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = ServerProcess::start({"--threads", "1", "--no-cache"});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
    client_ = std::make_unique<http::HttpClient>(server_->client_options());
  }

  http::ClientResponse post(const std::string &body) {
    auto r = client_->post("/v1/chat/completions", body);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : http::ClientResponse{};
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

// The finish_reason is "tool_calls" exactly when the message carries calls, each in OpenAI's
// shape.
void expect_message_shape(const json::object &choice) {
  const auto &msg = choice.at("message").as_object();
  EXPECT_EQ(msg.at("role").as_string(), "assistant");
  const std::string finish(choice.at("finish_reason").as_string());
  if (const auto *calls = msg.if_contains("tool_calls")) {
    EXPECT_EQ(finish, "tool_calls");
    ASSERT_TRUE(calls->is_array());
    for (const auto &c : calls->as_array()) {
      EXPECT_TRUE(c.at("id").as_string().starts_with("call_"));
      EXPECT_EQ(c.at("type").as_string(), "function");
      EXPECT_TRUE(c.at("function").at("name").is_string());
      EXPECT_TRUE(json::parse(c.at("function").at("arguments").as_string()).is_object());
    }
  } else {
    EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
    EXPECT_FALSE(msg.at("content").as_string().empty());
  }
}

TEST_F(ToolsTest, AutoToolChoiceAnswersStreamedAndNot) {
  json::object extra{{"max_tokens", 24},
                     {"temperature", 0},
                     {"tools", weather_tools()},
                     {"tool_choice", "auto"},
                     {"parallel_tool_calls", true}};
  auto r = post(chat_body("Once upon a time", extra));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  const auto &choice = o.at("choices").at(0).as_object();
  expect_message_shape(choice);
  const json::value &content = choice.at("message").at("content");

  extra["stream"] = true;
  auto s = stream_request(server_->client_options(), "/v1/chat/completions",
                          chat_body("Once upon a time", extra));
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_FALSE(s.error);
  EXPECT_EQ(s.finish_reason[0], std::string(choice.at("finish_reason").as_string()));
  EXPECT_EQ(s.text[0], content.is_string() ? std::string(content.as_string()) : "");
  // Every chunk is a chat.completion.chunk whose delta has only OpenAI's keys.
  for (const auto &e : s.events) {
    if (e == "[DONE]")
      continue;
    auto chunk = parse_object(e);
    EXPECT_EQ(chunk.at("object").as_string(), "chat.completion.chunk");
    for (const auto &[k, v] : chunk.at("choices").at(0).at("delta").as_object())
      EXPECT_TRUE(k == "role" || k == "content" || k == "tool_calls") << k;
  }
}

TEST_F(ToolsTest, ToolsAreRenderedIntoThePromptUnlessToolChoiceIsNone) {
  auto prompt_tokens = [&](json::object extra) {
    extra["max_tokens"] = 1;
    auto r = post(chat_body("Once upon a time", extra));
    EXPECT_EQ(r.status, 200) << r.body;
    return parse_object(r.body).at("usage").at("prompt_tokens").as_int64();
  };
  const int64_t bare = prompt_tokens({});
  const int64_t with_tools = prompt_tokens({{"tools", weather_tools()}});
  const int64_t none = prompt_tokens({{"tools", weather_tools()}, {"tool_choice", "none"}});
  EXPECT_GT(with_tools, bare + 50) << "the tool definitions are not in the prompt";
  EXPECT_EQ(none, bare);
}

TEST_F(ToolsTest, ToolHistoryIsAccepted) {
  json::object body{{"model", kModel},
                    {"max_tokens", 8},
                    {"tools", weather_tools()},
                    {"messages", json::parse(R"([
        {"role":"user","content":"What is the weather in Paris?"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
          "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}])")}};
  auto r = post(json::serialize(body));
  ASSERT_EQ(r.status, 200) << r.body;
  expect_message_shape(parse_object(r.body).at("choices").at(0).as_object());
}

TEST_F(ToolsTest, BadToolsAreRefusedNamingTheField) {
  json::array bad_params = weather_tools();
  bad_params[0].at("function").as_object()["parameters"] = "not a schema";
  expect_error(post(chat_body("x", {{"tools", bad_params}})), 400, "invalid_request_error",
               "tools[0].function.parameters");
  json::array bad_name = weather_tools();
  bad_name[0].at("function").as_object()["name"] = "get weather";
  expect_error(post(chat_body("x", {{"tools", bad_name}})), 400, "invalid_request_error",
               "tools[0].function.name");
  expect_error(post(chat_body("x", {{"tools", weather_tools()},
                                    {"tool_choice", json::parse(R"({"type":"function",
                                      "function":{"name":"nope"}})")}})),
               400, "invalid_request_error", "tool_choice.function.name");
  expect_error(
      post(json::serialize(json::object{
          {"model", kModel}, {"messages", json::parse(R"([{"role":"tool","content":"18C"}])")}})),
      400, "invalid_request_error", "messages[0].tool_call_id");
}

} // namespace
} // namespace gantry::testing
