// Fuzzes the TOML config reader and its validation (toml++ parse, known keys, [[models]],
// [limits], [jobs], [cache], ...), through the same apply_toml_file the server uses at start.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "server/config.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::string path =
      "/dev/shm/gantry-config-fuzz-" + std::to_string(::getpid()) + ".toml";
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  server::ServerConfig c;
  if (server::apply_toml_file(path, c).ok())
    (void)c.validate();
  return 0;
}
