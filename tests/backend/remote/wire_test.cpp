#include "backend/remote/wire.h"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace gantry::backend::remote {
namespace {
namespace json = boost::json;

api::InferenceRequest chat(bool stream) {
  api::InferenceRequest r;
  r.endpoint = api::Endpoint::kChatCompletions;
  r.model = "client-name";
  r.messages = {{"system", "be brief"}, {"user", "hi"}, {"user", "there"}};
  r.stream = stream;
  r.stop = {"\n\n"};
  r.sampling.temperature = 0.0f;
  return r;
}

TEST(OpenAIWire, RequestRewritesModelAndAsksForUsageWhenStreaming) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  auto body = codec->request_body(chat(true), "upstream-id", true, 77);
  ASSERT_TRUE(body.ok());
  json::object o = json::parse(*body).as_object();
  EXPECT_EQ(o["model"].as_string(), "upstream-id");
  EXPECT_TRUE(o["stream"].as_bool());
  EXPECT_TRUE(o["stream_options"].as_object()["include_usage"].as_bool());
  EXPECT_EQ(o["max_tokens"].as_int64(), 77);
  EXPECT_EQ(o["messages"].as_array().size(), 3u);
  EXPECT_EQ(o["stop"].as_array()[0].as_string(), "\n\n");
  auto plain = json::parse(*codec->request_body(chat(false), "m", false, 5)).as_object();
  EXPECT_FALSE(plain.contains("stream_options"));
  EXPECT_EQ(*codec->path(api::Endpoint::kCompletions), "/completions");
}

TEST(OpenAIWire, HostedKindSendsNoEngineExtensions) {
  auto r = chat(false);
  r.sampling.top_k = 5;
  auto compat =
      json::parse(*make_codec(BackendKind::kOpenAICompatible)->request_body(r, "m", false, 5));
  auto hosted = json::parse(*make_codec(BackendKind::kOpenAI)->request_body(r, "m", false, 5));
  EXPECT_TRUE(compat.as_object().contains("top_k"));
  EXPECT_FALSE(hosted.as_object().contains("top_k"));
  EXPECT_EQ(make_codec(BackendKind::kOpenAI)->auth_headers("sk-x")[0].value, "Bearer sk-x");
}

TEST(OpenAIWire, ParsesResponseAndUsage) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  auto r = codec->parse_response(
      std::string(R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Hel)") +
      "\xff" +
      R"(lo"},)"
      R"("finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":3,)"
      R"("prompt_tokens_details":{"cached_tokens":8}}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->choices.size(), 1u);
  EXPECT_EQ(r->choices[0].text, "Hel\xEF\xBF\xBDlo") << "invalid UTF-8 repaired";
  EXPECT_EQ(r->choices[0].finish_reason, "length");
  ASSERT_TRUE(r->usage);
  EXPECT_EQ(r->usage->prompt_tokens, 12);
  EXPECT_EQ(r->usage->completion_tokens, 3);
  EXPECT_EQ(r->usage->cached_tokens, 8);
}

TEST(OpenAIWire, MalformedBodiesAreCleanErrors) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  for (std::string_view bad :
       {"", "not json", "[1,2]", "{\"choices\":3}", "{\"choices\":[", "{}"}) {
    auto r = codec->parse_response(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  }
}

TEST(OpenAIWire, StreamChunksUsageAndDone) {
  auto d = make_codec(BackendKind::kOpenAICompatible)->stream_decoder();
  auto s1 =
      d->on_event({"", R"({"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]})"});
  ASSERT_TRUE(s1.ok());
  ASSERT_EQ(s1->deltas.size(), 1u);
  EXPECT_EQ(s1->deltas[0].text, "Hi");
  auto s2 = d->on_event({"", R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"});
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->deltas[0].finish_reason, "stop");
  auto s3 =
      d->on_event({"", R"({"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}})"});
  ASSERT_TRUE(s3.ok());
  ASSERT_TRUE(s3->usage);
  EXPECT_EQ(s3->usage->completion_tokens, 2);
  EXPECT_TRUE(d->on_event({"", "[DONE]"})->done);
  EXPECT_FALSE(d->on_event({"", "{\"choices\":[{\"delta\":"}).ok());
  auto err = d->on_event({"", R"({"error":{"message":"boom"}})"});
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.error().message.find("boom"), std::string::npos);
}

