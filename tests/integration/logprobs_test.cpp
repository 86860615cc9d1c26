// logprobs, top_logprobs, logit_bias and several prompts per completions request through the
// real server: both response shapes, streamed and not, checked against llama.cpp's reference
// log-probabilities where the prompt is the same.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

class LogprobsTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto s = ServerProcess::start({"--threads", "1"});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s).release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static json::object post_ok(const std::string &path, const std::string &body,
                              std::string *cache = nullptr) {
    http::HttpClient c(server_->client_options());
    auto r = c.post(path, body);
    EXPECT_TRUE(r) << r.error().message;
    if (!r)
      return {};
    EXPECT_EQ(r->status, 200) << r->body;
    if (cache)
      *cache = std::string(r->header("x-gantry-cache").value_or(""));
    return parse_object(r->body);
  }
  static http::ClientResponse post(const std::string &path, const std::string &body) {
    http::HttpClient c(server_->client_options());
    auto r = c.post(path, body);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : http::ClientResponse{};
  }
  // Every streamed chunk's choices, in order.
  static std::vector<json::object> stream_choices(const std::string &path,
                                                  const std::string &body) {
    StreamResult r = stream_request(server_->client_options(), path, body);
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.done);
    std::vector<json::object> out;
    for (const auto &e : r.events) {
      if (e == "[DONE]")
        continue;
      auto j = json::parse(e).as_object();
      for (const auto &c : j.at("choices").as_array())
        out.push_back(c.as_object());
    }
    return out;
  }

  static ServerProcess *server_;
};
ServerProcess *LogprobsTest::server_ = nullptr;

// llama.cpp's log-probabilities for "Once upon a time" (tests/data/stories-greedy.json).
json::array reference_steps() {
  std::ifstream in(std::string(GANTRY_TEST_DATA_DIR) + "/stories-greedy.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = json::parse(ss.str());
  const auto &c = j.at("cases").at(0);
  EXPECT_EQ(c.at("prompt"), "Once upon a time");
  return c.at("top5_probs_per_step").as_array();
}

TEST_F(LogprobsTest, CompletionsLegacyShapeMatchesLlamaCpp) {
  std::string cache;
  auto r = post_ok("/v1/completions",
                   completion_body("Once upon a time",
                                   {{"max_tokens", 12}, {"temperature", 0}, {"logprobs", 5}}),
                   &cache);
  EXPECT_EQ(cache, "bypass") << "the cache keeps no logprobs, so it is not used for them";
  const auto &choice = r.at("choices").at(0).as_object();
  const auto &lp = choice.at("logprobs").as_object();
  const auto &tokens = lp.at("tokens").as_array();
  const auto &token_lp = lp.at("token_logprobs").as_array();
  const auto &top = lp.at("top_logprobs").as_array();
  const auto &offsets = lp.at("text_offset").as_array();
  ASSERT_EQ(tokens.size(), 12u);
  ASSERT_EQ(token_lp.size(), 12u);
  ASSERT_EQ(top.size(), 12u);
  ASSERT_EQ(offsets.size(), 12u);
  const auto ref = reference_steps();
  std::string joined;
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_EQ(offsets[i].as_int64(), static_cast<int64_t>(joined.size())) << i;
    joined += tokens[i].as_string();
    const auto &want = ref[i].as_object();
    EXPECT_EQ(tokens[i], want.at("token")) << "step " << i;
    EXPECT_NEAR(token_lp[i].to_number<double>(), want.at("logprob").to_number<double>(), 4e-3)
        << "step " << i;
    ASSERT_EQ(top[i].as_object().size(), 5u) << "step " << i;
    const auto &best = want.at("top_logprobs").at(0).as_object();
    EXPECT_NEAR(top[i].at(best.at("token").as_string()).to_number<double>(),
                best.at("logprob").to_number<double>(), 4e-3);
  }
  EXPECT_EQ(joined, choice.at("text").as_string());
  EXPECT_EQ(r.at("usage").at("completion_tokens"), 12);

  // Without logprobs: exactly the old shape.
  auto plain =
      post_ok("/v1/completions",
              completion_body("Once upon a time", {{"max_tokens", 12}, {"temperature", 0}}));
  EXPECT_TRUE(plain.at("choices").at(0).at("logprobs").is_null());
  EXPECT_EQ(plain.at("choices").at(0).at("text"), choice.at("text"));
}

