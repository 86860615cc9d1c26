#include "api/responses.h"

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

TEST(ResponsesParseTest, StringInputAndInstructions) {
  auto r = parse_responses_request(R"({"model":"m","input":"hi","instructions":"be brief",
    "max_output_tokens":20,"temperature":0.5,"top_p":0.9,"stream":true,"store":true,
    "metadata":{"k":"v"},"user":"u1","parallel_tool_calls":false})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const InferenceRequest &ir = r->request;
  EXPECT_EQ(ir.endpoint, Endpoint::kChatCompletions);
  ASSERT_EQ(ir.messages.size(), 2u);
  EXPECT_EQ(ir.messages[0].role, "system");
  EXPECT_EQ(ir.messages[0].content, "be brief");
  EXPECT_EQ(ir.messages[1].role, "user");
  EXPECT_EQ(ir.messages[1].content, "hi");
  EXPECT_EQ(ir.max_tokens, 20);
  EXPECT_FLOAT_EQ(ir.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(ir.sampling.top_p, 0.9f);
  EXPECT_TRUE(ir.stream);
  EXPECT_FALSE(ir.parallel_tool_calls);
  EXPECT_EQ(ir.user, "u1");
  EXPECT_EQ(r->settings.metadata_json, R"({"k":"v"})");
  EXPECT_EQ(r->settings.max_output_tokens, 20);
}

TEST(ResponsesParseTest, ItemsBecomeChatMessagesWithToolCalls) {
  auto r = parse_responses_request(R"({"model":"m","input":[
    {"role":"developer","content":"rules"},
    {"type":"message","role":"user","content":[{"type":"input_text","text":"weather "},
                                               {"type":"input_text","text":"in Paris?"}]},
    {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
    {"type":"function_call","call_id":"call_2","name":"get_time","arguments":"{}"},
    {"type":"function_call_output","call_id":"call_1","output":"sunny"},
    {"role":"assistant","content":[{"type":"output_text","text":"It is sunny."}]}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto &m = r->request.messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, "developer");
  EXPECT_EQ(m[1].content, "weather in Paris?");
  EXPECT_EQ(m[2].role, "assistant");
  ASSERT_EQ(m[2].tool_calls.size(), 2u); // consecutive calls form one assistant turn
  EXPECT_EQ(m[2].tool_calls[0].id, "call_1");
  EXPECT_EQ(m[2].tool_calls[0].name, "get_weather");
  EXPECT_EQ(m[2].tool_calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(m[3].role, "tool");
  EXPECT_EQ(m[3].tool_call_id, "call_1");
  EXPECT_EQ(m[3].name, "get_weather"); // from the call it answers
  EXPECT_EQ(m[3].content, "sunny");
  EXPECT_EQ(m[4].role, "assistant");
  EXPECT_EQ(m[4].content, "It is sunny.");
}

TEST(ResponsesParseTest, FlatFunctionToolsToolChoiceAndTextFormat) {
  auto r = parse_responses_request(R"({"model":"m","input":"x",
    "tools":[{"type":"function","name":"get_weather","description":"Weather",
              "parameters":{"type":"object","properties":{"city":{"type":"string"}}},
              "strict":false}],
    "tool_choice":{"type":"function","name":"get_weather"},
    "text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const InferenceRequest &ir = r->request;
  ASSERT_EQ(ir.tools.size(), 1u);
  EXPECT_EQ(ir.tools[0].name, "get_weather");
  EXPECT_EQ(ir.tools[0].description, "Weather");
  EXPECT_EQ(json::parse(ir.tools[0].parameters),
            json::parse(R"({"type":"object","properties":{"city":{"type":"string"}}})"));
  EXPECT_FALSE(ir.tools[0].strict);
  EXPECT_EQ(ir.tool_choice.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(ir.tool_choice.function, "get_weather");
  EXPECT_EQ(ir.response_format.type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(ir.response_format.name, "out");
  EXPECT_EQ(ir.response_format.schema, R"({"type":"object"})");
  EXPECT_TRUE(ir.response_format.strict);
  // The echo keeps the flat tool shape the client sent.
  auto tools = json::parse(r->settings.tools_json).as_array();
  EXPECT_EQ(tools[0].at("name"), "get_weather");
  EXPECT_EQ(tools[0].at("type"), "function");

  auto j =
      parse_responses_request(R"({"model":"m","input":"x","text":{"format":{"type":"json_object"}},
    "tool_choice":"required"})");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->request.response_format.type, ResponseFormat::Type::kJsonObject);
  EXPECT_EQ(j->request.tool_choice.mode, ToolChoice::Mode::kRequired);
  EXPECT_TRUE(json::parse(j->settings.tool_choice_json) == json::value("required"));
}

TEST(ResponsesParseTest, BadInputNamesTheField) {
  struct Case {
    const char *body;
    const char *param;
  } cases[] = {
      {R"({"input":"x"})", "model"},
      {R"({"model":"m"})", "input"},
      {R"({"model":"m","input":5})", "input"},
      {R"({"model":"m","input":[]})", "input"},
      {R"({"model":"m","input":[{"role":"wizard","content":"x"}]})", "input[0].role"},
      {R"({"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"u"}]}]})",
       "input[0].content[0].type"},
      {R"({"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]})",
       "input[0].call_id"},
      {R"({"model":"m","input":[{"type":"item_reference","id":"x"}]})", "input[0].type"},
      {R"({"model":"m","input":"x","previous_response_id":"resp_1"})", "previous_response_id"},
      {R"({"model":"m","input":"x","conversation":"c"})", "conversation"},
      {R"({"model":"m","input":"x","background":true})", "background"},
      {R"({"model":"m","input":"x","max_output_tokens":0})", "max_output_tokens"},
      {R"({"model":"m","input":"x","temperature":3})", "temperature"},
      {R"({"model":"m","input":"x","tools":[{"type":"web_search"}]})", "tools[0].type"},
      {R"({"model":"m","input":"x","tools":[{"type":"function","name":"bad name"}]})",
       "tools[0].name"},
      {R"({"model":"m","input":"x","tools":[{"type":"function","name":"f","parameters":"s"}]})",
       "tools[0].parameters"},
      {R"({"model":"m","input":"x","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"a":{"type":"strin"}}}}]})",
       "tools[0].parameters"},
      {R"({"model":"m","input":"x","tool_choice":{"type":"function","name":"nope"}})",
       "tool_choice.name"},
      {R"({"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"n"}}})",
       "text.format.schema"},
      {R"({"model":"m","input":"x","text":{"format":{"type":"xml"}}})", "text.format.type"},
      {R"({"model":"m","input":"x","metadata":{"k":1}})", "metadata.k"},
      {R"({"model":"m","input":"x","frobnicate":1})", "frobnicate"},
  };
  for (const auto &c : cases) {
    auto r = parse_responses_request(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << " → " << r.error().message;
  }
}

