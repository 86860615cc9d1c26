// Fuzzes constrained decoding's parsers: the first byte picks the input's kind — GBNF text
// (engine::compile_gbnf) or a JSON Schema (api::json_schema_to_gbnf, then compiled) — and the
// text after the first NUL is walked through the compiled grammar byte by byte
// (GrammarMatcher::accept_text) over the stories260K vocabulary, so the parser, the schema
// compiler and the pushdown automaton all see hostile input within their bounds.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "api/json_schema_grammar.h"
#include "engine/gguf/gguf.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/matcher.h"
#include "engine/grammar/token_trie.h"
#include "engine/tokenizer/tokenizer.h"

using namespace gantry;

namespace {

std::shared_ptr<const engine::TokenTrie> trie() {
  static std::shared_ptr<const engine::TokenTrie> t = [] {
    std::shared_ptr<const engine::TokenTrie> out;
    auto f = gguf::GgufFile::open(GANTRY_TEST_DATA_DIR "/vocab/ggml-vocab-llama-spm.gguf");
    if (!f)
      return out;
    auto tok = engine::Tokenizer::from_gguf(**f);
    if (!tok)
      return out;
    static std::unique_ptr<engine::Tokenizer> keep = std::move(*tok);
    return engine::TokenTrie::build(*keep);
  }();
  return t;
}

} // namespace

// The vocabulary is loaded once before fuzzing starts, outside the per-input timeout: under
// ASan on a loaded machine loading it takes longer than -timeout and was reported as a hang.
extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  (void)trie();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const bool schema = data[0] & 1;
  std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
  const size_t nul = in.find('\0');
  const std::string_view text = in.substr(0, nul);
  const std::string_view walk = nul == std::string_view::npos ? "" : in.substr(nul + 1);
  Result<std::shared_ptr<const engine::Grammar>> g =
      schema ? api::compile_json_schema(text) : engine::compile_gbnf(text);
  if (!g.ok())
    return 0;
  if (auto t = trie()) {
    engine::GrammarMatcher m(*g, t);
    (void)m.accept_text(walk);
    (void)m.accepting();
    (void)m.finished();
  }
  return 0;
}
