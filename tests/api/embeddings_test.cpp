#include "api/embeddings.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace gantry::api {
namespace {

namespace json = boost::json;

TEST(EmbeddingsParseTest, AcceptsTheFourInputForms) {
  auto s = parse_embedding_request(R"({"model":"m","input":"hello"})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->texts, std::vector<std::string>{"hello"});
  EXPECT_FALSE(s->base64);
  auto a = parse_embedding_request(R"({"model":"m","input":["a","b"],"encoding_format":"base64"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size(), 2u);
  EXPECT_TRUE(a->base64);
  auto t = parse_embedding_request(R"({"model":"m","input":[1,2,3],"user":"u"})");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->token_inputs.size(), 1u);
  EXPECT_EQ(t->token_inputs[0], (std::vector<int32_t>{1, 2, 3}));
  auto tt = parse_embedding_request(R"({"model":"m","input":[[1],[2,3]],"cache":{"ttl":5}})");
  ASSERT_TRUE(tt.ok());
  EXPECT_EQ(tt->size(), 2u);
  EXPECT_EQ(tt->cache.ttl_s, 5);
}

TEST(EmbeddingsParseTest, RefusalsNameTheField) {
  struct Case {
    const char *body;
    const char *param;
  } cases[] = {
      {R"({"model":"m","input":"x","dimensions":3})", "dimensions"},
      {R"({"model":"m","input":""})", "input"},
      {R"({"model":"m","input":[]})", "input"},
      {R"({"model":"m","input":[[]]})", "input[0]"},
      {R"({"model":"m","input":["a",""]})", "input[1]"},
      {R"({"model":"m","input":[1,-2]})", "input"},
      {R"({"model":"m","input":[1,"a"]})", "input"},
      {R"({"model":"m","input":{"a":1}})", "input"},
      {R"({"model":"m","input":"x","encoding_format":"int8"})", "encoding_format"},
      {R"({"model":"m","input":"x","stream":true})", "stream"},
      {R"({"model":3,"input":"x"})", "model"},
      {R"({"input":"x"})", "model"},
      {R"({"model":"m"})", "input"},
  };
  for (const auto &c : cases) {
    auto r = parse_embedding_request(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body << ": " << r.error().message;
  }
  std::string many = R"({"model":"m","input":[)";
  for (size_t i = 0; i <= kMaxEmbeddingInputs; ++i)
    many += (i ? ",\"a\"" : "\"a\"");
  EXPECT_FALSE(parse_embedding_request(many + "]}").ok());
}

TEST(EmbeddingsRenderTest, Base64MatchesRfc4648) {
  auto enc = [](std::string_view s) {
    return base64_encode({reinterpret_cast<const uint8_t *>(s.data()), s.size()});
  };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
  EXPECT_EQ(enc("\xff\xfe\xfd"), "//79");
}

TEST(EmbeddingsRenderTest, OpenAiShape) {
  auto body = json::parse(render_embeddings("m", {{1.0f, -0.5f}, {0.25f, 0.0f}}, false, 7));
  EXPECT_EQ(body.at("object"), "list");
  EXPECT_EQ(body.at("model"), "m");
  EXPECT_EQ(body.at("usage").at("prompt_tokens"), 7);
  EXPECT_EQ(body.at("usage").at("total_tokens"), 7);
  const auto &d = body.at("data").as_array();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].at("index"), 1);
  EXPECT_EQ(d[1].at("object"), "embedding");
  EXPECT_EQ(d[0].at("embedding").at(1).as_double(), -0.5);
  // 1.0f is 00 00 80 3f little-endian.
  auto b64 = json::parse(render_embeddings("m", {{1.0f}}, true, 1));
  EXPECT_EQ(b64.at("data").at(0).at("embedding"), "AACAPw==");
}

} // namespace
} // namespace gantry::api
