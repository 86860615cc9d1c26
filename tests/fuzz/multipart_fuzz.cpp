// Fuzzes the multipart/form-data parser of file uploads (/v1/files): the first line of the input
// is the Content-Type header value (with its boundary), the rest is the body.
#include <cstdint>
#include <string_view>

#include "server/jobs_wire.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view in(reinterpret_cast<const char *>(data), size);
  size_t nl = in.find('\n');
  if (nl == std::string_view::npos)
    return 0;
  (void)server::parse_multipart(in.substr(0, nl), in.substr(nl + 1));
  return 0;
}
