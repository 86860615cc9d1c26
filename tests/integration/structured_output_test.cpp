// Structured outputs end to end on the bundled model (stories260K, a story model that knows no
// JSON): with response_format json_schema / json_object, a GBNF grammar or a forced tool call,
// every answer parses and validates, greedy and sampled, streamed and not; a budget too small
// for the document ends with "length"; unsupported schemas are 400s naming the field; the
// response cache keys on the constraint.
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "support/json_schema_check.h"

namespace gantry::testing {
namespace {

// Schemas the grammar compiler supports, each bounded so a document can end within max_tokens.
const char *const kSchemas[] = {
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},
        "age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array",
        "items":{"enum":["red","green","blue"]},"minItems":1,"maxItems":3}},
        "required":["name","age","tags"],"additionalProperties":false})",
    R"({"type":"object","properties":{"point":{"type":"object","properties":{
        "x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]},
        "label":{"anyOf":[{"type":"string","maxLength":8},{"type":"null"}]}},
        "required":["point","label"]})",
    R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer","minimum":0,
        "maximum":9},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},
        "required":["v","next"]}},"$ref":"#/$defs/node"})",
    R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{3}$"},
        "ok":{"type":"boolean"}},"required":["code","ok"]})",
};

json::array weather_tool() {
  return json::array{json::object{
      {"type", "function"},
      {"function",
       json::object{{"name", "get_weather"},
                    {"parameters", json::parse(R"({"type":"object","properties":{"city":{
                       "type":"string","maxLength":16},"days":{"type":"integer","minimum":1,
                       "maximum":7}},"required":["city","days"],"additionalProperties":false})")}}}}};
}

class StructuredOutputTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = ServerProcess::start({"--threads", "1"});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
    client_ = std::make_unique<http::HttpClient>(server_->client_options());
  }

  http::ClientResponse post(const std::string &path, const std::string &body) {
    auto r = client_->post(path, body);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : http::ClientResponse{};
  }

  static json::object schema_format(const char *schema) {
    return {{"type", "json_schema"},
            {"json_schema", {{"name", "doc"}, {"strict", true}, {"schema", json::parse(schema)}}}};
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

TEST_F(StructuredOutputTest, EverySchemaAnswerParsesAndValidatesGreedyAndSampled) {
  for (const char *schema : kSchemas) {
    const json::value s = json::parse(schema);
    for (int variant = 0; variant < 4; ++variant) {
      json::object extra{{"max_tokens", 400}, {"response_format", schema_format(schema)}};
      if (variant == 0) {
        extra["temperature"] = 0;
      } else {
        extra["temperature"] = 1.0;
        extra["seed"] = variant;
      }
      auto r = post("/v1/chat/completions", chat_body("Once upon a time", extra));
      ASSERT_EQ(r.status, 200) << r.body;
      auto o = parse_object(r.body);
      const auto &choice = o.at("choices").at(0).as_object();
      ASSERT_EQ(choice.at("finish_reason").as_string(), "stop") << schema << "\n" << r.body;
      const std::string text = choice_text(o);
      json::error_code ec;
      json::value doc = json::parse(text, ec);
      ASSERT_FALSE(ec) << schema << " variant " << variant << ": not JSON: " << text;
      EXPECT_EQ(validate(doc, s, s), "") << schema << " variant " << variant << ": " << text;
    }
  }
}

TEST_F(StructuredOutputTest, StreamedSchemaAnswerIsTheSameDocument) {
  json::object extra{
      {"max_tokens", 400}, {"temperature", 0}, {"response_format", schema_format(kSchemas[0])}};
  auto whole = post("/v1/chat/completions", chat_body("Once upon a time", extra));
  ASSERT_EQ(whole.status, 200) << whole.body;
  extra["stream"] = true;
  auto s = stream_request(server_->client_options(), "/v1/chat/completions",
                          chat_body("Once upon a time", extra));
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.finish_reason[0], "stop");
  EXPECT_EQ(s.text[0], choice_text(parse_object(whole.body)));
  const json::value schema = json::parse(kSchemas[0]);
  EXPECT_EQ(validate(json::parse(s.text[0]), schema, schema), "") << s.text[0];
}

TEST_F(StructuredOutputTest, JsonObjectModeAndGbnfGrammarAndCompletions) {
  auto obj = post("/v1/chat/completions",
                  chat_body("Once upon a time", {{"max_tokens", 300},
                                                 {"seed", 7},
                                                 {"response_format", {{"type", "json_object"}}}}));
  ASSERT_EQ(obj.status, 200) << obj.body;
  auto o = parse_object(obj.body);
  if (o.at("choices").at(0).at("finish_reason").as_string() == "stop") {
    EXPECT_TRUE(json::parse(choice_text(o)).is_object()) << choice_text(o);
  }

  for (int seed = 0; seed < 6; ++seed) {
    auto yn = post("/v1/chat/completions",
                   chat_body("Once upon a time", {{"max_tokens", 8},
                                                  {"seed", seed},
                                                  {"grammar", R"(root ::= ("yes" | "no") "!"?)"}}));
    ASSERT_EQ(yn.status, 200) << yn.body;
    const std::string t = choice_text(parse_object(yn.body));
    EXPECT_TRUE(t == "yes" || t == "no" || t == "yes!" || t == "no!") << t;
  }

  // The completions endpoint takes vLLM's guided_json.
  auto c = post("/v1/completions",
                completion_body("Once upon a time", {{"max_tokens", 400},
                                                     {"temperature", 0},
                                                     {"guided_json", json::parse(kSchemas[3])}}));
  ASSERT_EQ(c.status, 200) << c.body;
  const json::value s3 = json::parse(kSchemas[3]);
  const std::string text = choice_text(parse_object(c.body));
  EXPECT_EQ(validate(json::parse(text), s3, s3), "") << text;
}

TEST_F(StructuredOutputTest, TooFewTokensEndWithLengthNeverAHang) {
  auto r = post("/v1/chat/completions",
                chat_body("Once upon a time",
                          {{"max_tokens", 3}, {"response_format", schema_format(kSchemas[0])}}));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("choices").at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(o.at("usage").at("completion_tokens").as_int64(), 3);
  // What was produced is a prefix of a valid document.
  EXPECT_EQ(choice_text(o).substr(0, 1), "{");
}

TEST_F(StructuredOutputTest, UnsupportedOrBrokenConstraintsAre400sNamingTheField) {
  auto bad_schema =
      post("/v1/chat/completions",
           chat_body("x", {{"response_format", schema_format(R"({"type":"object","properties":{"a":{
                                            "type":"integer","multipleOf":3}}})")}}));
  auto e =
      expect_error(bad_schema, 400, "invalid_request_error", "response_format.json_schema.schema");
  EXPECT_NE(std::string(e.at("message").as_string()).find("multipleOf"), std::string::npos)
      << e.at("message");
  auto bad_grammar = post("/v1/chat/completions", chat_body("x", {{"grammar", "root ::= value"}}));
  expect_error(bad_grammar, 400, "invalid_request_error", "grammar");
  // A schema of hostile size is refused, not compiled for ever.
  json::object props;
  for (int i = 0; i < 5000; ++i)
    props["p" + std::to_string(i)] = json::object{{"type", "string"}};
  const std::string wide =
      json::serialize(json::object{{"type", "object"}, {"properties", std::move(props)}});
  expect_error(post("/v1/chat/completions",
                    chat_body("x", {{"response_format", schema_format(wide.c_str())}})),
               400, "invalid_request_error", "response_format.json_schema.schema");
}

TEST_F(StructuredOutputTest, ForcedToolCallsAlwaysParseStreamedAndNot) {
  const json::value params = weather_tool()[0].at("function").at("parameters");
  const json::value named = json::parse(R"({"type":"function","function":{"name":"get_weather"}})");
  for (const json::value &choice : {json::value("required"), named}) {
    for (int seed = 0; seed < 3; ++seed) {
      json::object extra{{"max_tokens", 200},
                         {"seed", seed},
                         {"tools", weather_tool()},
                         {"tool_choice", choice},
                         {"parallel_tool_calls", false}};
      auto r = post("/v1/chat/completions", chat_body("What is the weather in Paris?", extra));
      ASSERT_EQ(r.status, 200) << r.body;
      auto o = parse_object(r.body);
      const auto &c = o.at("choices").at(0).as_object();
      ASSERT_EQ(c.at("finish_reason").as_string(), "tool_calls") << r.body;
      const auto &calls = c.at("message").at("tool_calls").as_array();
      ASSERT_EQ(calls.size(), 1u) << r.body;
      EXPECT_EQ(calls[0].at("function").at("name").as_string(), "get_weather");
      const std::string args(calls[0].at("function").at("arguments").as_string());
      EXPECT_EQ(validate(json::parse(args), params, params), "") << args;

      // Streamed: the fragments add up to the same call.
      extra["stream"] = true;
      auto s = stream_request(server_->client_options(), "/v1/chat/completions",
                              chat_body("What is the weather in Paris?", extra));
      ASSERT_EQ(s.status, 200);
      EXPECT_EQ(s.finish_reason[0], "tool_calls");
      std::string name, streamed_args;
      for (const auto &ev : s.events) {
        if (ev == "[DONE]")
          continue;
        auto chunk = parse_object(ev);
        const auto &delta = chunk.at("choices").at(0).at("delta").as_object();
        if (const auto *tc = delta.if_contains("tool_calls")) {
          for (const auto &f : tc->as_array()) {
            const auto &fn = f.at("function").as_object();
            if (const auto *n = fn.if_contains("name"))
              name += n->as_string();
            streamed_args += fn.at("arguments").as_string();
          }
        }
      }
      EXPECT_EQ(name, "get_weather");
      EXPECT_EQ(streamed_args, args);
    }
  }
}

TEST_F(StructuredOutputTest, ForcedParallelCallsEndAsCallsNotAsALoop) {
  // Parallel calls allowed (OpenAI's default): greedy decoding would repeat calls until
  // max_tokens; the grammar bounds them, so the answer ends as calls.
  auto r = post("/v1/chat/completions",
                chat_body("What is the weather in Paris?", {{"max_tokens", 600},
                                                            {"temperature", 0},
                                                            {"tools", weather_tool()},
                                                            {"tool_choice", "required"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  const auto &c = o.at("choices").at(0).as_object();
  ASSERT_EQ(c.at("finish_reason").as_string(), "tool_calls") << r.body;
  const auto &calls = c.at("message").at("tool_calls").as_array();
  EXPECT_GE(calls.size(), 1u);
  EXPECT_LE(calls.size(), 8u);
}

TEST_F(StructuredOutputTest, TheResponseCacheKeysOnTheConstraint) {
  auto ask = [&](const char *schema) {
    auto r = post("/v1/chat/completions",
                  chat_body("Once upon a time", {{"max_tokens", 400},
                                                 {"temperature", 0},
                                                 {"response_format", schema_format(schema)}}));
    EXPECT_EQ(r.status, 200) << r.body;
    return std::make_pair(std::string(r.header("x-gantry-cache").value_or("")),
                          choice_text(parse_object(r.body)));
  };
  auto first = ask(kSchemas[0]);
  auto again = ask(kSchemas[0]);
  auto other = ask(kSchemas[3]);
  EXPECT_EQ(first.first, "miss");
  EXPECT_EQ(again.first, "hit");
  EXPECT_EQ(again.second, first.second);
  EXPECT_EQ(other.first, "miss") << "another schema must not be answered from this entry";
  EXPECT_NE(other.second, first.second);
}

TEST_F(StructuredOutputTest, ResponsesApiTextFormatIsEnforced) {
  json::object body{{"model", kModel},
                    {"input", "Once upon a time"},
                    {"max_output_tokens", 400},
                    {"temperature", 0},
                    {"text",
                     {{"format",
                       {{"type", "json_schema"},
                        {"name", "doc"},
                        {"strict", true},
                        {"schema", json::parse(kSchemas[1])}}}}}};
  auto r = post("/v1/responses", json::serialize(body));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("status").as_string(), "completed") << r.body;
  const auto &content = o.at("output").at(0).at("content").at(0).as_object();
  const std::string text(content.at("text").as_string());
  const json::value s = json::parse(kSchemas[1]);
  EXPECT_EQ(validate(json::parse(text), s, s), "") << text;

  // A schema the compiler refuses is named as the Responses field the client sent.
  body["text"].as_object()["format"].as_object()["schema"] =
      json::parse(R"({"type":"integer","multipleOf":2})");
  expect_error(post("/v1/responses", json::serialize(body)), 400, "invalid_request_error",
               "text.format.schema");
}

} // namespace
} // namespace gantry::testing
