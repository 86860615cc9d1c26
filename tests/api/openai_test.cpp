#include "api/openai.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace gantry::api {
namespace {

namespace json = boost::json;

Result<InferenceRequest> chat(std::string_view body) {
  return parse_inference_request(Endpoint::kChatCompletions, body);
}

TEST(OpenAiParseTest, ParsesAFullChatRequest) {
  auto r = chat(R"({"model":"m","messages":[{"role":"system","content":"be brief"},
    {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
    "max_completion_tokens":12,"temperature":0.5,"top_p":0.9,"seed":7,"stop":["\n\n","END"],
    "n":2,"stream":true,"stream_options":{"include_usage":true},"presence_penalty":0.1,
    "frequency_penalty":-0.2,"user":"u1","top_k":40,"min_p":0.05,"logit_bias":{}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->model, "m");
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[1].content, "hi there");
  EXPECT_EQ(r->max_tokens, 12);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_EQ(r->sampling.seed, 7u);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(r->n, 2);
  EXPECT_TRUE(r->stream && r->include_usage);
  EXPECT_EQ(r->sampling.top_k, 40);
}

TEST(OpenAiParseTest, CompletionPromptForms) {
  auto a = parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":"abc"})");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->prompts.size(), 1u);
  EXPECT_EQ(a->prompts[0].text, "abc");
  EXPECT_FALSE(a->prompts[0].ids.has_value());
  auto b = parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":[1,2,3]})");
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->prompts.size(), 1u);
  EXPECT_EQ(*b->prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));
  auto c =
      parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":["a","b"],"n":2})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->prompts.size(), 2u);
  EXPECT_EQ(c->prompts[1].text, "b");
  auto d = parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":[[1,2],[3]]})");
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_EQ(d->prompts.size(), 2u);
  EXPECT_EQ(*d->prompts[1].ids, std::vector<int32_t>{3});
}

TEST(OpenAiParseTest, BadInputNamesTheField) {
  struct Case {
    const char *body;
    const char *param;
  } cases[] = {
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})",
       "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})",
       "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5})",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":0})", "n"},
      {R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":"hello"})", "messages"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m"})", "messages"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"bogus":1})", "bogus"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]})", "stop"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}})",
       "stream_options"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":1})", "logprobs"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})",
       "tools[0].function"},
  };
  for (const auto &c : cases) {
    auto r = chat(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << " -> " << r.error().message;
  }
}

TEST(OpenAiParseTest, ResponseFormatAndGrammar) {
  const std::string head = R"({"model":"m","messages":[{"role":"user","content":"x"}],)";
  auto obj = chat(head + R"("response_format":{"type":"json_object"}})");
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  EXPECT_EQ(obj->response_format.type, ResponseFormat::Type::kJsonObject);

  auto sch = chat(head + R"("response_format":{"type":"json_schema","json_schema":{"name":"p",)"
                         R"("strict":true,"schema":{"type":"object","properties":{"a":{"type":)"
                         R"("integer"}}}}}})");
  ASSERT_TRUE(sch.ok()) << sch.error().message;
  EXPECT_EQ(sch->response_format.type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(sch->response_format.name, "p");
  EXPECT_TRUE(sch->response_format.strict);
  EXPECT_EQ(json::parse(sch->response_format.schema),
            json::parse(R"({"type":"object","properties":{"a":{"type":"integer"}}})"));

  // vLLM's guided_json (also as JSON text) and llama.cpp's json_schema, on completions too.
  auto guided = parse_inference_request(
      Endpoint::kCompletions,
      R"({"model":"m","prompt":"x","guided_json":"{\"type\":\"string\"}"})");
  ASSERT_TRUE(guided.ok()) << guided.error().message;
  EXPECT_EQ(guided->response_format.type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(guided->response_format.schema, R"({"type":"string"})");
  auto gbnf = chat(head + R"("grammar":"root ::= \"yes\" | \"no\""})");
  ASSERT_TRUE(gbnf.ok()) << gbnf.error().message;
  EXPECT_EQ(gbnf->grammar, R"(root ::= "yes" | "no")");

  struct Case {
    std::string body;
    const char *param;
  } cases[] = {
      {head + R"("response_format":{"type":"xml"}})", "response_format.type"},
      {head + R"("response_format":"json"})", "response_format"},
      {head + R"("response_format":{"type":"json_schema"}})", "response_format.json_schema"},
      {head + R"("response_format":{"type":"json_schema","json_schema":{"schema":{}}}})",
       "response_format.json_schema.name"},
      {head +
           R"("response_format":{"type":"json_schema","json_schema":{"name":"a b","schema":{}}}})",
       "response_format.json_schema.name"},
      {head + R"("response_format":{"type":"json_schema","json_schema":{"name":"a"}}})",
       "response_format.json_schema.schema"},
      {head +
           R"("response_format":{"type":"json_schema","json_schema":{"name":"a","schema":[1]}}})",
       "response_format.json_schema.schema"},
      {head + R"("guided_json":"{not json"})", "guided_json"},
      {head + R"("grammar":""})", "grammar"},
      {head + R"("grammar":"root ::= \"a\"","response_format":{"type":"json_object"}})", "grammar"},
  };
  for (const auto &c : cases) {
    auto r = chat(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << " -> " << r.error().message;
  }
}

TEST(OpenAiParseTest, MalformedJsonIsAnInvalidRequest) {
  for (const char *body : {"", "{", "[1,2]", "null", "{\"model\":", "\xff\xfe"}) {
    auto r = chat(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(http_status(r.error().code), 400);
  }
}

TEST(OpenAiParseTest, NullsMeanDefaults) {
  auto r = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":null,
    "max_tokens":null,"stop":null,"seed":null,"stream":null,"logprobs":false})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->max_tokens.has_value());
  EXPECT_FLOAT_EQ(r->sampling.temperature, 1.0f);
}

