// Fuzzes request-body parsing and validation of every JSON endpoint: chat completions,
// completions and embeddings. The first byte picks the endpoint; the rest is the body. A parsed
// request is also rendered back through the response renderers, which must not crash either.
#include <cstdint>
#include <string_view>

#include "api/embeddings.h"
#include "api/openai.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  std::string_view body(reinterpret_cast<const char *>(data + 1), size - 1);
  switch (data[0] % 3) {
  case 0:
  case 1: {
    auto endpoint =
        data[0] % 3 == 0 ? api::Endpoint::kChatCompletions : api::Endpoint::kCompletions;
    auto r = api::parse_inference_request(endpoint, body);
    if (r) {
      api::ResponseMeta meta;
      meta.id = api::id_prefix(endpoint) + "fuzz";
      meta.model = r->model;
      api::Choice c;
      if (!r->prompts.empty())
        c.text = r->prompts[0].text.substr(0, 64);
      c.finish_reason = "stop";
      (void)api::render_response(endpoint, meta, {c}, api::Usage{});
    }
    break;
  }
  default: (void)api::parse_embedding_request(body);
  }
  return 0;
}
