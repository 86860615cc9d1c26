#include <cstdio>

#include "cli/commands.h"
#include "cli/progress.h"
#include "engine/model/model.h"

namespace gantry::cli {

std::unique_ptr<engine::Model> load_model_or_report(std::string &path) {
  if (path.empty())
    path = default_model_path();
  Progress bar("loading " + path);
  auto model = engine::Model::load(path, [&](uint64_t d, uint64_t t) { bar.update(d, t); });
  bar.finish();
  if (!model) {
    std::fprintf(stderr, "error: %s\n", model.error().message.c_str());
    return nullptr;
  }
  return std::move(model).value();
}

} // namespace gantry::cli
