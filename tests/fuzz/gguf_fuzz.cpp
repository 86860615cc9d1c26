// Fuzzes the GGUF reader on untrusted bytes: header, metadata key/values (nested arrays),
// tensor infos, alignment and offsets. Everything it accepts must be safe to walk.
#include <cstdint>
#include <span>

#include "engine/gguf/gguf.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto f = gguf::GgufFile::parse(std::span<const uint8_t>(data, size));
  if (f) {
    for (const auto &t : (*f)->tensors())
      (void)t.name.size();
  }
  return 0;
}