TEST(OpenAiParseTest, CacheField) {
  auto on = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(on->cache.enabled);
  EXPECT_FALSE(on->cache.ttl_s.has_value());
  auto off = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"cache":false})");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->cache.enabled);
  auto ttl = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"cache":{"ttl":60}})");
  ASSERT_TRUE(ttl.ok());
  EXPECT_TRUE(ttl->cache.enabled);
  EXPECT_EQ(ttl->cache.ttl_s, 60);
  for (const char *bad : {R"("cache":"yes")", R"("cache":{"ttl":-1})", R"("cache":{"ttl":1.5})",
                          R"("cache":{"ttl":99999999})", R"("cache":{"tll":1})"}) {
    auto r = chat(std::string(R"({"model":"m","messages":[{"role":"user","content":"x"}],)") + bad +
                  "}");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.error().param.starts_with("cache")) << bad << " -> " << r.error().param;
  }
}

ChoiceDelta delta(int index, std::string_view text, bool role, std::string_view finish) {
  ChoiceDelta d;
  d.index = index;
  d.text = text;
  d.role = role;
  d.finish_reason = finish;
  return d;
}

TEST(OpenAiRenderTest, ChatResponseHasTheOpenAiShape) {
  ResponseMeta m{"chatcmpl-1", "stories", 1700000000};
  Choice hello;
  hello.text = "Hello";
  hello.finish_reason = "stop";
  auto s = render_response(Endpoint::kChatCompletions, m, {hello}, {5, 1, 0});
  auto j = json::parse(s).as_object();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"].as_array()[0].at("message").at("content"), "Hello");
  EXPECT_EQ(j["choices"].as_array()[0].at("finish_reason"), "stop");
  EXPECT_EQ(j["usage"].at("total_tokens"), 6);
}

