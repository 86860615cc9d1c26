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
  EXPECT_EQ(a->prompt, "abc");
  auto b = parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":[1,2,3]})");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b->prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  auto c = parse_inference_request(Endpoint::kCompletions, R"({"model":"m","prompt":["a","b"]})");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().param, "prompt");
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
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true})", "logprobs"},
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

} // namespace
} // namespace gantry::api