TEST(ResponsesParseTest, ForcedCallSchemaErrorsNameTheResponsesField) {
  // A forced call's grammar names a tool's schema the chat way.
  EXPECT_EQ(responses_param("tools[12].function.parameters"), "tools[12].parameters");
  for (const char *other :
       {"tools[x].function.parameters", "tools[].function.parameters", "tools[1].function.name"})
    EXPECT_EQ(responses_param(other), other);
}

TEST(ResponsesRenderTest, CompletedObjectWithMessageAndFunctionCall) {
  ResponsesSettings s;
  s.instructions = "sys";
  ResponsesResult res;
  res.text = "Let me check.";
  res.tool_calls.push_back({"call_9", "get_weather", R"({"city":"Paris"})"});
  res.finish_reason = "tool_calls";
  res.usage = {10, 7, 4};
  auto o = obj(render_responses_object({"resp_abc", "m", 123}, s, res));
  EXPECT_EQ(o.at("id"), "resp_abc");
  EXPECT_EQ(o.at("object"), "response");
  EXPECT_EQ(o.at("created_at"), 123);
  EXPECT_EQ(o.at("status"), "completed");
  EXPECT_EQ(o.at("store"), false);
  EXPECT_EQ(o.at("instructions"), "sys");
  EXPECT_TRUE(o.at("incomplete_details").is_null());
  const auto &out = o.at("output").as_array();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].at("type"), "message");
  EXPECT_EQ(out[0].at("id"), "msg_abc");
  EXPECT_EQ(out[0].at("role"), "assistant");
  EXPECT_EQ(out[0].at("content").at(0).at("type"), "output_text");
  EXPECT_EQ(out[0].at("content").at(0).at("text"), "Let me check.");
  EXPECT_TRUE(out[0].at("content").at(0).at("annotations").as_array().empty());
  EXPECT_EQ(out[1].at("type"), "function_call");
  EXPECT_EQ(out[1].at("call_id"), "call_9");
  EXPECT_EQ(out[1].at("name"), "get_weather");
  EXPECT_EQ(out[1].at("arguments"), R"({"city":"Paris"})");
  EXPECT_EQ(out[1].at("status"), "completed");
  const auto &u = o.at("usage");
  EXPECT_EQ(u.at("input_tokens"), 10);
  EXPECT_EQ(u.at("input_tokens_details").at("cached_tokens"), 4);
  EXPECT_EQ(u.at("output_tokens"), 7);
  EXPECT_EQ(u.at("output_tokens_details").at("reasoning_tokens"), 0);
  EXPECT_EQ(u.at("total_tokens"), 17);
}

TEST(ResponsesRenderTest, LengthIsIncompleteAndToolOnlyTurnHasNoMessage) {
  ResponsesResult cut;
  cut.text = "abc";
  cut.finish_reason = "length";
  auto o = obj(render_responses_object({"resp_x", "m", 1}, {}, cut));
  EXPECT_EQ(o.at("status"), "incomplete");
  EXPECT_EQ(o.at("incomplete_details").at("reason"), "max_output_tokens");
  EXPECT_EQ(o.at("output").at(0).at("status"), "incomplete");

  ResponsesResult calls;
  calls.tool_calls.push_back({"", "f", "{}"});
  calls.finish_reason = "tool_calls";
  auto c = obj(render_responses_object({"resp_x", "m", 1}, {}, calls));
  ASSERT_EQ(c.at("output").as_array().size(), 1u);
  EXPECT_EQ(c.at("output").at(0).at("type"), "function_call");
  EXPECT_EQ(c.at("output").at(0).at("call_id"), "call_x_0"); // generated when the model gave none
}