TEST(OpenAiRenderTest, ChunksAndUsageChunk) {
  ResponseMeta m{"chatcmpl-1", "stories", 1};
  auto first =
      json::parse(render_chunk(Endpoint::kChatCompletions, m, delta(0, "", true, ""), true));
  EXPECT_EQ(first.at("object"), "chat.completion.chunk");
  EXPECT_EQ(first.at("choices").at(0).at("delta").at("role"), "assistant");
  EXPECT_TRUE(first.at("choices").at(0).at("finish_reason").is_null());
  EXPECT_TRUE(first.at("usage").is_null());
  auto last = json::parse(
      render_chunk(Endpoint::kChatCompletions, m, delta(0, "", false, "length"), false));
  EXPECT_EQ(last.at("choices").at(0).at("finish_reason"), "length");
  EXPECT_TRUE(last.at("choices").at(0).at("delta").as_object().empty());
  auto u = json::parse(render_usage_chunk(Endpoint::kChatCompletions, m, {3, 4, 0}));
  EXPECT_TRUE(u.at("choices").as_array().empty());
  EXPECT_EQ(u.at("usage").at("completion_tokens"), 4);
  auto c = json::parse(render_chunk(Endpoint::kCompletions, m, delta(1, "x", false, ""), false));
  EXPECT_EQ(c.at("object"), "text_completion");
  EXPECT_EQ(c.at("choices").at(0).at("text"), "x");
}

std::string all_byte_values() {
  std::string s;
  for (int c = 0; c < 256; ++c)
    s += static_cast<char>(c);
  return s;
}

