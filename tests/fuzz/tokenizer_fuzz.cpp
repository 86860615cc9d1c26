// Fuzzes every tokenizer family on arbitrary text: SPM, BPE with each pre-tokenizer
// (Llama 3, Qwen2, GPT-2, DeepSeek, Falcon, MPT, StarCoder, Refact, ...) and WordPiece, from the
// vocabularies in tests/data/vocab. The first byte picks the vocabulary and the special-token
// flags; encode → decode must not crash on invalid UTF-8 or control bytes.
#include <dirent.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"

using namespace gantry;

namespace {

struct Loaded {
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<engine::Tokenizer> tok;
};

std::vector<Loaded> &vocabs() {
  static std::vector<Loaded> v = [] {
    std::vector<Loaded> out;
    std::string dir = GANTRY_TEST_DATA_DIR "/vocab";
    if (DIR *d = ::opendir(dir.c_str())) {
      while (dirent *e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.size() < 5 || name.substr(name.size() - 5) != ".gguf")
          continue;
        auto f = gguf::GgufFile::open(dir + "/" + name);
        if (!f)
          continue;
        auto t = engine::Tokenizer::from_gguf(**f);
        if (!t)
          continue;
        out.push_back({std::move(*f), std::move(*t)});
      }
      ::closedir(d);
    }
    return out;
  }();
  return v;
}

} // namespace

// The vocabulary is loaded once before fuzzing starts, outside the per-input timeout: under
// ASan on a loaded machine loading it takes longer than -timeout and was reported as a hang.
extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  (void)vocabs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto &v = vocabs();
  if (v.empty() || size < 1)
    return 0;
  const auto &tok = *v[data[0] % v.size()].tok;
  const bool add_special = data[0] & 0x40;
  const bool parse_special = data[0] & 0x80;
  std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
  auto ids = tok.encode(text, add_special, parse_special);
  (void)tok.decode(ids);
  (void)tok.decode(ids, true);
  return 0;
}
