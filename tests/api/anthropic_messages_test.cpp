#include "api/anthropic_messages.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace gantry::api {
namespace {

namespace json = boost::json;

json::object obj(const std::string &s) { return json::parse(s).as_object(); }

std::vector<std::string> names(const TypedEvents &events) {
  std::vector<std::string> out;
  for (const auto &e : events)
    out.push_back(e.name);
  return out;
}

TEST(AnthropicParseTest, SystemBlocksSamplingAndMetadata) {
  auto r = parse_messages_request(R"({"model":"m","max_tokens":64,
    "system":[{"type":"text","text":"be "},{"type":"text","text":"brief","cache_control":{"type":"ephemeral"}}],
    "messages":[{"role":"user","content":"hi"}],"stop_sequences":["END",""],"temperature":0.2,
    "top_p":0.8,"top_k":5,"stream":true,"metadata":{"user_id":"u7"}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[0].role, "system");
  EXPECT_EQ(r->messages[0].content, "be brief");
  EXPECT_EQ(r->messages[1].content, "hi");
  EXPECT_EQ(r->max_tokens, 64);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"END"}));
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.2f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.8f);
  EXPECT_EQ(r->sampling.top_k, 5);
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->user, "u7");
}

TEST(AnthropicParseTest, ToolUseAndToolResultBlocks) {
  auto r = parse_messages_request(R"({"model":"m","max_tokens":8,
    "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object"}}],
    "tool_choice":{"type":"any","disable_parallel_tool_use":true},
    "messages":[
      {"role":"user","content":[{"type":"text","text":"Paris?"}]},
      {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},
        {"type":"text","text":"Checking."},
        {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
      {"role":"user","content":[
        {"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"sunny"}]},
        {"type":"text","text":"thanks"}]}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto &m = r->messages;
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[1].role, "assistant");
  EXPECT_EQ(m[1].content, "Checking.");
  ASSERT_EQ(m[1].tool_calls.size(), 1u);
  EXPECT_EQ(m[1].tool_calls[0].id, "toolu_1");
  EXPECT_EQ(m[1].tool_calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(m[1].tool_calls[0].arguments), json::parse(R"({"city":"Paris"})"));
  EXPECT_EQ(m[2].role, "tool");
  EXPECT_EQ(m[2].tool_call_id, "toolu_1");
  EXPECT_EQ(m[2].name, "get_weather");
  EXPECT_EQ(m[2].content, "sunny");
  EXPECT_EQ(m[3].role, "user");
  EXPECT_EQ(m[3].content, "thanks");
  ASSERT_EQ(r->tools.size(), 1u);
  EXPECT_EQ(r->tools[0].parameters, R"({"type":"object"})");
  EXPECT_EQ(r->tool_choice.mode, ToolChoice::Mode::kRequired);
  EXPECT_FALSE(r->parallel_tool_calls);

  auto named = parse_messages_request(
      R"({"model":"m","max_tokens":8,"messages":[{"role":"user","content":"x"}],
    "tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}})");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->tool_choice.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(named->tool_choice.function, "f");
}

TEST(AnthropicParseTest, CountTokensTakesNoMaxTokens) {
  auto r = parse_count_tokens_request(
      R"({"model":"m","system":"s","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->messages.size(), 2u);
  auto bad = parse_count_tokens_request(
      R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().param, "max_tokens");
}

TEST(AnthropicParseTest, BadInputNamesTheField) {
  struct Case {
    const char *body;
    const char *param;
  } cases[] = {
      {R"({"model":"m","messages":[{"role":"user","content":"x"}]})", "max_tokens"},
      {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m","max_tokens":5})", "messages"},
      {R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})", "max_tokens"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]})",
       "messages.0.role"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]})",
       "messages.0.content.0.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"f","input":{}}]}]})",
       "messages.0.content.0.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"f","input":"s"}]}]})",
       "messages.0.content.0.input"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]})",
       "messages.0.content.0.tool_use_id"},
      {R"({"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]})",
       "temperature"},
      {R"({"model":"m","max_tokens":5,"tools":[{"name":"f"}],"messages":[{"role":"user","content":"x"}]})",
       "tools.0.input_schema"},
      {R"({"model":"m","max_tokens":5,"tools":[{"name":"f","input_schema":{"type":"object","required":"a"}}],"messages":[{"role":"user","content":"x"}]})",
       "tools.0.input_schema"},
      {R"({"model":"m","max_tokens":5,"tools":[{"type":"web_search_20250305","name":"w"}],"messages":[{"role":"user","content":"x"}]})",
       "tools.0.type"},
      {R"({"model":"m","max_tokens":5,"tool_choice":{"type":"tool","name":"g"},"messages":[{"role":"user","content":"x"}]})",
       "tool_choice.name"},
      {R"({"model":"m","max_tokens":5,"tool_choice":{"type":"maybe"},"messages":[{"role":"user","content":"x"}]})",
       "tool_choice.type"},
      {R"({"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"x"}]})",
       "thinking"},
      {R"({"model":"m","max_tokens":5,"extra":1,"messages":[{"role":"user","content":"x"}]})",
       "extra"},
  };
  for (const auto &c : cases) {
    auto r = parse_messages_request(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << " → " << r.error().message;
    // Anthropic's messages lead with the field's path.
    EXPECT_EQ(r.error().message.rfind(c.param, 0), 0u) << r.error().message;
  }
}