// render_chunk writes its JSON by hand; its bytes must be what Boost.JSON renders for the same
// object, for any text (every byte value, quotes, control characters, UTF-8).
TEST(OpenAiRenderTest, ChunkBytesAreBoostJsonsRendering) {
  auto reference = [](Endpoint e, const ResponseMeta &meta, const ChoiceDelta &d, bool usage) {
    const bool chat = e == Endpoint::kChatCompletions;
    json::object o;
    o["id"] = meta.id;
    o["object"] = chat ? "chat.completion.chunk" : "text_completion";
    o["created"] = meta.created;
    o["model"] = meta.model;
    o["system_fingerprint"] = "gantry";
    json::object ch;
    ch["index"] = d.index;
    if (chat) {
      json::object delta;
      if (d.role)
        delta["role"] = "assistant";
      if (!d.text.empty() || d.role)
        delta["content"] = d.text;
      ch["delta"] = std::move(delta);
    } else {
      ch["text"] = d.text;
    }
    ch["logprobs"] = nullptr;
    ch["finish_reason"] =
        d.finish_reason.empty() ? json::value(nullptr) : json::value(json::string(d.finish_reason));
    o["choices"] = json::array{std::move(ch)};
    if (usage)
      o["usage"] = nullptr;
    return json::serialize(o);
  };
  const std::string every_byte = all_byte_values();
  const std::vector<std::string> texts = {"",
                                          "Hello",
                                          "a \"quoted\" \\ word",
                                          "\n\r\t\b\f\x01\x1f\x7f",
                                          "h\xc3\xa9llo \xe2\x9c\x93",
                                          every_byte,
                                          std::string(3000, 'x') + "\""};
  const ResponseMeta metas[] = {{"chatcmpl-1", "stories", 1},
                                {"cmpl-\"x\"\n", "m\\odel", -5},
                                {"", "", 9223372036854775807LL}};
  int checked = 0;
  for (const auto &meta : metas)
    for (const auto &text : texts)
      for (Endpoint e : {Endpoint::kChatCompletions, Endpoint::kCompletions})
        for (bool role : {false, true})
          for (std::string_view fin : {std::string_view(), std::string_view("stop")})
            for (bool usage : {false, true}) {
              ChoiceDelta d;
              d.index = static_cast<int>(text.size() % 3);
              d.text = text;
              d.role = role;
              d.finish_reason = fin;
              ASSERT_EQ(render_chunk(e, meta, d, usage), reference(e, meta, d, usage))
                  << "text of " << text.size() << " bytes";
              ++checked;
            }
  EXPECT_EQ(checked, 3 * 7 * 2 * 2 * 2 * 2);
  // The usage chunk, with and without a cost.
  for (const auto &meta : metas)
    for (std::optional<double> cost :
         {std::optional<double>(), std::optional<double>(0.0), std::optional<double>(0.00001234),
          std::optional<double>(1.5), std::optional<double>(123456.789)}) {
      const Usage u{12, 2147483000, 7};
      json::object o;
      o["id"] = meta.id;
      o["object"] = "chat.completion.chunk";
      o["created"] = meta.created;
      o["model"] = meta.model;
      o["system_fingerprint"] = "gantry";
      o["choices"] = json::array();
      json::object uo{{"prompt_tokens", u.prompt_tokens},
                      {"completion_tokens", u.completion_tokens},
                      {"total_tokens", int64_t{u.prompt_tokens} + u.completion_tokens},
                      {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
      if (cost)
        uo["cost_usd"] = *cost;
      o["usage"] = std::move(uo);
      EXPECT_EQ(render_usage_chunk(Endpoint::kChatCompletions, meta, u, cost), json::serialize(o));
    }
  // Tool-call fragments and logprobs go through Boost.JSON for their own values: the whole
  // chunk still reads back and re-renders to the same bytes.
  std::vector<ToolCallDelta> calls(1);
  calls[0].index = 0;
  calls[0].id = "call_1";
  calls[0].name = "get_weather";
  calls[0].arguments = "{\"city\":\"Paris\"}";
  std::vector<TokenLogprob> lps(1);
  lps[0].token = "Hi";
  lps[0].bytes = "Hi";
  lps[0].logprob = -0.25;
  ChoiceDelta d;
  d.tool_calls = &calls;
  const std::string with_calls = render_chunk(Endpoint::kChatCompletions, metas[0], d, false);
  EXPECT_EQ(json::serialize(json::parse(with_calls)), with_calls);
  EXPECT_EQ(json::parse(with_calls)
                .at("choices")
                .at(0)
                .at("delta")
                .at("tool_calls")
                .at(0)
                .at("function")
                .at("name"),
            "get_weather");
  d.tool_calls = nullptr;
  d.text = "Hi";
  d.logprobs = &lps;
  for (Endpoint e : {Endpoint::kChatCompletions, Endpoint::kCompletions}) {
    const std::string with_lps = render_chunk(e, metas[0], d, true);
    EXPECT_EQ(json::serialize(json::parse(with_lps)), with_lps);
    EXPECT_FALSE(json::parse(with_lps).at("choices").at(0).at("logprobs").is_null());
  }
}

// render_response is written by hand too: the same bytes as Boost.JSON's rendering.
TEST(OpenAiRenderTest, ResponseBytesAreBoostJsonsRendering) {
  auto reference = [](Endpoint e, const ResponseMeta &meta, const std::vector<Choice> &choices,
                      const Usage &u) {
    const bool chat = e == Endpoint::kChatCompletions;
    json::object o;
    o["id"] = meta.id;
    o["object"] = chat ? "chat.completion" : "text_completion";
    o["created"] = meta.created;
    o["model"] = meta.model;
    o["system_fingerprint"] = "gantry";
    json::array arr;
    for (const auto &c : choices) {
      json::object ch;
      ch["index"] = c.index;
      if (chat)
        ch["message"] =
            json::object{{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
      else
        ch["text"] = c.text;
      ch["logprobs"] = nullptr;
      ch["finish_reason"] = c.finish_reason.empty() ? json::value(nullptr)
                                                    : json::value(json::string(c.finish_reason));
      arr.push_back(std::move(ch));
    }
    o["choices"] = std::move(arr);
    o["usage"] = {{"prompt_tokens", u.prompt_tokens},
                  {"completion_tokens", u.completion_tokens},
                  {"total_tokens", int64_t{u.prompt_tokens} + u.completion_tokens},
                  {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
    return json::serialize(o);
  };
  const std::string every_byte = all_byte_values();
  std::vector<std::vector<Choice>> sets(4);
  sets[1].push_back({});
  sets[1][0].text = "Hello, \"world\"\n";
  sets[1][0].finish_reason = "stop";
  for (int i = 0; i < 3; ++i) {
    Choice c;
    c.index = i;
    c.text = i == 1 ? every_byte : std::string(i * 50, 'a');
    c.finish_reason = i == 2 ? "length" : "";
    sets[2].push_back(c);
  }
  sets[3].push_back({});
  sets[3][0].text = "h\xc3\xa9llo";
  const ResponseMeta meta{"chatcmpl-\"q\"", "m\\1", 1733400000};
  for (Endpoint e : {Endpoint::kChatCompletions, Endpoint::kCompletions})
    for (const auto &set : sets)
      EXPECT_EQ(render_response(e, meta, set, {5, 7, 2}), reference(e, meta, set, {5, 7, 2}));
  // Tool calls (content null when there is no text) and logprobs: Boost.JSON's own values
  // inside; the whole reads back and re-renders to the same bytes.
  Choice call;
  call.tool_calls.push_back({"call_1", "get_weather", "{\"city\":\"Paris\"}"});
  call.finish_reason = "tool_calls";
  Choice lp;
  lp.text = "Hi";
  lp.logprobs = std::vector<TokenLogprob>(1);
  (*lp.logprobs)[0].token = "Hi";
  (*lp.logprobs)[0].bytes = "Hi";
  for (Endpoint e : {Endpoint::kChatCompletions, Endpoint::kCompletions}) {
    const std::string r = render_response(e, meta, {call, lp}, {1, 2, 0});
    EXPECT_EQ(json::serialize(json::parse(r)), r);
  }
  const auto j = json::parse(render_response(Endpoint::kChatCompletions, meta, {call}, {1, 2, 0}));
  EXPECT_TRUE(j.at("choices").at(0).at("message").at("content").is_null());
  EXPECT_EQ(j.at("choices").at(0).at("message").at("tool_calls").at(0).at("function").at("name"),
            "get_weather");
}

constexpr const char *kTool =
    R"({"type":"function","function":{"name":"get_weather","description":"d",)"
    R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}})";

std::string with(const std::string &fields) {
  return R"({"model":"m","messages":[{"role":"user","content":"x"}],)" + fields + "}";
}

TEST(OpenAiToolsTest, ParsesToolsChoiceAndHistory) {
  auto r = chat(R"({"model":"m","tools":[)" + std::string(kTool) +
                R"(],"tool_choice":{"type":"function","function":{"name":"get_weather"}},
    "parallel_tool_calls":false,"messages":[{"role":"user","content":"Paris?"},
    {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
      "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
    {"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"18C"}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->tools.size(), 1u);
  EXPECT_EQ(r->tools[0].name, "get_weather");
  EXPECT_EQ(r->tools[0].description, "d");
  EXPECT_EQ(json::parse(r->tools[0].parameters),
            json::parse(R"({"type":"object","properties":{"city":{"type":"string"}}})"));
  EXPECT_TRUE(r->tools[0].strict);
  EXPECT_EQ(r->tool_choice.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(r->tool_choice.function, "get_weather");
  EXPECT_FALSE(r->parallel_tool_calls);
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[1].content, "");
  ASSERT_EQ(r->messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(r->messages[1].tool_calls[0].id, "call_1");
  EXPECT_EQ(r->messages[1].tool_calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(r->messages[2].tool_call_id, "call_1");
  EXPECT_EQ(r->messages[2].name, "get_weather");

  for (const char *mode : {"auto", "none", "required"}) {
    auto m = chat(with(R"("tools":[)" + std::string(kTool) + R"(],"tool_choice":")" + mode + "\""));
    ASSERT_TRUE(m.ok()) << mode << ": " << m.error().message;
  }
  auto defaults = chat(with(R"("tools":[)" + std::string(kTool) + "]"));
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_TRUE(defaults->parallel_tool_calls);
  // The legacy forms with nothing in them are harmless.
  EXPECT_TRUE(chat(with(R"("functions":[],"function_call":"none")")).ok());
}

TEST(OpenAiToolsTest, BadToolInputNamesTheField) {
  const std::string fn = R"({"type":"function","function":)";
  std::string many = R"("tools":[)";
  for (int i = 0; i < 129; ++i)
    many += (i ? "," : "") + fn + R"({"name":"f)" + std::to_string(i) + R"("}})";
  many += "]";
  const std::string huge = R"("tools":[)" + fn + R"({"name":"f","parameters":{"description":")" +
                           std::string(70000, 'x') + R"("}}}])";
  const std::pair<std::string, std::string> cases[] = {
      {with(R"("tools":{})"), "tools"},
      {with(many), "tools"},
      {with(R"("tools":[1])"), "tools[0]"},
      {with(R"("tools":[{"type":"code","function":{"name":"f"}}])"), "tools[0].type"},
      {with(R"("tools":[)" + fn + R"({"description":"no name"}}])"), "tools[0].function.name"},
      {with(R"("tools":[)" + fn + R"({"name":"has space"}}])"), "tools[0].function.name"},
      {with(R"("tools":[)" + fn + R"({"name":")" + std::string(65, 'a') + R"("}}])"),
       "tools[0].function.name"},
      {with(R"("tools":[)" + fn + R"({"name":"f","parameters":"{}"}}])"),
       "tools[0].function.parameters"},
      {with(R"("tools":[)" + fn + R"({"name":"f","parameters":[1]}}])"),
       "tools[0].function.parameters"},
      {with(R"("tools":[)" + fn + R"({"name":"f","parameters":{"type":7}}}])"),
       "tools[0].function.parameters"},
      {with(huge), "tools[0].function.parameters"},
      // Malformed schemas are refused even under tool_choice auto, where nothing enforces them.
      {with(R"("tools":[)" + fn + R"({"name":"f","parameters":{"type":"frobnicate"}}}])"),
       "tools[0].function.parameters"},
      {with(R"("tools":[)" + fn + R"({"name":"f","parameters":{"properties":[1]}}}])"),
       "tools[0].function.parameters"},
      {with(R"("tools":[)" + fn +
            R"({"name":"f","parameters":{"properties":{"a":{"$ref":"#/$defs/x"}}}}}])"),
       "tools[0].function.parameters"},
      {with(R"("tools":[)" + fn + R"({"name":"f","bogus":1}}])"), "tools[0].function.bogus"},
      {with(R"("tools":[)" + fn + R"({"name":"f"}},)" + fn + R"({"name":"f"}}])"),
       "tools[1].function.name"},
      {with(R"("tool_choice":"required")"), "tool_choice"},
      {with(R"("tool_choice":"sometimes","tools":[)" + std::string(kTool) + "]"), "tool_choice"},
      {with(R"("tool_choice":{"type":"function","function":{"name":"other"}},"tools":[)" +
            std::string(kTool) + "]"),
       "tool_choice.function.name"},
      {with(R"("parallel_tool_calls":"yes")"), "parallel_tool_calls"},
      {with(R"("functions":[{"name":"f"}])"), "functions"},
      {with(R"("function_call":{"name":"f"})"), "function_call"},
      {R"({"model":"m","messages":[{"role":"tool","content":"x"}]})", "messages[0].tool_call_id"},
      {R"({"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function",
        "function":{"name":"f","arguments":"{}"}}]}]})",
       "messages[0].tool_calls[0].id"},
      {R"({"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c",
        "function":{"name":"f","arguments":{}}}]}]})",
       "messages[0].tool_calls[0].function.arguments"},
      {R"({"model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}]})",
       "messages[0].tool_calls"},
  };
  for (const auto &[body, param] : cases) {
    auto r = chat(body);
    ASSERT_FALSE(r.ok()) << body.substr(0, 200);
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << body.substr(0, 200);
    EXPECT_EQ(r.error().param, param) << body.substr(0, 200) << " -> " << r.error().message;
  }
}

