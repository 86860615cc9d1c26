// Random-weight models with the exact shapes of well-known checkpoints, for benchmarking at
// realistic size where real weights cannot be downloaded. llama.cpp loads the same files.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/result.h"
#include "engine/gguf/tensor_type.h"

namespace gantry::engine {

struct SynthShape {
  std::string name; // e.g. "tinyllama-1.1b"
  std::string arch; // llama | qwen2
  int n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
  float rope_base, rms_eps;
  bool tied_output;
};

const std::vector<SynthShape> &synth_shapes();

struct SynthOptions {
  std::string like;       // a SynthShape name
  gguf::TensorType type;  // type of the 2-D weight matrices
  std::string vocab_path; // GGUF whose tokenizer metadata is copied
  std::string out_path;
  uint64_t seed = 42;
  // Limits the layer count (tests build small files with real widths); 0 = the shape's.
  int n_layer_override = 0;
};

Status synth_model(const SynthOptions &opts,
                   const std::function<void(uint64_t, uint64_t)> &progress = nullptr);

// Same, for an explicit shape (tests build tiny models of every architecture this way).
Status synth_model_shape(const SynthShape &shape, const SynthOptions &opts,
                         const std::function<void(uint64_t, uint64_t)> &progress = nullptr);

} // namespace gantry::engine
