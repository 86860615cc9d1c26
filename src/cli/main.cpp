#include <CLI/CLI.hpp>

#include <filesystem>
#include <unistd.h>

#include "cli/commands.h"

namespace gantry::cli {

std::string default_model_path() {
  const std::string rel = "models/stories260K.gguf";
  if (std::filesystem::exists(rel))
    return rel;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
         dir = dir.parent_path()) {
      auto candidate = dir / rel;
      if (std::filesystem::exists(candidate))
        return candidate.string();
    }
  }
  return rel;
}

} // namespace gantry::cli

int main(int argc, char **argv) {
  CLI::App app{"Gantry: an OpenAI-compatible inference server with a native CPU engine"};
  app.require_subcommand(1);
  int rc = 0;
  gantry::cli::register_model_commands(app, rc);
  gantry::cli::register_generate_command(app, rc);
  gantry::cli::register_bench_command(app, rc);
  gantry::cli::register_serve_command(app, rc);
  gantry::cli::register_keys_command(app, rc);
  gantry::cli::register_db_command(app, rc);
  CLI11_PARSE(app, argc, argv);
  return rc;
}