TEST(OpenAiToolsTest, UnsupportedButWellFormedParametersAreAccepted) {
  // Grammar enforcement (a forced call) is where an unsupported keyword becomes a 400.
  auto r = chat(with(R"("tools":[{"type":"function","function":{"name":"f","parameters":)"
                     R"({"type":"object","properties":{"n":{"type":"integer","multipleOf":2},)"
                     R"("u":{"type":"string","format":"uri"}}}}}])"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->tools.size(), 1u);
}

TEST(OpenAiToolsTest, RendersToolCallsInOpenAIsShapes) {
  const ResponseMeta m{"chatcmpl-1", "m", 1};
  Choice c;
  c.finish_reason = "tool_calls";
  c.tool_calls.push_back({"call_1", "get_weather", R"({"city":"Paris"})"});
  auto r = json::parse(render_response(Endpoint::kChatCompletions, m, {c}, {5, 1, 0}));
  const auto &msg = r.at("choices").at(0).at("message");
  EXPECT_TRUE(msg.at("content").is_null());
  EXPECT_EQ(msg.at("tool_calls"), json::parse(R"([{"id":"call_1","type":"function",
    "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}])"));
  EXPECT_EQ(r.at("choices").at(0).at("finish_reason"), "tool_calls");
  c.text = "Checking.";
  auto with_text = json::parse(render_response(Endpoint::kChatCompletions, m, {c}, {5, 1, 0}));
  EXPECT_EQ(with_text.at("choices").at(0).at("message").at("content"), "Checking.");
  // Plain replies keep no tool_calls key.
  Choice plain;
  plain.text = "hi";
  auto p = json::parse(render_response(Endpoint::kChatCompletions, m, {plain}, {5, 1, 0}));
  EXPECT_FALSE(p.at("choices").at(0).at("message").as_object().contains("tool_calls"));

  std::vector<ToolCallDelta> first{{0, "call_1", "get_weather", ""}};
  ChoiceDelta d;
  d.tool_calls = &first;
  auto chunk = json::parse(render_chunk(Endpoint::kChatCompletions, m, d, false));
  EXPECT_EQ(chunk.at("choices").at(0).at("delta"), json::parse(R"({"tool_calls":[{"index":0,
    "id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]})"));
  std::vector<ToolCallDelta> more{{0, "", "", "{\"city\""}};
  d.tool_calls = &more;
  chunk = json::parse(render_chunk(Endpoint::kChatCompletions, m, d, false));
  EXPECT_EQ(chunk.at("choices").at(0).at("delta"),
            json::parse(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\""}}]})"));
}