TEST(AnthropicRenderTest, MessageWithTextAndToolUse) {
  MessagesResult res;
  res.text = "Checking.";
  res.tool_calls.push_back({"", "get_weather", R"({"city":"Paris"})"});
  res.tool_calls.push_back({"call_b", "f", "not json"});
  res.finish_reason = "tool_calls";
  res.usage = {12, 5, 2};
  auto o = obj(render_message({"msg_abc", "m"}, res));
  EXPECT_EQ(o.at("id"), "msg_abc");
  EXPECT_EQ(o.at("type"), "message");
  EXPECT_EQ(o.at("role"), "assistant");
  EXPECT_EQ(o.at("stop_reason"), "tool_use");
  EXPECT_TRUE(o.at("stop_sequence").is_null());
  const auto &c = o.at("content").as_array();
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].at("type"), "text");
  EXPECT_EQ(c[0].at("text"), "Checking.");
  EXPECT_EQ(c[1].at("type"), "tool_use");
  EXPECT_EQ(c[1].at("id"), "toolu_abc_0");
  EXPECT_EQ(c[1].at("input"), json::parse(R"({"city":"Paris"})"));
  EXPECT_EQ(c[2].at("id"), "call_b");
  EXPECT_TRUE(c[2].at("input").as_object().empty()); // not an object: {} rather than a bad body
  EXPECT_EQ(o.at("usage").at("input_tokens"), 10);   // cache reads are counted apart
  EXPECT_EQ(o.at("usage").at("cache_read_input_tokens"), 2);
  EXPECT_EQ(o.at("usage").at("output_tokens"), 5);
}

TEST(AnthropicRenderTest, StopReasonsBothWays) {
  EXPECT_EQ(stop_reason_from_finish_reason("stop"), "end_turn");
  EXPECT_EQ(stop_reason_from_finish_reason("length"), "max_tokens");
  EXPECT_EQ(stop_reason_from_finish_reason("tool_calls"), "tool_use");
  EXPECT_EQ(stop_reason_from_finish_reason("content_filter"), "refusal");
  for (const char *f : {"stop", "length", "tool_calls", "content_filter"})
    EXPECT_EQ(finish_reason_from_stop_reason(stop_reason_from_finish_reason(f)), f);
  EXPECT_EQ(finish_reason_from_stop_reason("stop_sequence"), "stop");
}

TEST(AnthropicRenderTest, ErrorsInAnthropicShape) {
  auto o = obj(render_anthropic_error({ErrorCode::kRateLimited, "slow down", ""}));
  EXPECT_EQ(o.at("type"), "error");
  EXPECT_EQ(o.at("error").at("type"), "rate_limit_error");
  EXPECT_EQ(o.at("error").at("message"), "slow down");
  EXPECT_EQ(anthropic_status(ErrorCode::kRateLimited), 429);
  EXPECT_EQ(anthropic_status(ErrorCode::kQueueFull), 529);
  EXPECT_EQ(anthropic_error_type(ErrorCode::kQueueFull), "overloaded_error");
  EXPECT_EQ(anthropic_status(ErrorCode::kUnavailable), 529);
  EXPECT_EQ(anthropic_error_type(ErrorCode::kUnauthorized), "authentication_error");
  EXPECT_EQ(anthropic_status(ErrorCode::kUnauthorized), 401);
  EXPECT_EQ(anthropic_error_type(ErrorCode::kPermissionDenied), "permission_error");
  EXPECT_EQ(anthropic_error_type(ErrorCode::kNotFound), "not_found_error");
  EXPECT_EQ(anthropic_error_type(ErrorCode::kInvalidArgument), "invalid_request_error");
  EXPECT_EQ(anthropic_error_type(ErrorCode::kInternal), "api_error");
  EXPECT_EQ(anthropic_status(ErrorCode::kInternal), 500);
}