TEST_F(LogprobsTest, ChatContentShapeWithTopAlternatives) {
  auto r = post_ok(
      "/v1/chat/completions",
      chat_body("Once upon a time",
                {{"max_tokens", 10}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 3}}));
  const auto &choice = r.at("choices").at(0).as_object();
  const auto &lp = choice.at("logprobs").as_object();
  EXPECT_TRUE(lp.at("refusal").is_null());
  const auto &content = lp.at("content").as_array();
  ASSERT_EQ(static_cast<int64_t>(content.size()), r.at("usage").at("completion_tokens").as_int64());
  std::string bytes_joined;
  for (const auto &e : content) {
    const auto &o = e.as_object();
    EXPECT_LE(o.at("logprob").to_number<double>(), 0.0);
    for (const auto &b : o.at("bytes").as_array())
      bytes_joined.push_back(static_cast<char>(b.as_int64()));
    const auto &alts = o.at("top_logprobs").as_array();
    ASSERT_EQ(alts.size(), 3u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(alts[0].at("token"), o.at("token"));
    EXPECT_EQ(alts[0].at("logprob"), o.at("logprob"));
    EXPECT_GE(alts[0].at("logprob").to_number<double>(), alts[1].at("logprob").to_number<double>());
  }
  const std::string text(choice.at("message").at("content").as_string());
  EXPECT_EQ(bytes_joined.substr(0, text.size()), text) << "the bytes spell the content";

  auto plain = post_ok("/v1/chat/completions",
                       chat_body("Once upon a time", {{"max_tokens", 10}, {"temperature", 0}}));
  EXPECT_TRUE(plain.at("choices").at(0).at("logprobs").is_null());
  EXPECT_EQ(plain.at("choices").at(0).at("message").at("content").as_string(), text)
      << "asking for logprobs does not change the output";
}

TEST_F(LogprobsTest, StreamedChunksCarryTheSameLogprobs) {
  const json::object chat_extra{
      {"max_tokens", 10}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}};
  auto whole = post_ok("/v1/chat/completions", chat_body("Once upon a time", chat_extra));
  json::object streamed_extra = chat_extra;
  streamed_extra["stream"] = true;
  json::array streamed;
  for (const auto &c :
       stream_choices("/v1/chat/completions", chat_body("Once upon a time", streamed_extra))) {
    if (const auto &lp = c.at("logprobs"); !lp.is_null()) {
      for (const auto &e : lp.at("content").as_array())
        streamed.push_back(e);
    }
  }
  EXPECT_EQ(streamed, whole.at("choices").at(0).at("logprobs").at("content").as_array());

  const json::object legacy{{"max_tokens", 10}, {"temperature", 0}, {"logprobs", 2}};
  auto whole_c = post_ok("/v1/completions", completion_body("Once upon a time", legacy));
  json::object legacy_stream = legacy;
  legacy_stream["stream"] = true;
  json::array tokens, offsets;
  for (const auto &c :
       stream_choices("/v1/completions", completion_body("Once upon a time", legacy_stream))) {
    if (const auto &lp = c.at("logprobs"); !lp.is_null()) {
      for (const auto &t : lp.at("tokens").as_array())
        tokens.push_back(t);
      for (const auto &t : lp.at("text_offset").as_array())
        offsets.push_back(t);
    }
  }
  const auto &want = whole_c.at("choices").at(0).at("logprobs");
  EXPECT_EQ(tokens, want.at("tokens").as_array());
  EXPECT_EQ(offsets, want.at("text_offset").as_array());

  // Without logprobs every chunk says null.
  for (const auto &c :
       stream_choices("/v1/chat/completions",
                      chat_body("Once upon a time", {{"max_tokens", 4}, {"stream", true}})))
    EXPECT_TRUE(c.at("logprobs").is_null());
}