TEST(OpenAIWire, ErrorsAreNormalised) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  auto ctx = codec->error_from(
      400,
      R"({"error":{"message":"This model's maximum context length is 4096 tokens","code":"context_length_exceeded"}})");
  EXPECT_EQ(ctx.code, ErrorCode::kContextLengthExceeded);
  EXPECT_EQ(codec->error_from(429, R"({"error":{"message":"slow down"}})").code,
            ErrorCode::kRateLimited);
  EXPECT_EQ(codec->error_from(401, R"({"error":{"message":"bad key"}})").code,
            ErrorCode::kUnavailable)
      << "the backend's auth failure is not the client's";
  EXPECT_EQ(codec->error_from(503, "<html>oops</html>").code, ErrorCode::kUnavailable);
  EXPECT_EQ(codec->error_from(422, R"({"detail":"bad"})").code, ErrorCode::kInvalidArgument);
}

TEST(Wire, ScrubRemovesCredentials) {
  const std::string msg = "failed calling https://admin:hunter2secret@10.0.0.1/v1 with "
                          "Authorization: Bearer abcdefghijklmnop and key sk-proj-ABCDEFGH1234 "
                          "or MYSECRETKEY99";
  const std::string s = scrub_upstream_message(msg, {"MYSECRETKEY99"});
  EXPECT_EQ(s.find("hunter2"), std::string::npos) << s;
  EXPECT_EQ(s.find("abcdefghijklmnop"), std::string::npos) << s;
  EXPECT_EQ(s.find("sk-proj"), std::string::npos) << s;
  EXPECT_EQ(s.find("MYSECRETKEY99"), std::string::npos) << s;
  EXPECT_NE(s.find("https://***@10.0.0.1"), std::string::npos) << s;
  EXPECT_LE(scrub_upstream_message(std::string(100000, 'a'), {}, 512).size(), 515u);
}

TEST(Wire, RetryAfterHeaders) {
  EXPECT_EQ(retry_after_ms(std::string_view("2"), std::nullopt), 2000);
  EXPECT_EQ(retry_after_ms(std::string_view("2"), std::string_view("150")), 150);
  EXPECT_EQ(retry_after_ms(std::string_view("Wed, 21 Oct 2015 07:28:00 GMT"), std::nullopt), 0);
  EXPECT_EQ(retry_after_ms(std::nullopt, std::nullopt), 0);
  EXPECT_EQ(retry_after_ms(std::string_view("-3"), std::nullopt), 0);
}

