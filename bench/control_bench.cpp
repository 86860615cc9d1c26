// The control plane's cost on the request path, in process: authenticate → admit → finish
// (HMAC of the key, the key cache, rate limits over key/project/global, a budget reservation and
// commit, cost, the breaker, one ledger row handed to the batching writer whose thread really
// writes SQLite meanwhile). Compared with the same path for an anonymous caller (auth off, no
// limits), which is what a server without keys pays. BM_AppendUsage: the ledger's batched write
// alone, per row.
//
//   build/bench/control_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "control/control_plane.h"
#include "control/key_service.h"
#include "control/memory_admission_store.h"
#include "store/sqlite/sqlite_store.h"

namespace {

using namespace gantry;
using namespace gantry::control;

struct Fixture {
  std::string dir;
  SystemClock clock;
  std::unique_ptr<ControlPlane> cp;
  std::string key;
  std::atomic<uint64_t> seq{0};

  explicit Fixture(bool with_key) {
    std::string tmpl = std::filesystem::temp_directory_path().string() + "/gantry_cb_XXXXXX";
    dir = mkdtemp(tmpl.data());
    auto opened = SqliteStore::open(dir);
    if (!opened)
      std::abort();
    std::shared_ptr<SqliteStore> store = std::move(opened).value();
    const std::string pepper = "bench-pepper-0123456789";
    if (with_key) {
      CreateKeyOptions o;
      o.project = "bench";
      o.limits = {1'000'000'000'000, 1'000'000'000'000'000, 0};
      auto k = create_key(*store, pepper, o, clock.unix_seconds());
      key = "Bearer " + k->key;
      Project p{"bench", {1'000'000'000'000, 1'000'000'000'000'000, 0}, 0};
      (void)store->put_project(p);
      Budget b;
      b.owner_kind = OwnerKind::kProject;
      b.owner_id = "bench";
      b.spend_limit_usd = 1e12;
      (void)store->put_budget(b);
    }
    ControlConfig cc;
    cc.global = with_key ? Limits{1'000'000'000'000, 0, 0} : Limits{};
    ModelControl mc{"m", Price{0.15, 0.60, 0}};
    // The embedded adapters, as open_stores() picks them for a server.
    ControlPorts ports;
    ports.keys = store;
    ports.ledger = store;
    ports.budgets = store;
    ports.admission = std::make_unique<MemoryAdmissionStore>(
        clock,
        std::vector<BreakerSpec>{
            {"m", BreakerConfig{1e9, std::chrono::seconds(60), std::chrono::seconds(300)}}},
        [store](OwnerKind k, std::string_view id, int64_t from) {
          return store->usage_of(k, id, from);
        });
    ports.idempotency = std::make_unique<MemoryIdempotencyStore>(clock);
    cp = std::make_unique<ControlPlane>(std::move(ports), pepper, cc, std::vector<ModelControl>{mc},
                                        clock, nullptr, nullptr);
    if (!cp->start())
      std::abort();
  }
  ~Fixture() {
    cp.reset();
    std::filesystem::remove_all(dir);
  }

  void one_request() {
    auto p = cp->authenticate(key.empty() ? std::nullopt : std::optional<std::string_view>(key));
    if (!p)
      std::abort();
    AdmitRequest ar;
    ar.principal = p->has_value() ? &**p : nullptr;
    ar.model = "m";
    ar.endpoint = "/v1/chat/completions";
    ar.request_id = "req-" + std::to_string(seq.fetch_add(1));
    ar.prompt_tokens = 100;
    ar.max_output_tokens = 200;
    ar.arrived_ms = clock.unix_millis();
    auto adm = cp->admit(ar);
    if (!adm)
      std::abort();
    Outcome o;
    o.input_tokens = 100;
    o.output_tokens = 150;
    o.latency_ms = 12;
    o.ttft_ms = 3;
    o.finish_reason = "stop";
    benchmark::DoNotOptimize(cp->finish(**adm, o));
  }
};

void BM_RequestPath(benchmark::State &state) {
  static Fixture *fx = nullptr;
  if (state.thread_index() == 0)
    fx = new Fixture(state.range(0) != 0);
  for (auto _ : state)
    fx->one_request();
  if (state.thread_index() == 0) {
    delete fx;
    fx = nullptr;
  }
}
BENCHMARK(BM_RequestPath)->ArgName("key")->Arg(0)->Arg(1)->UseRealTime()->MinTime(2.0);

// The ledger writer's flush: one transaction of `rows` usage rows (a busy server's batch is
// hundreds), each a new call of one key and model. Reported per row.
void BM_AppendUsage(benchmark::State &state) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/gantry_cb_XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  auto opened = SqliteStore::open(dir);
  if (!opened)
    std::abort();
  auto store = std::move(opened).value();
  const auto n = static_cast<size_t>(state.range(0));
  std::vector<UsageRecord> rows(n);
  uint64_t seq = 0;
  for (auto _ : state) {
    for (auto &r : rows) {
      r.request_id = "call-" + std::to_string(seq++);
      r.key_id = "key_0123456789ab";
      r.project = "bench";
      r.model = "bench";
      r.endpoint = "/v1/chat/completions";
      r.input_tokens = 12;
      r.output_tokens = 9;
      r.cost_usd = 1e-6;
      r.finish_reason = "stop";
      r.created_at_ms = 1'764'000'000'000 + static_cast<int64_t>(seq);
    }
    if (!store->append_usage(rows).ok())
      std::abort();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
  store.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AppendUsage)->ArgName("rows")->Arg(1)->Arg(32)->Arg(256)->MinTime(1.0);

} // namespace

BENCHMARK_MAIN();