TEST(OpenAiParseTest, LogprobsLogitBiasAndSeveralPrompts) {
  auto r = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,
    "top_logprobs":20,"logit_bias":{"15":-100,"7":2.5}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 20);
  ASSERT_EQ(r->logit_bias.size(), 2u);
  EXPECT_EQ(r->logit_bias[0], (std::pair<int32_t, float>{15, -100.0f}));
  EXPECT_EQ(r->logit_bias[1], (std::pair<int32_t, float>{7, 2.5f}));
  auto plain = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  EXPECT_FALSE(plain->logprobs);

  auto legacy =
      parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":"a","logprobs":3})");
  ASSERT_TRUE(legacy.ok()) << legacy.error().message;
  EXPECT_TRUE(legacy->logprobs);
  EXPECT_EQ(legacy->top_logprobs, 3);
  auto zero =
      parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":"a","logprobs":0})");
  EXPECT_TRUE(zero->logprobs);
  EXPECT_EQ(zero->top_logprobs, 0);
  for (const char *off : {"false", "null"}) {
    auto o = parse_inference_request(Endpoint::kCompletions,
                                     std::string(R"({"model":"m","prompt":"a","logprobs":)") + off +
                                         "}");
    ASSERT_TRUE(o.ok()) << off;
    EXPECT_FALSE(o->logprobs) << off;
  }
}

