#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace gantry::cli {
void register_serve_command(CLI::App &, int &) {}
} // namespace gantry::cli
