// POST /v1/embeddings through the real server: vector properties, both encodings, the per-input
// embedding cache (mixed batches, text vs token ids), and OpenAI-shaped errors.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

constexpr int kCtx = 64;

class EmbeddingsTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = ServerProcess::start({"--threads", "1", "--ctx", std::to_string(kCtx)});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
    client_ = std::make_unique<http::HttpClient>(server_->client_options());
  }

  http::ClientResponse embed(json::object body, http::Headers headers = {}) {
    if (!body.contains("model"))
      body["model"] = kModel;
    auto r = client_->post("/v1/embeddings", json::serialize(body), std::move(headers));
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : http::ClientResponse{};
  }
  // The float vectors of a 200 response, in index order.
  static std::vector<std::vector<double>> vectors(const http::ClientResponse &r) {
    EXPECT_EQ(r.status, 200) << r.body;
    auto o = parse_object(r.body);
    std::vector<std::vector<double>> out;
    if (!o.contains("data"))
      return out;
    const auto &data = o.at("data").as_array();
    for (size_t i = 0; i < data.size(); ++i) {
      EXPECT_EQ(data[i].at("object"), "embedding");
      EXPECT_EQ(data[i].at("index").to_number<int64_t>(), static_cast<int64_t>(i));
      std::vector<double> v;
      for (const auto &x : data[i].at("embedding").as_array())
        v.push_back(x.to_number<double>());
      out.push_back(std::move(v));
    }
    return out;
  }
  static std::string cache_header(const http::ClientResponse &r) {
    return std::string(r.header("x-gantry-cache").value_or("<none>"));
  }
  double metric(const std::string &series) {
    auto r = client_->get("/metrics");
    EXPECT_TRUE(r);
    return r ? metric_or_zero(r->body, series) : -1;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

std::vector<uint8_t> base64_decode(std::string_view s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=')
      break;
    const int v = val(c);
    EXPECT_GE(v, 0) << "not base64: " << c;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  return out;
}

TEST_F(EmbeddingsTest, SameTextGivesTheSameUnitVector) {
  auto first = embed({{"input", "Once upon a time"}});
  auto second = embed({{"input", "Once upon a time"}});
  EXPECT_EQ(cache_header(first), "miss");
  EXPECT_EQ(cache_header(second), "hit");
  auto a = vectors(first), b = vectors(second);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0], b[0]);
  EXPECT_EQ(a[0].size(), 64u) << "stories260K's hidden size";
  EXPECT_NEAR(std::sqrt(dot(a[0], a[0])), 1.0, 1e-5);
  EXPECT_NEAR(dot(a[0], b[0]), 1.0, 1e-5) << "cosine with itself";

  auto o = parse_object(first.body);
  EXPECT_EQ(o.at("object"), "list");
  EXPECT_EQ(o.at("model"), kModel);
  EXPECT_EQ(o.at("usage").at("prompt_tokens").to_number<int64_t>(), 5) << "BOS + 4 tokens";
  EXPECT_EQ(o.at("usage").at("total_tokens").to_number<int64_t>(), 5);

  // Computed fresh (the cache bypassed), the vector is the same: the engine is deterministic.
  auto fresh = embed({{"input", "Once upon a time"}}, {{"Cache-Control", "no-store"}});
  EXPECT_EQ(cache_header(fresh), "bypass");
  EXPECT_EQ(vectors(fresh)[0], a[0]);

  auto other = vectors(embed({{"input", "The dog ran to the big red ball."}}));
  EXPECT_LT(dot(a[0], other[0]), 0.9999) << "different texts, different directions";
}