TEST(Wire, ModelDiscovery) {
  auto ids = parse_model_list(R"({"object":"list","data":[{"id":"llama"}]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*choose_upstream_model("", *ids, "b1"), "llama");
  auto two = *parse_model_list(R"({"data":[{"id":"a"},{"id":"b"}]})");
  auto amb = choose_upstream_model("", two, "http://127.0.0.1:1/v1");
  ASSERT_FALSE(amb.ok());
  EXPECT_NE(amb.error().message.find("name the one"), std::string::npos);
  EXPECT_EQ(*choose_upstream_model("b", two, "x"), "b");
  EXPECT_FALSE(parse_model_list("nope").ok());
}

TEST(AnthropicWire, RequestTranslation) {
  auto codec = make_codec(BackendKind::kAnthropic);
  auto r = chat(true);
  r.sampling.temperature = 1.7f;
  auto body = codec->request_body(r, "claude-x", true, 64);
  ASSERT_TRUE(body.ok());
  json::object o = json::parse(*body).as_object();
  EXPECT_EQ(o["model"].as_string(), "claude-x");
  EXPECT_EQ(o["system"].as_string(), "be brief");
  ASSERT_EQ(o["messages"].as_array().size(), 1u) << "consecutive user turns joined";
  EXPECT_EQ(o["messages"].as_array()[0].as_object()["content"].as_string(), "hi\n\nthere");
  EXPECT_EQ(o["max_tokens"].as_int64(), 64);
  EXPECT_DOUBLE_EQ(o["temperature"].as_double(), 1.0);
  EXPECT_EQ(o["stop_sequences"].as_array().size(), 1u);
  EXPECT_TRUE(o["stream"].as_bool());
  r.n = 2;
  EXPECT_FALSE(codec->request_body(r, "m", false, 5).ok());
  EXPECT_FALSE(codec->path(api::Endpoint::kCompletions).ok());
  auto h = codec->auth_headers("k");
  EXPECT_EQ(h.size(), 2u);
}

TEST(AnthropicWire, ResponseAndUsage) {
  auto codec = make_codec(BackendKind::kAnthropic);
  auto r = codec->parse_response(
      R"({"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello"}],)"
      R"("stop_reason":"max_tokens","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":4}})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->choices[0].text, "Hello");
  EXPECT_EQ(r->choices[0].finish_reason, "length");
  EXPECT_EQ(r->usage->prompt_tokens, 14);
  EXPECT_EQ(r->usage->cached_tokens, 4);
  EXPECT_EQ(r->usage->completion_tokens, 5);
}

TEST(AnthropicWire, StreamEvents) {
  auto d = make_codec(BackendKind::kAnthropic)->stream_decoder();
  ASSERT_TRUE(
      d->on_event(
           {"message_start",
            R"({"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}})"})
          .ok());
  ASSERT_TRUE(d->on_event({"ping", R"({"type":"ping"})"}).ok());
  auto t = d->on_event(
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})"});
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->deltas.size(), 1u);
  EXPECT_EQ(t->deltas[0].text, "Hi");
  auto md = d->on_event(
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}})"});
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->deltas[0].finish_reason, "stop");
  auto stop = d->on_event({"message_stop", R"({"type":"message_stop"})"});
  ASSERT_TRUE(stop.ok());
  EXPECT_TRUE(stop->done);
  ASSERT_TRUE(stop->usage);
  EXPECT_EQ(stop->usage->prompt_tokens, 9);
  EXPECT_EQ(stop->usage->completion_tokens, 7);
  auto err = d->on_event(
      {"error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"});
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.error().code, ErrorCode::kUnavailable);
}

TEST(AnthropicWire, Errors) {
  auto codec = make_codec(BackendKind::kAnthropic);
  EXPECT_EQ(
      codec
          ->error_from(
              400,
              R"({"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens > 200000 maximum"}})")
          .code,
      ErrorCode::kContextLengthExceeded);
  EXPECT_EQ(
      codec
          ->error_from(429, R"({"type":"error","error":{"type":"rate_limit_error","message":"x"}})")
          .code,
      ErrorCode::kRateLimited);
  EXPECT_EQ(
      codec
          ->error_from(529, R"({"type":"error","error":{"type":"overloaded_error","message":"x"}})")
          .code,
      ErrorCode::kUnavailable);
  EXPECT_EQ(codec->error_from(401, "garbage").code, ErrorCode::kUnavailable);
}

api::InferenceRequest tool_chat() {
  api::InferenceRequest r = chat(false);
  api::FunctionTool t;
  t.name = "get_weather";
  t.description = "d";
  t.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  r.tools = {t};
  r.tool_choice.mode = api::ToolChoice::Mode::kFunction;
  r.tool_choice.function = "get_weather";
  r.parallel_tool_calls = false;
  api::ChatMessage call("assistant", "");
  call.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"},
                     {"call_2", "get_weather", R"({"city":"Rome"})"}};
  api::ChatMessage r1("tool", "18C"), r2("tool", "25C");
  r1.tool_call_id = "call_1";
  r2.tool_call_id = "call_2";
  r2.name = "get_weather";
  r.messages = {{"system", "be brief"}, {"user", "weather?"}, call, r1, r2};
  return r;
}