TEST(OpenAiParseTest, BadLogprobsBiasAndPromptsNameTheField) {
  const std::string msgs = R"({"model":"m","messages":[{"role":"user","content":"x"}],)";
  const std::string prompt = R"({"model":"m","prompt":"a",)";
  std::string many = R"({"model":"m","prompt":[)";
  for (int i = 0; i <= kMaxPrompts; ++i)
    many += std::string(i ? "," : "") + "\"p\"";
  many += "]}";
  std::string big_bias = msgs + R"("logit_bias":{)";
  for (int i = 0; i <= kMaxLogitBias; ++i)
    big_bias += std::string(i ? "," : "") + "\"" + std::to_string(i) + "\":1";
  big_bias += "}}";
  struct Case {
    Endpoint endpoint;
    std::string body;
    const char *param;
  } cases[] = {
      {Endpoint::kChatCompletions, msgs + R"("logprobs":true,"top_logprobs":21})", "top_logprobs"},
      {Endpoint::kChatCompletions, msgs + R"("logprobs":true,"top_logprobs":-1})", "top_logprobs"},
      {Endpoint::kChatCompletions, msgs + R"("top_logprobs":2})", "top_logprobs"},
      {Endpoint::kChatCompletions, msgs + R"("logprobs":false,"top_logprobs":2})", "top_logprobs"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"abc":1}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"-1":1}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"1.5":1}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"99999999999":1}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"5":101}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":{"5":"high"}})", "logit_bias"},
      {Endpoint::kChatCompletions, msgs + R"("logit_bias":[1]})", "logit_bias"},
      {Endpoint::kChatCompletions, big_bias, "logit_bias"},
      {Endpoint::kCompletions, prompt + R"("logprobs":21})", "logprobs"},
      {Endpoint::kCompletions, prompt + R"("logprobs":true})", "logprobs"},
      {Endpoint::kCompletions, prompt + R"("logprobs":-1})", "logprobs"},
      {Endpoint::kCompletions, many, "prompt"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":[]})", "prompt"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":["a",[1]]})", "prompt[1]"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":[[1],[]]})", "prompt[1]"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":[[1],["x"]]})", "prompt[1]"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":[1,"x"]})", "prompt"},
      {Endpoint::kCompletions, R"({"model":"m","prompt":["a","b","c","d","e"],"n":16})", "n"},
  };
  for (const auto &c : cases) {
    auto r = parse_inference_request(c.endpoint, c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << " -> " << r.error().message;
  }
}

