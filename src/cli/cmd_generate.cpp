// `gantry generate`: one prompt through the batched engine, as text or JSON.
#include <CLI/CLI.hpp>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/progress.h"
#include "core/clock.h"
#include "engine/batch/engine.h"

namespace gantry::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  int max_tokens = 64;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;
  int threads = 0;
  bool json = false;
  bool ignore_eos = false;
  std::vector<std::string> stop;
};

double ms_since(const Clock &clock, std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock.now() - t0).count();
}

int run_generate(GenerateOptions o, const Clock &clock) {
  auto t_load = clock.now();
  auto model = load_model_or_report(o.model);
  if (!model)
    return 1;
  const double load_ms = ms_since(clock, t_load);
  engine::EngineConfig ec;
  ec.n_threads = o.threads;
  ec.max_seqs = 1;
  engine::Engine eng(*model, ec);

  engine::GenerationRequest req;
  req.prompt = model->tokenizer().encode(o.prompt, true, true);
  req.max_tokens = o.max_tokens;
  req.sampling.temperature = o.temperature;
  req.sampling.top_k = o.top_k;
  req.sampling.top_p = o.top_p;
  req.sampling.min_p = o.min_p;
  req.sampling.repetition_penalty = o.repeat_penalty;
  if (o.seed >= 0)
    req.sampling.seed = static_cast<uint64_t>(o.seed);
  req.stop = o.stop;
  req.ignore_eos = o.ignore_eos;
  const auto prompt_ids = req.prompt;
  auto id = eng.submit(std::move(req));
  if (!id) {
    std::fprintf(stderr, "error: %s\n", id.error().message.c_str());
    return 1;
  }

  std::vector<int32_t> out_ids;
  std::string text;
  std::string finish;
  auto t0 = clock.now();
  double prompt_ms = 0;
  while (!eng.idle()) {
    for (auto &ev : eng.step()) {
      if (ev.token >= 0) {
        if (out_ids.empty())
          prompt_ms = ms_since(clock, t0);
        out_ids.push_back(ev.token);
      }
      text += ev.text;
      if (!o.json) {
        std::fputs(ev.text.c_str(), stdout);
        std::fflush(stdout);
      }
      if (ev.finish != engine::FinishReason::kNone)
        finish = engine::finish_reason_name(ev.finish);
    }
  }
  const double total_ms = ms_since(clock, t0);
  const double gen_ms = total_ms - prompt_ms;
  const double gen_tps = out_ids.size() > 1 ? (out_ids.size() - 1) / (gen_ms / 1000.0) : 0.0;
  const double pp_tps = prompt_ms > 0 ? prompt_ids.size() / (prompt_ms / 1000.0) : 0.0;
  if (o.json) {
    boost::json::object j;
    boost::json::array p, g;
    for (auto t : prompt_ids)
      p.push_back(t);
    for (auto t : out_ids)
      g.push_back(t);
    j["model"] = model->config().name;
    j["prompt"] = o.prompt;
    j["prompt_token_ids"] = std::move(p);
    j["generated_token_ids"] = std::move(g);
    j["text"] = text;
    j["finish_reason"] = finish;
    j["timings"] = {{"load_ms", load_ms},
                    {"prompt_ms", prompt_ms},
                    {"generation_ms", gen_ms},
                    {"prompt_tokens_per_s", pp_tps},
                    {"generation_tokens_per_s", gen_tps}};
    std::printf("%s\n", boost::json::serialize(j).c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr,
                 "[%zu prompt tokens in %.1f ms (%.1f tok/s), %zu generated in %.1f ms (%.1f "
                 "tok/s), finish: %s]\n",
                 prompt_ids.size(), prompt_ms, pp_tps, out_ids.size(), gen_ms, gen_tps,
                 finish.c_str());
  }
  return 0;
}

} // namespace

void register_generate_command(CLI::App &app, int &rc) {
  static GenerateOptions o;
  auto *cmd = app.add_subcommand("generate", "Generate text from a prompt with the native engine");
  cmd->add_option("--model", o.model, "GGUF model (default: the bundled stories260K)");
  cmd->add_option("--prompt,-p", o.prompt, "prompt text")->required();
  cmd->add_option("--max-tokens,-n", o.max_tokens, "tokens to generate")->default_val(64);
  cmd->add_option("--temperature", o.temperature, "0 = greedy (default)")->default_val(0.0f);
  cmd->add_option("--top-k", o.top_k, "0 = disabled")->default_val(0);
  cmd->add_option("--top-p", o.top_p, "1 = disabled")->default_val(1.0f);
  cmd->add_option("--min-p", o.min_p, "0 = disabled")->default_val(0.0f);
  cmd->add_option("--repeat-penalty", o.repeat_penalty, "1 = disabled")->default_val(1.0f);
  cmd->add_option("--seed", o.seed, "sampling seed (-1 = random)")->default_val(-1);
  cmd->add_option("--threads,-t", o.threads, "compute threads (0 = one per core)")->default_val(0);
  cmd->add_option("--stop", o.stop, "stop string (repeatable)");
  cmd->add_flag("--ignore-eos", o.ignore_eos, "keep generating after end-of-sequence");
  cmd->add_flag("--json", o.json, "print prompt ids, generated ids, text and timings as JSON");
  cmd->callback([&rc] {
    const SystemClock clock;
    rc = run_generate(o, clock);
  });
}

} // namespace gantry::cli