TEST(OpenAIWire, ToolsAndToolHistoryPassThrough) {
  auto o = json::parse(*make_codec(BackendKind::kOpenAI)->request_body(tool_chat(), "m", false, 5))
               .as_object();
  EXPECT_EQ(o["tools"], json::parse(R"([{"type":"function","function":{"name":"get_weather",
    "description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])"));
  EXPECT_EQ(o["tool_choice"],
            json::parse(R"({"type":"function","function":{"name":"get_weather"}})"));
  EXPECT_EQ(o["parallel_tool_calls"], false);
  const auto &msgs = o["messages"].as_array();
  ASSERT_EQ(msgs.size(), 5u);
  EXPECT_EQ(msgs[2], json::parse(R"({"role":"assistant","content":null,"tool_calls":[
    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]})"));
  EXPECT_EQ(msgs[3], json::parse(R"({"role":"tool","content":"18C","tool_call_id":"call_1"})"));
  EXPECT_EQ(msgs[4], json::parse(R"({"role":"tool","content":"25C","tool_call_id":"call_2",
    "name":"get_weather"})"));
  // Without tools nothing tool-related is sent.
  auto plain =
      json::parse(*make_codec(BackendKind::kOpenAI)->request_body(chat(false), "m", false, 5));
  EXPECT_FALSE(plain.as_object().contains("tools"));
  EXPECT_FALSE(plain.as_object().contains("parallel_tool_calls"));
}

TEST(OpenAIWire, ToolCallsFromBodiesAndChunks) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  auto r = codec->parse_response(R"({"choices":[{"index":0,"message":{"role":"assistant",
    "content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"f",
    "arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r->choices[0].tool_calls[0].id, "call_9");
  EXPECT_EQ(r->choices[0].tool_calls[0].name, "f");
  EXPECT_EQ(r->choices[0].tool_calls[0].arguments, R"({"a":1})");
  EXPECT_EQ(r->choices[0].finish_reason, "tool_calls");
  EXPECT_EQ(r->choices[0].text, "");

  auto d = codec->stream_decoder();
  auto first = d->on_event({"", R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,
    "id":"call_2","type":"function","function":{"name":"g","arguments":""}}]}}]})"});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->deltas.size(), 1u);
  ASSERT_EQ(first->deltas[0].tool_calls.size(), 1u);
  EXPECT_EQ(first->deltas[0].tool_calls[0].index, 1);
  EXPECT_EQ(first->deltas[0].tool_calls[0].id, "call_2");
  EXPECT_EQ(first->deltas[0].tool_calls[0].name, "g");
  auto more = d->on_event({"", R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,
    "function":{"arguments":"{\"b\":"}}]}}]})"});
  ASSERT_TRUE(more.ok());
  ASSERT_EQ(more->deltas.size(), 1u);
  EXPECT_EQ(more->deltas[0].tool_calls[0].arguments, "{\"b\":");
  EXPECT_TRUE(more->deltas[0].tool_calls[0].id.empty());
  auto fin =
      d->on_event({"", R"({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})"});
  ASSERT_TRUE(fin.ok());
  EXPECT_EQ(fin->deltas[0].finish_reason, "tool_calls");
}

TEST(AnthropicWire, ToolsTranslated) {
  auto codec = make_codec(BackendKind::kAnthropic);
  auto body = codec->request_body(tool_chat(), "claude", false, 5);
  ASSERT_TRUE(body.ok()) << body.error().message;
  auto o = json::parse(*body).as_object();
  EXPECT_EQ(o["tools"], json::parse(R"([{"name":"get_weather","description":"d",
    "input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}])"));
  EXPECT_EQ(
      o["tool_choice"],
      json::parse(R"({"type":"tool","name":"get_weather","disable_parallel_tool_use":true})"));
  EXPECT_EQ(o["system"], "be brief");
  EXPECT_EQ(o["messages"], json::parse(R"([
    {"role":"user","content":"weather?"},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
      {"type":"tool_use","id":"call_2","name":"get_weather","input":{"city":"Rome"}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
      {"type":"tool_result","tool_use_id":"call_2","content":"25C"}]}])"));
  auto r = tool_chat();
  r.tool_choice.mode = api::ToolChoice::Mode::kRequired;
  r.parallel_tool_calls = true;
  auto any = json::parse(*codec->request_body(r, "claude", false, 5)).as_object();
  EXPECT_EQ(any["tool_choice"], json::parse(R"({"type":"any"})"));
  r.messages[2].tool_calls[0].arguments = "[1]";
  auto bad = codec->request_body(r, "claude", false, 5);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().param, "messages[2].tool_calls[0].function.arguments");
}