TEST_F(LogprobsTest, LogitBiasForcesAToken) {
  auto r = post_ok("/v1/completions",
                   completion_body("Once upon a time", {{"max_tokens", 5},
                                                        {"temperature", 0},
                                                        {"logprobs", 0},
                                                        {"logit_bias", {{"300", 100}}}}));
  const auto &tokens = r.at("choices").at(0).at("logprobs").at("tokens").as_array();
  ASSERT_EQ(tokens.size(), 5u);
  for (const auto &t : tokens)
    EXPECT_EQ(t, tokens[0]) << "every token is the biased one";
  auto banned = post_ok(
      "/v1/completions",
      completion_body("Once upon a time",
                      {{"max_tokens", 1}, {"temperature", 0}, {"logit_bias", {{"432", -100}}}}));
  EXPECT_NE(banned.at("choices").at(0).at("text"), ",") << "token 432 (',') is the greedy one";
}

TEST_F(LogprobsTest, SeveralPromptsAreSeparateChoices) {
  const json::object greedy{{"max_tokens", 8}, {"temperature", 0}};
  auto single = [&](const std::string &prompt) {
    return post_ok("/v1/completions", completion_body(prompt, greedy));
  };
  auto a = single("Once upon a time"), b = single("Lily wanted to");
  json::object extra = greedy;
  extra["n"] = 2;
  extra["echo"] = true;
  json::object body{{"model", kModel},
                    {"prompt", json::array{"Once upon a time", "Lily wanted to"}}};
  for (const auto &[k, v] : extra)
    body[k] = v;
  auto both = post_ok("/v1/completions", json::serialize(body));
  const auto &choices = both.at("choices").as_array();
  ASSERT_EQ(choices.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(choices[i].at("index"), static_cast<int64_t>(i));
    const auto &one = i < 2 ? a : b;
    const std::string prompt = i < 2 ? "Once upon a time" : "Lily wanted to";
    EXPECT_EQ(choices[i].at("text").as_string(), prompt + choice_text(one)) << "choice " << i;
  }
  EXPECT_EQ(both.at("usage").at("prompt_tokens").as_int64(),
            a.at("usage").at("prompt_tokens").as_int64() +
                b.at("usage").at("prompt_tokens").as_int64());
  EXPECT_EQ(both.at("usage").at("completion_tokens").as_int64(),
            2 * (a.at("usage").at("completion_tokens").as_int64() +
                 b.at("usage").at("completion_tokens").as_int64()));

  // Token-id prompts, streamed.
  json::object ids{
      {"model", kModel},
      {"prompt", json::array{json::array{1, 403, 407, 261, 378}, json::array{1, 403, 407}}},
      {"max_tokens", 8},
      {"temperature", 0},
      {"stream", true}};
  std::map<int64_t, std::string> text, finish;
  for (const auto &c : stream_choices("/v1/completions", json::serialize(ids))) {
    const int64_t i = c.at("index").as_int64();
    text[i] += c.at("text").as_string();
    if (!c.at("finish_reason").is_null())
      finish[i] = std::string(c.at("finish_reason").as_string());
  }
  ASSERT_EQ(text.size(), 2u);
  EXPECT_EQ(text[0], choice_text(a)) << "token ids of the same prompt give the same text";
  EXPECT_EQ(finish.size(), 2u);
}

TEST_F(LogprobsTest, BadInputIsA400NamingTheField) {
  struct Case {
    std::string path, body, param;
  } cases[] = {
      {"/v1/chat/completions", chat_body("x", {{"logprobs", true}, {"top_logprobs", 21}}),
       "top_logprobs"},
      {"/v1/chat/completions", chat_body("x", {{"top_logprobs", 2}}), "top_logprobs"},
      {"/v1/chat/completions", chat_body("x", {{"logit_bias", {{"abc", 1}}}}), "logit_bias"},
      {"/v1/chat/completions", chat_body("x", {{"logit_bias", {{"5", 150}}}}), "logit_bias"},
      {"/v1/chat/completions", chat_body("x", {{"logit_bias", {{"99999", 1}}}}), "logit_bias"},
      {"/v1/completions", completion_body("x", {{"logprobs", 21}}), "logprobs"},
      {"/v1/completions",
       json::serialize(
           json::object{{"model", kModel}, {"prompt", json::array{"a", "b"}}, {"n", 40}}),
       "n"},
      {"/v1/completions",
       json::serialize(
           json::object{{"model", kModel}, {"prompt", json::array{json::array{1, 99999}}}}),
       "prompt"},
  };
  for (const auto &c : cases) {
    auto r = post(c.path, c.body);
    expect_error(r, 400, "invalid_request_error", c.param);
  }
}

} // namespace
} // namespace gantry::testing