TEST_F(EmbeddingsTest, Base64IsTheLittleEndianFloat32Bytes) {
  auto floats = vectors(embed({{"input", "Lily wanted to"}}));
  auto r = embed({{"input", "Lily wanted to"}, {"encoding_format", "base64"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  const auto &e = o.at("data").at(0).at("embedding");
  ASSERT_TRUE(e.is_string()) << r.body;
  const auto bytes = base64_decode(e.as_string());
  ASSERT_EQ(bytes.size(), floats[0].size() * 4);
  for (size_t i = 0; i < floats[0].size(); ++i) {
    uint32_t u = 0;
    for (int b = 0; b < 4; ++b)
      u |= uint32_t{bytes[i * 4 + b]} << (8 * b);
    EXPECT_EQ(std::bit_cast<float>(u), static_cast<float>(floats[0][i])) << "dimension " << i;
  }
}

TEST_F(EmbeddingsTest, BatchComputesOnlyTheInputsNotCached) {
  auto one = vectors(embed({{"input", "The sun was"}}));
  const double hits = metric("gantry:cache_hits_total{cache=\"embedding\"}");
  const double misses = metric("gantry:cache_misses_total{cache=\"embedding\"}");
  EXPECT_EQ(misses, 1);

  auto mixed = embed({{"input", json::array{"A cat sat.", "The sun was", "A bird sang."}}});
  EXPECT_EQ(cache_header(mixed), "miss");
  auto v = vectors(mixed);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[1], one[0]) << "the cached item keeps its place in the batch";
  EXPECT_EQ(metric("gantry:cache_hits_total{cache=\"embedding\"}"), hits + 1);
  EXPECT_EQ(metric("gantry:cache_misses_total{cache=\"embedding\"}"), misses + 2);
  EXPECT_EQ(parse_object(mixed.body).at("usage").at("prompt_tokens").to_number<int64_t>(),
            parse_object(embed({{"input", "A cat sat."}}).body)
                    .at("usage")
                    .at("prompt_tokens")
                    .to_number<int64_t>() +
                5 +
                parse_object(embed({{"input", "A bird sang."}}).body)
                    .at("usage")
                    .at("prompt_tokens")
                    .to_number<int64_t>());

  auto again = embed({{"input", json::array{"A cat sat.", "The sun was", "A bird sang."}}});
  EXPECT_EQ(cache_header(again), "hit");
  EXPECT_EQ(vectors(again), v);
  // Each item equals its single-input embedding.
  for (size_t i = 0; i < 3; ++i) {
    const char *texts[] = {"A cat sat.", "The sun was", "A bird sang."};
    EXPECT_EQ(vectors(embed({{"input", texts[i]}}))[0], v[i]) << texts[i];
  }
}

TEST_F(EmbeddingsTest, TokenIdsShareTheEntryOfTheirText) {
  // tests/data/stories-greedy.json: "Once upon a time" is [1, 403, 407, 261, 378] with BOS.
  auto text = vectors(embed({{"input", "Once upon a time"}}));
  auto ids = embed({{"input", json::array{1, 403, 407, 261, 378}}});
  EXPECT_EQ(cache_header(ids), "hit");
  EXPECT_EQ(vectors(ids)[0], text[0]);
  auto nested = embed({{"input", json::array{json::array{1, 403, 407, 261, 378},
                                             json::array{1, 291, 262, 379, 286}}}});
  auto nv = vectors(nested);
  ASSERT_EQ(nv.size(), 2u);
  EXPECT_EQ(nv[0], text[0]);
  EXPECT_EQ(nv[1], vectors(embed({{"input", "The sun was"}}))[0]);
}

TEST_F(EmbeddingsTest, BadRequestsAreOpenAiErrors) {
  expect_error(embed({{"input", "x"}, {"dimensions", 16}}), 400, "invalid_request_error",
               "dimensions");
  expect_error(embed({{"input", ""}}), 400, "invalid_request_error", "input");
  expect_error(embed({{"input", json::array()}}), 400, "invalid_request_error", "input");
  expect_error(embed({{"input", 42}}), 400, "invalid_request_error", "input");
  expect_error(embed({{"input", json::array{"a", 1}}}), 400, "invalid_request_error", "input[1]");
  expect_error(embed({{"input", json::array{json::array{1, 2}, json::array()}}}), 400,
               "invalid_request_error", "input[1]");
  expect_error(embed({{"input", json::array{1, 99999}}}), 400, "invalid_request_error", "input");
  expect_error(embed({{"input", "x"}, {"encoding_format", "int8"}}), 400, "invalid_request_error",
               "encoding_format");
  expect_error(embed({{"input", "x"}, {"temperature", 0}}), 400, "invalid_request_error",
               "temperature");
  expect_error(embed({}), 400, "invalid_request_error", "input");
  expect_error(embed({{"model", "nope"}, {"input", "x"}}), 404, "invalid_request_error", "model");
  std::string long_text;
  for (int i = 0; i < kCtx; ++i)
    long_text += " the dog";
  auto too_long = embed({{"input", json::array{"fine", long_text}}});
  auto err = expect_error(too_long, 400, "invalid_request_error", "input[1]");
  EXPECT_EQ(err.at("code"), "context_length_exceeded");
  auto bad_json = client_->post("/v1/embeddings", "{not json");
  ASSERT_TRUE(bad_json);
  expect_error(*bad_json, 400, "invalid_request_error", "");
  // `user` is accepted and ignored.
  EXPECT_EQ(embed({{"input", "x"}, {"user", "u-1"}}).status, 200);
}

} // namespace
} // namespace gantry::testing