TEST(AnthropicWire, ToolUseBackIntoToolCalls) {
  auto codec = make_codec(BackendKind::kAnthropic);
  auto r = codec->parse_response(R"({"type":"message","content":[{"type":"text","text":"On it."},
    {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
    "stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":4}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->choices[0].text, "On it.");
  EXPECT_EQ(r->choices[0].finish_reason, "tool_calls");
  ASSERT_EQ(r->choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r->choices[0].tool_calls[0].id, "toolu_1");
  EXPECT_EQ(r->choices[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(r->choices[0].tool_calls[0].arguments), json::parse(R"({"city":"Paris"})"));

  auto d = codec->stream_decoder();
  auto text = d->on_event({"content_block_delta", R"({"type":"content_block_delta","index":0,
    "delta":{"type":"text_delta","text":"On it."}})"});
  ASSERT_TRUE(text.ok());
  auto start = d->on_event({"content_block_start", R"({"type":"content_block_start","index":1,
    "content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}})"});
  ASSERT_TRUE(start.ok());
  ASSERT_EQ(start->deltas.size(), 1u);
  ASSERT_EQ(start->deltas[0].tool_calls.size(), 1u);
  EXPECT_EQ(start->deltas[0].tool_calls[0].index, 0);
  EXPECT_EQ(start->deltas[0].tool_calls[0].id, "toolu_1");
  EXPECT_EQ(start->deltas[0].tool_calls[0].name, "get_weather");
  std::string args;
  for (const char *part : {R"({\"city\")", R"(: \"Paris\"})"}) {
    auto step =
        d->on_event({"content_block_delta",
                     std::string(R"({"type":"content_block_delta","index":1,)") +
                         R"("delta":{"type":"input_json_delta","partial_json":")" + part + "\"}}"});
    ASSERT_TRUE(step.ok());
    ASSERT_EQ(step->deltas.size(), 1u);
    EXPECT_EQ(step->deltas[0].tool_calls[0].index, 0);
    args += step->deltas[0].tool_calls[0].arguments;
  }
  EXPECT_EQ(args, R"({"city": "Paris"})");
  auto md = d->on_event(
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use"}})"});
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->deltas[0].finish_reason, "tool_calls");
}

TEST(OpenAIWire, LogprobsBiasAndPromptsPassThroughUnchanged) {
  auto codec = make_codec(BackendKind::kOpenAI);
  auto c = chat(false);
  c.logprobs = true;
  c.top_logprobs = 4;
  c.logit_bias = {{15, -100.0f}, {7, 2.5f}};
  auto o = json::parse(*codec->request_body(c, "m", false, 5)).as_object();
  EXPECT_EQ(o.at("logprobs"), true);
  EXPECT_EQ(o.at("top_logprobs"), 4);
  EXPECT_EQ(o.at("logit_bias").at("15").to_number<double>(), -100.0);
  EXPECT_EQ(o.at("logit_bias").at("7").to_number<double>(), 2.5);
  auto plain = json::parse(*codec->request_body(chat(false), "m", false, 5)).as_object();
  EXPECT_FALSE(plain.contains("logprobs"));
  EXPECT_FALSE(plain.contains("logit_bias"));

  api::InferenceRequest comp;
  comp.endpoint = api::Endpoint::kCompletions;
  comp.prompts = {{"a", std::nullopt}, {"", std::vector<int32_t>{1, 2}}};
  comp.logprobs = true;
  comp.top_logprobs = 3;
  auto co = json::parse(*codec->request_body(comp, "m", false, 5)).as_object();
  EXPECT_EQ(co.at("logprobs"), 3) << "the legacy integer form";
  EXPECT_EQ(co.at("prompt"), (json::array{"a", json::array{1, 2}}));
  comp.prompts.resize(1);
  EXPECT_EQ(json::parse(*codec->request_body(comp, "m", false, 5)).at("prompt"), "a");
}

