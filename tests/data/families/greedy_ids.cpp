// Prints llama.cpp's greedy token ids for one prompt, to record the references in
// families-greedy.json (make-greedy.sh builds this against the peer's static libraries and checks
// that the text of these ids equals llama-completion's own output on the same settings).
//
// usage: greedy_ids MODEL PROMPT N_PREDICT
// stdout: line 1 the prompt ids, line 2 the generated ids, line 3 the generated text as hex,
// line 4 the largest logit at each step (the chosen token's).
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: greedy_ids MODEL PROMPT N_PREDICT\n");
    return 2;
  }
  llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  llama_model *model = llama_model_load_from_file(argv[1], mp);
  if (!model)
    return 1;
  // As llama-completion -c 256 -t 2 (its other defaults are the library's).
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = 2;
  cp.n_threads_batch = 2;
  llama_context *ctx = llama_init_from_model(model, cp);
  const llama_vocab *vocab = llama_model_get_vocab(model);
  const std::string prompt = argv[2];
  std::vector<llama_token> ids(prompt.size() + 8);
  // add_special and parse_special as llama-completion tokenizes a prompt.
  const int n = llama_tokenize(vocab, prompt.data(), static_cast<int32_t>(prompt.size()),
                               ids.data(), static_cast<int32_t>(ids.size()), true, true);
  if (n < 0)
    return 1;
  ids.resize(n);
  for (int i = 0; i < n; ++i)
    std::printf("%s%d", i ? " " : "", ids[i]);
  std::printf("\n");
  llama_sampler *smpl = llama_sampler_init_greedy();
  llama_batch batch = llama_batch_get_one(ids.data(), n);
  std::string text;
  std::string top;
  const int n_predict = std::atoi(argv[3]);
  llama_token tok = 0;
  for (int i = 0; i < n_predict; ++i) {
    if (llama_decode(ctx, batch) != 0)
      return 1;
    tok = llama_sampler_sample(smpl, ctx, -1);
    const float *logits = llama_get_logits_ith(ctx, -1);
    char num[32];
    std::snprintf(num, sizeof num, "%s%.9g", i ? " " : "", logits[tok]);
    top += num;
    std::printf("%s%d", i ? " " : "", tok);
    if (llama_vocab_is_eog(vocab, tok))
      break;
    char buf[256];
    const int len = llama_token_to_piece(vocab, tok, buf, sizeof buf, 0, false);
    if (len > 0)
      text.append(buf, len);
    batch = llama_batch_get_one(&tok, 1);
  }
  std::printf("\n");
  for (unsigned char c : text)
    std::printf("%02x", c);
  std::printf("\n%s\n", top.c_str());
  llama_sampler_free(smpl);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