TEST(AnthropicRenderTest, InferenceErrorsNameThisApisFields) {
  Error e = Error::unsupported("unsupported JSON schema feature: uniqueItems at #");
  e.param = "tools[3].function.parameters";
  to_anthropic_param(e);
  EXPECT_EQ(e.param, "tools.3.input_schema");
  EXPECT_EQ(e.message, "tools.3.input_schema: unsupported JSON schema feature: uniqueItems at #");
  Error o = Error::invalid("m", "max_tokens");
  to_anthropic_param(o);
  EXPECT_EQ(o.param, "max_tokens");
  EXPECT_EQ(o.message, "m");
}

TEST(AnthropicStreamTest, TextThenToolUseInOrder) {
  MessagesStream s({"msg_1", "m"});
  TypedEvents all;
  auto add = [&](TypedEvents ev) {
    for (auto &e : ev)
      all.push_back(std::move(e));
  };
  add(s.start({7, 0, 0}));
  add(s.text("Hi"));
  add(s.text(" there"));
  ToolCallDelta d;
  d.index = 0;
  d.id = "toolu_x";
  d.name = "f";
  d.arguments = "{\"a\":";
  add(s.tool_call(d));
  d.id.clear();
  d.name.clear();
  d.arguments = "1}";
  add(s.tool_call(d));
  add(s.finish("tool_calls", {7, 4, 0}));
  EXPECT_EQ(names(all), (std::vector<std::string>{
                            "message_start", "ping", "content_block_start", "content_block_delta",
                            "content_block_delta", "content_block_stop", "content_block_start",
                            "content_block_delta", "content_block_delta", "content_block_stop",
                            "message_delta", "message_stop"}));
  for (const auto &e : all)
    EXPECT_EQ(obj(e.data).at("type"), json::value(e.name));
  auto start = obj(all[0].data).at("message");
  EXPECT_EQ(start.at("id"), "msg_1");
  EXPECT_TRUE(start.at("content").as_array().empty());
  EXPECT_EQ(start.at("usage").at("input_tokens"), 7);
  EXPECT_EQ(obj(all[3].data).at("delta").at("type"), "text_delta");
  EXPECT_EQ(obj(all[3].data).at("delta").at("text"), "Hi");
  auto tool = obj(all[6].data);
  EXPECT_EQ(tool.at("index"), 1);
  EXPECT_EQ(tool.at("content_block").at("type"), "tool_use");
  EXPECT_EQ(tool.at("content_block").at("id"), "toolu_x");
  EXPECT_EQ(obj(all[7].data).at("delta").at("type"), "input_json_delta");
  EXPECT_EQ(obj(all[8].data).at("delta").at("partial_json"), "1}");
  auto delta = obj(all[10].data);
  EXPECT_EQ(delta.at("delta").at("stop_reason"), "tool_use");
  EXPECT_EQ(delta.at("usage").at("output_tokens"), 4);
}

TEST(AnthropicStreamTest, EmptyAnswerStillHasATextBlockAndErrorsAreOneEvent) {
  MessagesStream s({"msg_1", "m"});
  (void)s.start({1, 0, 0});
  auto end = s.finish("length", {1, 3, 0});
  EXPECT_EQ(names(end), (std::vector<std::string>{"content_block_start", "content_block_stop",
                                                  "message_delta", "message_stop"}));
  EXPECT_EQ(obj(end[2].data).at("delta").at("stop_reason"), "max_tokens");
  MessagesStream f({"msg_2", "m"});
  auto err = f.fail({ErrorCode::kUnavailable, "gone", ""});
  ASSERT_EQ(err.size(), 1u);
  EXPECT_EQ(err[0].name, "error");
  EXPECT_EQ(obj(err[0].data).at("error").at("type"), "overloaded_error");
}

} // namespace
} // namespace gantry::api