TEST(OpenAIWire, ParsesUpstreamLogprobsInBothShapesStreamedAndNot) {
  auto codec = make_codec(BackendKind::kOpenAICompatible);
  auto r = codec->parse_response(
      R"({"choices":[{"index":0,"message":{"content":"Hi"},"finish_reason":"stop","logprobs":)"
      R"({"content":[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":)"
      R"([{"token":"Hi","logprob":-0.5,"bytes":[72,105]},{"token":"Yo","logprob":-1.5,"bytes":null}]}],)"
      R"("refusal":null}}]})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->choices[0].logprobs.size(), 1u);
  const auto &t = r->choices[0].logprobs[0];
  EXPECT_EQ(t.token, "Hi");
  EXPECT_EQ(t.bytes, "Hi");
  EXPECT_EQ(t.logprob, -0.5);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[1].token, "Yo");
  EXPECT_EQ(t.top[1].bytes, "Yo") << "no bytes upstream: the token's text";

  auto legacy = codec->parse_response(
      R"({"choices":[{"index":2,"text":"a b","finish_reason":"length","logprobs":)"
      R"({"tokens":["a"," b"],"token_logprobs":[-0.1,null],"top_logprobs":[{"a":-0.1},{" b":-2}],)"
      R"("text_offset":[0,1]}}]})");
  ASSERT_TRUE(legacy.ok());
  EXPECT_EQ(legacy->choices[0].index, 2);
  const auto &lp = legacy->choices[0].logprobs;
  ASSERT_EQ(lp.size(), 2u);
  EXPECT_EQ(lp[1].token, " b");
  EXPECT_EQ(lp[1].logprob, -9999.0) << "null reads as OpenAI's impossible token";
  EXPECT_EQ(lp[1].top[0].logprob, -2.0);

  auto d = codec->stream_decoder();
  auto s = d->on_event(
      {"", R"({"choices":[{"index":0,"delta":{"content":""},"logprobs":{"content":)"
           R"([{"token":"é","logprob":-0.25,"bytes":[195,169],"top_logprobs":[]}]}}]})"});
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->deltas.size(), 1u) << "a chunk with only logprobs still counts";
  EXPECT_EQ(s->deltas[0].logprobs[0].bytes, "\xc3\xa9");
}

TEST(AnthropicWire, RefusesLogprobsAndLogitBiasByName) {
  auto codec = make_codec(BackendKind::kAnthropic);
  auto r = chat(false);
  r.logprobs = true;
  auto body = codec->request_body(r, "claude", false, 10);
  ASSERT_FALSE(body.ok());
  EXPECT_EQ(body.error().param, "logprobs");
  r.logprobs = false;
  r.logit_bias = {{1, 1.0f}};
  EXPECT_EQ(codec->request_body(r, "claude", false, 10).error().param, "logit_bias");
}

} // namespace
} // namespace gantry::backend::remote

