// Internal: builds a Vocab from GGUF metadata with llama.cpp's defaults and fix-ups.
#pragma once

#include <memory>

#include "core/result.h"
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {

Result<std::unique_ptr<Vocab>> load_vocab(const gguf::GgufFile &file);

} // namespace gantry::engine
