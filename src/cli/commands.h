// Subcommands of the `gantry` binary. Each registers itself on the CLI11 app and stores its
// exit code in `rc` when it runs.
#pragma once

#include <memory>
#include <string>

namespace CLI {
class App;
}
namespace gantry::engine {
class Model;
}

namespace gantry::cli {

// The bundled model: ./models/stories260K.gguf, or next to the binary's parent directory
// (build/gantry → models/), so commands work from the repository root or elsewhere.
std::string default_model_path();

// Loads `path` (the bundled model when empty; `path` is updated) with a progress display;
// prints the error and returns null on failure.
std::unique_ptr<engine::Model> load_model_or_report(std::string &path);

void register_model_commands(CLI::App &app, int &rc);
void register_generate_command(CLI::App &app, int &rc);
void register_bench_command(CLI::App &app, int &rc);
void register_serve_command(CLI::App &app, int &rc);
void register_keys_command(CLI::App &app, int &rc);
void register_db_command(CLI::App &app, int &rc);

} // namespace gantry::cli