namespace gantry::backend::remote {
namespace {

// The stream chunk decoder's document-free path must give exactly the DOM decoder's result for
// every chunk it accepts, and accept the shapes engines send for text (else it saves nothing).
std::string describe(const Result<StreamStep> &r) {
  if (!r)
    return "error: " + r.error().message;
  std::string s = r->done ? "done;" : "";
  for (const auto &d : r->deltas) {
    s += "[" + std::to_string(d.index) + "|" + d.text + "|" + d.finish_reason + "|" +
         std::to_string(d.tool_calls.size()) + "|" + std::to_string(d.logprobs.size()) + "]";
  }
  if (r->usage) {
    s += "usage " + std::to_string(r->usage->prompt_tokens) + "/" +
         std::to_string(r->usage->completion_tokens) + "/" +
         std::to_string(r->usage->cached_tokens) + "/" +
         (r->usage->cost_usd ? std::to_string(*r->usage->cost_usd) : std::string("none"));
  }
  return s;
}

TEST(OpenAIChunk, TheFastPathTakesCommonChunksAndAgreesWithTheDom) {
  const std::vector<std::string> common = {
      // vLLM / OpenAI
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})",
      R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"Hello \"wor\u006cd\" \ud83d\ude00 \n"},"logprobs":null,"finish_reason":null}]})",
      R"({"id":"c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":null})",
      R"({"id":"c","choices":[],"usage":{"prompt_tokens":12,"total_tokens":20,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}})",
      R"({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"cost_usd":0.25}})",
      R"({"choices":[],"usage":{"prompt_tokens":-5,"completion_tokens":18446744073709551615,"cost_usd":7}})",
      // llama.cpp server, TGI, completions
      R"({"choices":[{"finish_reason":null,"index":0,"delta":{"content":" Once"}}],"created":1,"id":"x","model":"m","system_fingerprint":"b1","object":"chat.completion.chunk","timings":{"prompt_n":3,"predicted_ms":1.5}})",
      R"({"id":"cmpl","object":"text_completion","choices":[{"index":0,"text":" upon","logprobs":null,"finish_reason":null}]})",
      R"({"choices":[{"index":0,"text":"a","finish_reason":"length"},{"index":1,"text":"b","finish_reason":null},{"text":"c"}]})",
      R"({"choices":[{"index":0,"delta":null,"text":"t"}]})",
      R"({"choices":[{"index":0,"delta":{"content":null,"tool_calls":null}}]})",
      // invalid UTF-8 is repaired the same way
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\xff\xc3\"},\"finish_reason\":"
      "\"st\xe2\x82\"}]}",
      R"({"choices":null,"error":null,"extra":[1,{"a":[{}]},"x",true,null,2.5]})",
  };
  for (const auto &c : common) {
    SCOPED_TRACE(c);
    const auto fast = detail::decode_common_chunk(c);
    ASSERT_TRUE(fast.has_value()) << "a common chunk went to the DOM";
    EXPECT_EQ(describe(*fast), describe(detail::decode_chunk_dom(c)));
  }
  // Shapes it leaves to the DOM (which reads them: tool calls, logprobs, errors), and anything
  // odd: repeated fields, unexpected types, not an object, not JSON.
  const std::vector<std::string> others = {
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.5}]}}]})",
      R"({"error":{"message":"overloaded"}})",
      R"({"error":"boom"})",
      R"({"choices":[{"index":0,"delta":{"content":"a"}}],"choices":[]})",
      R"({"choices":[{"index":0,"index":1,"delta":{"content":"a"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]})",
      R"({"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens":2}})",
      R"({"choices":[{"index":99999,"delta":{"content":"a"}}]})",
      R"({"choices":[{"index":-1,"delta":{"content":"a"}}]})",
      R"({"choices":[{"index":"0","delta":{"content":"a"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":7}}]})",
      R"({"choices":[{"index":0,"delta":"x","text":"t"}]})",
      R"({"choices":[{"index":0,"finish_reason":1}]})",
      R"({"choices":[1,{"index":0,"text":"a"}]})",
      R"({"choices":{}})",
      R"({"choices":[],"usage":{"prompt_tokens":1.5}})",
      R"({"choices":[],"usage":{"cost_usd":"1"}})",
      R"({"choices":[],"usage":{"prompt_tokens_details":null}})",
      R"({"choices":[],"usage":3})",
      R"([1,2])",
      R"("text")",
      R"(42)",
      R"({"choices":[{"delta":)",
      R"({"choices":[]} trailing)",
      "",
  };
  for (const auto &c : others) {
    SCOPED_TRACE(c);
    EXPECT_FALSE(detail::decode_common_chunk(c).has_value());
    (void)detail::decode_chunk_dom(c); // and the DOM decoder takes it (an error or a step)
  }
  // The decoder a stream uses gives the same answers either way.
  auto d = make_codec(BackendKind::kOpenAICompatible)->stream_decoder();
  for (const auto *set : {&common, &others}) {
    for (const auto &c : *set) {
      SCOPED_TRACE(c);
      EXPECT_EQ(describe(d->on_event({"", c})), describe(detail::decode_chunk_dom(c)));
    }
  }
}

} // namespace
} // namespace gantry::backend::remote

