// An encoder-only (BERT-family) model through the real server: /v1/embeddings returns the vector
// llama.cpp's llama-embedding computes for the same file (tests/data/bert), usage counts the
// [CLS]/[SEP]-wrapped tokens, /v1/models lists the model, and generation endpoints answer an
// OpenAI-shaped 400 that names it as embeddings-only; /readyz probes it by embedding.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

const std::string kBert = std::string(GANTRY_TEST_DATA_DIR) + "/bert/bert.gguf";

// llama-embedding's case for the tiny bert with its own (CLS) pooling.
json::object reference_case(const std::string &input) {
  std::ifstream in(std::string(GANTRY_TEST_DATA_DIR) + "/bert/bert-reference.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json::value doc = json::parse(text);
  for (const auto &c : doc.at("cases").as_array()) {
    if (c.at("model") == "bert.gguf" && c.at("pooling") == "cls" &&
        c.at("input").as_string() == input)
      return c.as_object();
  }
  ADD_FAILURE() << "no reference case for '" << input << "'";
  return {};
}

class EncoderEmbeddingsTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = ServerProcess::start({"--model", "bert=" + kBert, "--threads", "1", "--no-cache"});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
    client_ = std::make_unique<http::HttpClient>(server_->client_options());
  }
  http::ClientResponse post(const std::string &path, const json::object &body) {
    auto r = client_->post(path, json::serialize(body));
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : http::ClientResponse{};
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

TEST_F(EncoderEmbeddingsTest, ServesLlamaCppsVectorsAndCountsTokens) {
  const std::string a = "Hello world, this is a test.";
  const std::string b = "The quick brown fox jumps over the lazy dog";
  auto r = post("/v1/embeddings", {{"model", "bert"}, {"input", json::array{a, b}}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("model"), "bert");
  const auto &data = o.at("data").as_array();
  ASSERT_EQ(data.size(), 2u);
  int64_t want_tokens = 0;
  for (size_t i = 0; i < 2; ++i) {
    const auto ref = reference_case(i == 0 ? a : b);
    ASSERT_FALSE(ref.empty());
    want_tokens += static_cast<int64_t>(ref.at("ids").as_array().size());
    const auto &got = data[i].at("embedding").as_array();
    const auto &want = ref.at("embedding").as_array();
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_NEAR(got[k].to_number<double>(), want[k].to_number<double>(), 1e-4)
          << "input " << i << " component " << k;
    }
  }
  EXPECT_EQ(want_tokens, 10 + 11);
  EXPECT_EQ(o.at("usage").at("prompt_tokens").to_number<int64_t>(), want_tokens);
  EXPECT_EQ(o.at("usage").at("total_tokens").to_number<int64_t>(), want_tokens);

  // Past the 512 positions of BERT's position table.
  std::string longer;
  for (int i = 0; i < 600; ++i)
    longer += "word ";
  expect_error(post("/v1/embeddings", {{"model", "bert"}, {"input", longer}}), 400,
               "invalid_request_error", "input");
}

TEST_F(EncoderEmbeddingsTest, ListedButGenerationIsAClean400) {
  auto models = client_->get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  bool listed = false;
  const json::object list = parse_object(models->body);
  for (const auto &m : list.at("data").as_array())
    listed |= m.at("id") == "bert";
  EXPECT_TRUE(listed) << models->body;
  // The readiness probe of an encoder embeds a token instead of generating one.
  auto ready = client_->get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_NE(ready->body.find(R"({"name":"model:bert","status":"ok")"), std::string::npos)
      << ready->body;

  const auto chat =
      post("/v1/chat/completions",
           {{"model", "bert"},
            {"messages", json::array{json::object{{"role", "user"}, {"content", "hi"}}}}});
  auto e = expect_error(chat, 400, "invalid_request_error", "model");
  const std::string message(e.at("message").as_string());
  EXPECT_NE(message.find("'bert'"), std::string::npos) << message;
  EXPECT_NE(message.find("embeddings"), std::string::npos) << message;

  expect_error(post("/v1/completions", {{"model", "bert"}, {"prompt", "hi"}}), 400,
               "invalid_request_error", "model");
  // The server keeps serving embeddings afterwards.
  EXPECT_EQ(post("/v1/embeddings", {{"model", "bert"}, {"input", "a"}}).status, 200);
}

} // namespace
} // namespace gantry::testing
