// Test helper for ledger_crash_test: records usage rows with increasing ids (request_id
// "crash-<id>", created_at_ms = id) as fast as it can through a LedgerWriter, and after each
// successful flush() prints the highest id recorded before that flush. It runs until killed.
#include <cstdio>
#include <string>

#include "control/ledger_writer.h"
#include "store/sqlite/sqlite_store.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  auto store = gantry::control::SqliteStore::open(argv[1]);
  if (!store) {
    std::fprintf(stderr, "open: %s\n", store.error().message.c_str());
    return 1;
  }
  gantry::control::LedgerWriterOptions options;
  options.flush_interval = std::chrono::milliseconds(100);
  gantry::control::LedgerWriter writer(**store, **store, options);
  for (int64_t id = 1;; ++id) {
    gantry::control::UsageRecord r;
    r.request_id = "crash-" + std::to_string(id);
    r.key_id = "k";
    r.project = "p";
    r.model = "m";
    r.endpoint = "/v1/completions";
    r.input_tokens = 3;
    r.output_tokens = 4;
    r.created_at_ms = id;
    writer.record(std::move(r));
    if (id % 37 == 0) {
      if (auto st = writer.flush(); !st) {
        std::fprintf(stderr, "flush: %s\n", st.error().message.c_str());
        continue;
      }
      std::printf("%lld\n", static_cast<long long>(id));
      std::fflush(stdout);
    }
  }
}
