// Fuzzes the Batch API's JSONL input parser (parse_batch_input): the first byte picks the
// batch's endpoint, the rest is the uploaded file. Besides crashes and sanitizer reports it
// checks the parser's promises: errors are bounded, custom_ids of accepted lines are unique and
// non-empty, and every accepted body parses as a request of the endpoint.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "api/openai.h"
#include "server/jobs_wire.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const bool chat = data[0] & 1;
  const std::string_view endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
  const std::string_view content(reinterpret_cast<const char *>(data) + 1, size - 1);
  server::BatchInput in = server::parse_batch_input(content, endpoint);
  if (in.errors.size() > server::kMaxBatchInputErrors)
    std::abort();
  std::set<std::string> ids;
  for (const auto &l : in.lines) {
    if (l.custom_id.empty() || !ids.insert(l.custom_id).second)
      std::abort();
    auto parsed = api::parse_inference_request(
        chat ? api::Endpoint::kChatCompletions : api::Endpoint::kCompletions, l.body);
    if (!parsed)
      std::abort();
  }
  return 0;
}
