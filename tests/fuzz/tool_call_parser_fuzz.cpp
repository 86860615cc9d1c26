// Fuzzes the tool-call parsers: the first byte picks the family (generic JSON, Hermes, Llama 3,
// Mistral) and parallel_tool_calls; the rest is a model's output split into pieces at NUL
// bytes, pushed one by one as a stream would deliver them. Whatever the text, every released
// call must carry JSON arguments and the held text stays under its bound.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <boost/json.hpp>

#include "api/tool_call_parser.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const auto style = static_cast<api::ToolStyle>(data[0] % 4);
  const bool parallel = data[0] & 4;
  api::ToolCallParser parser(style, parallel, 1);
  std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
  // A call is released once complete and valid: its id and name, then its whole arguments.
  const auto check = [](const api::ToolParse &p) {
    for (const auto &d : p.calls) {
      boost::json::error_code ec;
      if (!d.arguments.empty() && (boost::json::parse(d.arguments, ec), ec))
        std::abort();
    }
  };
  while (!in.empty()) {
    const size_t nul = in.find('\0');
    check(parser.push(in.substr(0, nul)));
    in = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
  }
  check(parser.finish());
  return 0;
}