namespace gantry::backend::remote {
namespace {

// The hand-written request body must be the DOM body's bytes for every plain request, and
// leave every other request to the DOM.
TEST(OpenAIBody, ThePlainBodyIsTheDomBodyByteForByte) {
  std::vector<api::InferenceRequest> plain;
  api::InferenceRequest base;
  base.endpoint = api::Endpoint::kChatCompletions;
  base.messages = {{"system", "be brief"}, {"user", "hi \"there\"\n\t\u00e9\xf0\x9f\x98\x80\x01"}};
  plain.push_back(base);
  auto r = base;
  r.max_tokens = 77;
  r.sampling.temperature = 0.7f;
  r.sampling.top_p = 0.9f;
  r.sampling.frequency_penalty = -1.25f;
  r.sampling.presence_penalty = 0.1f;
  r.sampling.seed = 18446744073709551615ull;
  r.sampling.top_k = 40;
  r.sampling.min_p = 0.05f;
  r.sampling.repetition_penalty = 1.1f;
  r.ignore_eos = true;
  r.stop = {"\n\n", "END", "</s>"};
  r.n = 3;
  r.user = "user-\u00fc";
  plain.push_back(r);
  r.messages.clear(); // no messages at all
  plain.push_back(r);
  api::InferenceRequest c;
  c.endpoint = api::Endpoint::kCompletions;
  c.prompts = {{"Once upon a time", std::nullopt}};
  c.echo = true;
  c.sampling.temperature = 1.0f;
  plain.push_back(c);
  c.prompts.push_back({"two", std::nullopt});
  c.prompts.push_back({"", std::nullopt});
  c.echo = false;
  plain.push_back(c);
  for (const auto &req : plain) {
    for (BackendKind kind : {BackendKind::kOpenAICompatible, BackendKind::kOpenAI}) {
      for (bool stream : {false, true}) {
        const auto hand = detail::openai_body_plain(req, "up/model\"1", stream, 4096, kind);
        const auto dom = detail::openai_body_dom(req, "up/model\"1", stream, 4096, kind);
        ASSERT_TRUE(hand.has_value());
        ASSERT_TRUE(dom.ok());
        EXPECT_EQ(*hand, *dom);
      }
    }
  }
  // Left to the DOM.
  std::vector<api::InferenceRequest> others;
  auto t = base;
  t.tools.push_back({});
  t.tools.back().name = "f";
  others.push_back(t);
  t = base;
  t.messages.push_back({"tool", "42"});
  t.messages.back().tool_call_id = "call_1";
  others.push_back(t);
  t = base;
  t.messages.push_back({"assistant", ""});
  t.messages.back().tool_calls.push_back({});
  others.push_back(t);
  t = base;
  t.logprobs = true;
  others.push_back(t);
  t = base;
  t.logit_bias.push_back({5, 1.0f});
  others.push_back(t);
  t = base;
  t.grammar = "root ::= \"a\"";
  others.push_back(t);
  t = base;
  t.response_format.type = api::ResponseFormat::Type::kJsonObject;
  others.push_back(t);
  t = c;
  t.prompts = {{"", std::vector<int32_t>{1, 2, 3}}};
  others.push_back(t);
  for (const auto &req : others)
    EXPECT_FALSE(detail::openai_body_plain(req, "m", true, 16, BackendKind::kOpenAICompatible));
}

} // namespace
} // namespace gantry::backend::remote
