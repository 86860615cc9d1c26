// `gantry bench engine`: llama-bench-style throughput of the native engine: prompt processing
// (pp, one 512-token prompt), generation (tg, 128 tokens of one sequence) and batched
// generation (8 sequences decoding together). Medians over repetitions.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/progress.h"
#include "engine/batch/engine.h"
#include "engine/kernels/kernels.h"

namespace gantry::cli {
namespace {

struct BenchOptions {
  std::string model;
  int threads = 0;
  int n_prompt = 512;
  int n_gen = 128;
  int n_seqs = 8;
  int reps = 3;
  int probe_steps = 40;
  bool json = false;
};

using Clock = std::chrono::steady_clock;

// Resident memory of this process in MiB (VmRSS), to check that weights are mapped, not copied.
double rss_mib() {
  FILE *f = std::fopen("/proc/self/status", "r");
  if (!f)
    return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmRSS: %lf kB", &kb) == 1)
      break;
  }
  std::fclose(f);
  return kb / 1024.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<int32_t> random_prompt(int n, int n_vocab, uint64_t seed) {
  std::vector<int32_t> p(n);
  uint64_t s = seed;
  for (auto &t : p) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    // Skip the first ids, which are control and byte tokens in most vocabularies.
    t = static_cast<int32_t>(300 + (s >> 33) % static_cast<uint64_t>(std::max(1, n_vocab - 300)));
    if (t >= n_vocab)
      t = n_vocab - 1;
  }
  return p;
}

struct RunTimes {
  double first_s = 0;  // until every sequence produced its first token
  double decode_s = 0; // pure decoding after that
  long decoded = 0;    // tokens produced in decode_s
};

// Runs n_seqs sequences of `prompt_len` tokens generating `gen` tokens each. Tokens are counted as
// they come: a scheduler that let some sequences run ahead before the last one started must not
// make decoding look faster than it was.
RunTimes run(engine::Engine &eng, int n_vocab, int n_seqs, int prompt_len, int gen, uint64_t seed) {
  for (int i = 0; i < n_seqs; ++i) {
    engine::GenerationRequest r;
    r.prompt = random_prompt(prompt_len, n_vocab, seed + i);
    r.max_tokens = gen;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    if (!eng.submit(std::move(r)))
      return {};
  }
  auto t0 = Clock::now();
  int started = 0;
  long decoded = 0;
  Clock::time_point t_first;
  while (!eng.idle()) {
    // Tokens of the step that started the last sequence were computed before t_first.
    const bool counting = started == n_seqs;
    for (const auto &ev : eng.step()) {
      if (counting && ev.token >= 0)
        ++decoded;
      if (ev.n_generated == 1 && ++started == n_seqs)
        t_first = Clock::now();
    }
  }
  auto t_end = Clock::now();
  return {std::chrono::duration<double>(t_first - t0).count(),
          std::chrono::duration<double>(t_end - t_first).count(), decoded};
}

// Decode against plain reads of the very bytes it reads (issue 16: "decode reaching >= 90% of the
// measured read bandwidth"). A shared VM's memory bandwidth moves by a third from one minute to
// the next, so a probe run before or after decode (bench/read_bw) judges the ratio on the
// host's drift as much as on decode: here each decode step of one sequence is followed by one
// read pass over the weight matrices the step read, the pool's threads each reading a
// contiguous share of them, the read patterns (kernels::kReadPatterns) taking turns.
struct ProbeResult {
  double decode_gbps = 0; // weight bytes / median decode step
  double read_gbps = 0;   // weight bytes / median pass, the best pattern
  std::string pattern;
  int steps = 0;
};

ProbeResult read_probe(engine::Engine &eng, const engine::Model &model, int steps) {
  namespace k = engine::kernels;
  ProbeResult res;
  const auto ranges = model.decode_weight_ranges();
  size_t total = 0;
  for (const auto &r : ranges)
    total += r.second;
  auto &pool = eng.pool();
  const size_t nt = static_cast<size_t>(pool.size());
  if (total == 0 || steps <= 0)
    return res;
  // Thread t reads bytes [t * per, (t + 1) * per) of the ranges laid end to end.
  std::vector<std::vector<std::pair<const uint8_t *, size_t>>> shares(nt);
  const size_t per = (total + nt - 1) / nt;
  size_t at = 0;
  for (const auto &[p, n] : ranges) {
    for (size_t off = 0; off < n;) {
      const size_t t = std::min(at / per, nt - 1);
      const size_t take = std::min(n - off, (t + 1) * per - at);
      shares[t].emplace_back(static_cast<const uint8_t *>(p) + off, take);
      off += take;
      at += take;
    }
  }
  const auto patterns = k::read_patterns();
  const size_t npat = patterns.size();
  engine::GenerationRequest r;
  r.prompt = random_prompt(4, model.config().n_vocab, 400);
  r.max_tokens = steps + 1;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  if (!eng.submit(std::move(r)))
    return res;
  (void)eng.step(); // the prompt and the first token
  std::vector<double> dec;
  std::vector<std::vector<double>> rd(npat);
  std::atomic<uint64_t> sink{0};
  for (int i = 0; i < steps && !eng.idle(); ++i) {
    auto t0 = Clock::now();
    (void)eng.step();
    dec.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    const size_t pi = static_cast<size_t>(i) % npat;
    t0 = Clock::now();
    pool.run([&](int t) {
      uint64_t s = 0;
      for (const auto &[p, n] : shares[static_cast<size_t>(t)])
        s += k::read_bytes(p, n, patterns[pi]);
      sink.fetch_add(s, std::memory_order_relaxed);
    });
    rd[pi].push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  while (!eng.idle())
    (void)eng.step();
  if (dec.empty())
    return res;
  res.steps = static_cast<int>(dec.size());
  res.decode_gbps = static_cast<double>(total) / 1e9 / median(dec);
  for (size_t pi = 0; pi < npat; ++pi) {
    if (rd[pi].empty())
      continue;
    const double g = static_cast<double>(total) / 1e9 / median(rd[pi]);
    if (g > res.read_gbps) {
      res.read_gbps = g;
      res.pattern = k::read_pattern_name(patterns[pi]);
    }
  }
  return res;
}

int run_bench(BenchOptions o) {
  auto model = load_model_or_report(o.model);
  if (!model)
    return 1;
  const auto &cfg = model->config();
  engine::EngineConfig ec;
  ec.n_threads = o.threads;
  ec.max_seqs = std::max(o.n_seqs, 1);
  // Room for every sequence's token in one decode step, whatever the prompt length.
  ec.max_batch_tokens = std::max(o.n_prompt, o.n_seqs);
  // The read probe's sequence: a 4-token prompt and probe_steps + 1 tokens.
  ec.n_ctx = std::max({o.n_prompt + 8, o.n_gen + 8, o.probe_steps + 16});
  const size_t per_token =
      engine::KvCache::bytes_per_block(cfg.n_layer, cfg.kv_dim()) / engine::KvCache::kBlockSize;
  // The single-sequence tg run needs its n_gen + 1 tokens even when --seqs 0 skips batched decode.
  ec.kv_bytes = per_token * (static_cast<size_t>(std::max(o.n_seqs, 1)) * (o.n_gen + 32) +
                             o.n_prompt + 64 + static_cast<size_t>(o.probe_steps));
  engine::Engine eng(*model, ec);
  const double rss_after_load = rss_mib();

  // Warm-up: touches the weights and the workspace once.
  run(eng, cfg.n_vocab, 1, 16, 4, 1);

  std::vector<double> pp, tg, btg;
  Progress prog("bench", /*bytes=*/false);
  const int total = o.reps * 3;
  int done = 0;
  for (int r = 0; r < o.reps; ++r) {
    pp.push_back(o.n_prompt / run(eng, cfg.n_vocab, 1, o.n_prompt, 1, 100 + r).first_s);
    prog.update(++done, total);
    const RunTimes g = run(eng, cfg.n_vocab, 1, 1, o.n_gen + 1, 200 + r);
    tg.push_back(static_cast<double>(g.decoded) / g.decode_s);
    prog.update(++done, total);
    if (o.n_seqs > 0) { // --seqs 0 skips batched decode (side-by-side runs do not need it)
      const RunTimes b = run(eng, cfg.n_vocab, o.n_seqs, 1, o.n_gen + 1, 300 + r);
      btg.push_back(static_cast<double>(b.decoded) / b.decode_s);
    }
    prog.update(++done, total);
  }
  const ProbeResult probe = read_probe(eng, *model, o.probe_steps);
  prog.finish();
  boost::json::object j;
  j["model"] = o.model;
  j["name"] = cfg.name;
  j["threads"] = eng.pool().size();
  // Which kernels ran: side-by-side runs label an AVX2-only comparison by it.
  switch (engine::kernels::active_isa()) {
  case engine::kernels::Isa::kScalar: j["isa"] = "scalar"; break;
  case engine::kernels::Isa::kAvx2: j["isa"] = "avx2"; break;
  case engine::kernels::Isa::kAvx512Vnni: j["isa"] = "avx512_vnni"; break;
  }
  j["n_prompt"] = o.n_prompt;
  j["n_gen"] = o.n_gen;
  j["batched_seqs"] = o.n_seqs;
  j["repetitions"] = o.reps;
  j["pp_tokens_per_s"] = median(pp);
  j["tg_tokens_per_s"] = median(tg);
  j["batched_tg_tokens_per_s"] = median(btg);
  j["file_mib"] = static_cast<double>(model->file().file_size()) / 1048576.0;
  // What one decode step reads (the layers and the LM head): decode GB/s = tg x this.
  j["decode_weight_mib"] = static_cast<double>(model->decode_weight_bytes()) / 1048576.0;
  if (probe.steps > 0) {
    j["probe_steps"] = probe.steps;
    j["probe_decode_gbps"] = probe.decode_gbps;
    j["probe_read_gbps"] = probe.read_gbps;
    j["probe_read_pattern"] = probe.pattern;
    j["decode_read_ratio"] = probe.decode_gbps / probe.read_gbps;
  }
  j["kv_budget_mib"] = static_cast<double>(ec.kv_bytes) / 1048576.0;
  j["rss_after_load_mib"] = rss_after_load;
  j["rss_after_bench_mib"] = rss_mib();
  if (o.json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
  } else {
    std::printf("%s: pp%d %.1f tok/s, tg%d %.1f tok/s, %d-seq batched tg %.1f tok/s (%d threads)\n",
                cfg.name.c_str(), o.n_prompt, median(pp), o.n_gen, median(tg), o.n_seqs,
                median(btg), eng.pool().size());
    if (probe.steps > 0)
      std::printf("decode streams %.1f GB/s of weights = %.0f %% of a plain read of them (%.1f "
                  "GB/s, %s; %d steps, each followed by one read)\n",
                  probe.decode_gbps, 100 * probe.decode_gbps / probe.read_gbps, probe.read_gbps,
                  probe.pattern.c_str(), probe.steps);
  }
  return 0;
}

struct PrefixOptions {
  std::string model;
  int threads = 0;
  int n_prompt = 1000;
  int n_shared = 900;
  int reps = 3;
  bool json = false;
};

// Seconds from submit to the first generated token of one greedy request.
double ttft(engine::Engine &eng, std::vector<int32_t> prompt) {
  engine::GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = 1;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  auto t0 = Clock::now();
  if (!eng.submit(std::move(r)))
    return 0;
  while (!eng.idle())
    eng.step();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Time to first token of a prompt that shares a prefix with the previous request, with and
// without prefix reuse (issue: at least 5x faster with reuse for 1,000 tokens sharing 900).
int run_prefix_bench(PrefixOptions o) {
  auto model = load_model_or_report(o.model);
  if (!model)
    return 1;
  const auto &cfg = model->config();
  auto make = [&](bool prefix) {
    engine::EngineConfig ec;
    ec.n_threads = o.threads;
    ec.max_batch_tokens = 512;
    ec.n_ctx = o.n_prompt + 8;
    ec.prefix_cache = prefix;
    ec.kv_bytes = engine::KvCache::bytes_per_block(cfg.n_layer, cfg.kv_dim()) *
                  (3 * engine::KvCache::blocks_for_tokens(o.n_prompt + 8) + 4);
    return std::make_unique<engine::Engine>(*model, ec);
  };
  auto with = make(true), without = make(false);
  std::vector<double> warm, cold;
  for (int r = 0; r < o.reps; ++r) {
    auto first = random_prompt(o.n_prompt, cfg.n_vocab, 1000 + r);
    auto second = random_prompt(o.n_prompt, cfg.n_vocab, 2000 + r);
    std::copy(first.begin(), first.begin() + o.n_shared, second.begin());
    ttft(*with, first);
    warm.push_back(ttft(*with, second));
    ttft(*without, first);
    cold.push_back(ttft(*without, second));
  }
  const double w = median(warm), c = median(cold);
  boost::json::object j{{"model", o.model},
                        {"n_prompt", o.n_prompt},
                        {"n_shared", o.n_shared},
                        {"ttft_without_reuse_s", c},
                        {"ttft_with_reuse_s", w},
                        {"speedup", w > 0 ? c / w : 0.0},
                        {"threads", with->pool().size()}};
  if (o.json) {
    std::printf("%s\n", boost::json::serialize(j).c_str());
  } else {
    std::printf("%s: %d-token prompt sharing %d tokens: TTFT %.1f ms without reuse, %.1f ms "
                "with (%.1fx)\n",
                cfg.name.c_str(), o.n_prompt, o.n_shared, c * 1000, w * 1000, w > 0 ? c / w : 0);
  }
  return 0;
}

} // namespace

void register_bench_command(CLI::App &app, int &rc) {
  auto *bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  static BenchOptions o;
  auto *eng = bench->add_subcommand("engine", "pp512 / tg128 / batched tg of the native engine");
  eng->add_option("--model", o.model, "GGUF model (default: the bundled model)");
  eng->add_option("--threads,-t", o.threads, "compute threads (0 = one per core)");
  eng->add_option("--prompt-tokens", o.n_prompt, "prompt length for pp")->default_val(512);
  eng->add_option("--gen-tokens", o.n_gen, "tokens generated for tg")->default_val(128);
  eng->add_option("--seqs", o.n_seqs, "sequences for batched tg (0 = skip it)")
      ->default_val(8)
      ->check(CLI::NonNegativeNumber);
  eng->add_option("--reps,-r", o.reps, "repetitions (median reported)")->default_val(3);
  eng->add_option("--read-probe", o.probe_steps,
                  "decode steps, each followed by a plain read of the weights (0 = skip)")
      ->default_val(40)
      ->check(CLI::NonNegativeNumber);
  eng->add_flag("--json", o.json, "one JSON line");
  eng->callback([&rc] { rc = run_bench(o); });

  static PrefixOptions po;
  auto *pre = bench->add_subcommand("prefix", "TTFT with and without prefix reuse");
  pre->add_option("--model", po.model, "GGUF model (default: the bundled model)");
  pre->add_option("--threads,-t", po.threads, "compute threads (0 = one per core)");
  pre->add_option("--prompt-tokens", po.n_prompt, "prompt length")->default_val(1000);
  pre->add_option("--shared-tokens", po.n_shared, "tokens shared with the previous prompt")
      ->default_val(900);
  pre->add_option("--reps,-r", po.reps, "repetitions (median reported)")->default_val(3);
  pre->add_flag("--json", po.json, "one JSON line");
  pre->callback([&rc] {
    if (po.n_shared > po.n_prompt || po.n_prompt < 2) {
      std::fprintf(stderr, "error: need 2 <= --prompt-tokens and --shared-tokens <= it\n");
      rc = 2;
      return;
    }
    rc = run_prefix_bench(po);
  });
}

} // namespace gantry::cli