TEST(ResponsesStreamTest, TextEventsInOrderWithSequenceNumbers) {
  ResponsesStream s({"resp_1", "m", 5}, {});
  TypedEvents all;
  auto add = [&](TypedEvents ev) {
    for (auto &e : ev)
      all.push_back(std::move(e));
  };
  add(s.start());
  add(s.text("Hel"));
  add(s.text(""));
  add(s.text("lo"));
  add(s.finish("stop", {3, 2, 0}));
  EXPECT_EQ(names(all),
            (std::vector<std::string>{"response.created", "response.in_progress",
                                      "response.output_item.added", "response.content_part.added",
                                      "response.output_text.delta", "response.output_text.delta",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"}));
  for (size_t i = 0; i < all.size(); ++i) {
    auto o = obj(all[i].data);
    EXPECT_EQ(o.at("type"), json::value(all[i].name));
    EXPECT_EQ(o.at("sequence_number"), static_cast<int64_t>(i));
  }
  EXPECT_EQ(obj(all[0].data).at("response").at("status"), "in_progress");
  EXPECT_TRUE(obj(all[0].data).at("response").at("usage").is_null());
  EXPECT_EQ(obj(all[4].data).at("delta"), "Hel");
  EXPECT_EQ(obj(all[4].data).at("item_id"), "msg_1");
  EXPECT_EQ(obj(all[6].data).at("text"), "Hello");
  auto done = obj(all.back().data).at("response");
  EXPECT_EQ(done.at("status"), "completed");
  EXPECT_EQ(done.at("output").at(0).at("content").at(0).at("text"), "Hello");
  EXPECT_EQ(done.at("usage").at("total_tokens"), 5);
}

TEST(ResponsesStreamTest, ToolCallClosesTheMessageAndStreamsArguments) {
  ResponsesStream s({"resp_1", "m", 5}, {});
  (void)s.start();
  TypedEvents ev = s.text("ok");
  ToolCallDelta first;
  first.index = 0;
  first.id = "call_a";
  first.name = "f";
  first.arguments = "{\"x\":";
  ToolCallDelta more;
  more.index = 0;
  more.arguments = "1}";
  TypedEvents t1 = s.tool_call(first), t2 = s.tool_call(more);
  EXPECT_EQ(names(t1),
            (std::vector<std::string>{"response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.output_item.added",
                                      "response.function_call_arguments.delta"}));
  auto added = obj(t1[3].data);
  EXPECT_EQ(added.at("output_index"), 1);
  EXPECT_EQ(added.at("item").at("type"), "function_call");
  EXPECT_EQ(added.at("item").at("call_id"), "call_a");
  EXPECT_EQ(names(t2), (std::vector<std::string>{"response.function_call_arguments.delta"}));
  TypedEvents end = s.finish("tool_calls", {1, 1, 0});
  EXPECT_EQ(names(end),
            (std::vector<std::string>{"response.function_call_arguments.done",
                                      "response.output_item.done", "response.completed"}));
  EXPECT_EQ(obj(end[0].data).at("arguments"), "{\"x\":1}");
  auto out = obj(end.back().data).at("response").at("output").as_array();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].at("arguments"), "{\"x\":1}");
}

TEST(ResponsesStreamTest, EmptyOutputIncompleteAndFailed) {
  ResponsesStream empty({"resp_1", "m", 5}, {});
  (void)empty.start();
  auto e = empty.finish("length", {1, 0, 0});
  EXPECT_EQ(names(e),
            (std::vector<std::string>{"response.output_item.added", "response.content_part.added",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.incomplete"}));
  EXPECT_EQ(obj(e.back().data).at("response").at("incomplete_details").at("reason"),
            "max_output_tokens");

  ResponsesStream failed({"resp_2", "m", 5}, {});
  (void)failed.start();
  (void)failed.text("x");
  auto f = failed.fail(Error{ErrorCode::kUnavailable, "engine gone", ""});
  EXPECT_EQ(f.back().name, "response.failed");
  auto r = obj(f.back().data).at("response");
  EXPECT_EQ(r.at("status"), "failed");
  EXPECT_EQ(r.at("error").at("message"), "engine gone");
}

TEST(ResponsesParam, ChatFieldsAreNamedAsTheClientWroteThem) {
  EXPECT_EQ(responses_param("response_format.json_schema.schema"), "text.format.schema");
  EXPECT_EQ(responses_param("response_format"), "text.format");
  EXPECT_EQ(responses_param("messages[2].content"), "input");
  EXPECT_EQ(responses_param("messages"), "input");
  EXPECT_EQ(responses_param("max_tokens"), "max_output_tokens");
  EXPECT_EQ(responses_param("tool_choice"), "tool_choice");
  EXPECT_EQ(responses_param(""), "");
}

} // namespace
} // namespace gantry::api