TEST(OpenAiRenderTest, LogprobsInBothShapesAndNullWithout) {
  ResponseMeta m{"x-1", "stories", 1};
  std::vector<TokenLogprob> lps(2);
  lps[0].token = "Hi";
  lps[0].bytes = "Hi";
  lps[0].logprob = -0.25;
  lps[0].top = {{"Hi", "Hi", -0.25}, {"\xef\xbf\xbd", "\xe2", -2.0}};
  lps[1].token = "\xef\xbf\xbd"; // a byte-fallback piece: replaced in token, raw in bytes
  lps[1].bytes = "\xe2";
  lps[1].logprob = -INFINITY;
  lps[1].text_offset = 2;
  Choice c;
  c.text = "Hi";
  c.finish_reason = "stop";
  c.logprobs = lps;
  auto chat_j = json::parse(render_response(Endpoint::kChatCompletions, m, {c}, {1, 2, 0}));
  const auto &lp = chat_j.at("choices").at(0).at("logprobs");
  EXPECT_TRUE(lp.at("refusal").is_null());
  const auto &content = lp.at("content").as_array();
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0].at("token"), "Hi");
  EXPECT_EQ(content[0].at("logprob").as_double(), -0.25);
  EXPECT_EQ(content[0].at("bytes"), (json::array{72, 105}));
  EXPECT_EQ(content[0].at("top_logprobs").at(1).at("bytes"), json::array{226});
  EXPECT_EQ(content[1].at("bytes"), json::array{226});
  EXPECT_EQ(content[1].at("logprob").as_double(), -9999.0) << "JSON has no -Infinity";

  auto legacy = json::parse(render_response(Endpoint::kCompletions, m, {c}, {1, 2, 0}));
  const auto &l = legacy.at("choices").at(0).at("logprobs");
  EXPECT_EQ(l.at("tokens"), (json::array{"Hi", "\xef\xbf\xbd"}));
  EXPECT_EQ(l.at("token_logprobs").at(0).as_double(), -0.25);
  EXPECT_EQ(l.at("top_logprobs").at(0).at("Hi").as_double(), -0.25);
  EXPECT_EQ(l.at("text_offset"), (json::array{0, 2}));

  ChoiceDelta d = delta(0, "Hi", false, "");
  d.logprobs = &lps;
  auto chunk = json::parse(render_chunk(Endpoint::kChatCompletions, m, d, false));
  EXPECT_EQ(chunk.at("choices").at(0).at("logprobs").at("content").as_array().size(), 2u);

  c.logprobs.reset();
  auto none = json::parse(render_response(Endpoint::kChatCompletions, m, {c}, {1, 2, 0}));
  EXPECT_TRUE(none.at("choices").at(0).at("logprobs").is_null());
  auto none_chunk =
      json::parse(render_chunk(Endpoint::kCompletions, m, delta(0, "x", false, ""), false));
  EXPECT_TRUE(none_chunk.at("choices").at(0).at("logprobs").is_null());
}

} // namespace
} // namespace gantry::api
