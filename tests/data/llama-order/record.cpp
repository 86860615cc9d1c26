// Greedy decoding with llama.cpp's library, printing per step the chosen id, its log-probability
// (log-softmax of the float logits in double) and its logit, as JSON. Linked once against a
// native AVX-512 build and once against an AVX2 build of the same commit (make-reference.sh).
//   record MODEL N_STEPS ID...
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

int main(int argc, char **argv) {
  if (argc < 4)
    return 2;
  const int steps = std::atoi(argv[2]);
  std::vector<llama_token> ids;
  for (int i = 3; i < argc; ++i)
    ids.push_back(std::atoi(argv[i]));
  llama_backend_init();
  llama_model *m = llama_model_load_from_file(argv[1], llama_model_default_params());
  auto cp = llama_context_default_params();
  cp.n_ctx = 512;
  cp.n_threads = cp.n_threads_batch = 2;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED; // llama-server's default on CPU
  llama_context *ctx = llama_init_from_model(m, cp);
  const int nv = llama_vocab_n_tokens(llama_model_get_vocab(m));
  if (llama_decode(ctx, llama_batch_get_one(ids.data(), static_cast<int>(ids.size()))))
    return 1;
  std::printf("[");
  for (int s = 0; s < steps; ++s) {
    const float *lg = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int i = 1; i < nv; ++i)
      best = lg[i] > lg[best] ? i : best;
    double sum = 0;
    for (int i = 0; i < nv; ++i)
      sum += std::exp(static_cast<double>(lg[i]) - lg[best]);
    std::printf("%s{\"id\": %d, \"logprob\": %.9g, \"logit\": %.9g}", s ? ", " : "", best,
                -std::log(sum), lg[best]);
    llama_token t = best;
    if (llama_decode(ctx, llama_batch_get_one(&t, 1)))
      return 1;
  }
  std::printf("]\n");
  return 0;
}
