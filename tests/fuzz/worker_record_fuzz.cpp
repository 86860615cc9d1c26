// Fuzzes the decoding of worker registry records (cluster/worker_record.h): the JSON each worker
// announces into the shared registry (Redis) and every gateway reads back and routes by. Any
// client of the shared store can write these, so decoding must never misbehave (UBSan catches
// an out-of-range number converted to an integer), every decoded load is in range, and a
// decoded record survives encode → decode unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cluster/worker_record.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  const auto w = cluster::decode_worker(in);
  if (!w)
    return 0;
  if (w->in_flight < 0 || w->waiting < 0 || w->heartbeat_ms < 0 || !(w->kv_usage >= 0) ||
      w->kv_usage > 1)
    std::abort();
  (void)cluster::check_worker(*w, cluster::WorkerLimits{});
  const auto again = cluster::decode_worker(cluster::encode_worker(*w));
  if (!again || again->node_id != w->node_id || again->url != w->url ||
      again->models != w->models || again->available != w->available ||
      again->in_flight != w->in_flight || again->waiting != w->waiting ||
      again->kv_usage != w->kv_usage || again->heartbeat_ms != w->heartbeat_ms)
    std::abort();
  return 0;
}
