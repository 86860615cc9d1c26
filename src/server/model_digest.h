// A cheap identity of a loaded model file for cache keys: SHA-256 over the file size, every byte
// before the tensor data (header, all metadata including the tokenizer, the tensor table with
// names, shapes, types and offsets) and 16 evenly spaced 4 KiB samples of the tensor data.
// Computed once at load; reads a few pages instead of gigabytes. Two files that differ only in
// weight bytes outside every sample would collide, which needs a deliberately crafted file: a
// fine-tune or requantisation changes sampled weights (and usually the metadata).
#pragma once

#include <string>

#include "engine/gguf/gguf.h"

namespace gantry::server {

std::string model_digest(const gguf::GgufFile &file);

} // namespace gantry::server
