// A worker's registry record on the wire: the JSON text a shared registry (Redis) stores for
// each announced worker and every gateway reads back. What comes back is untrusted — any client
// of the shared store can write it — so decoding rejects anything but the exact shape, and a
// number that does not fit its field (1e300 in `in_flight`, a negative load) is a malformed
// record, never a converted one; check_worker then applies the bounds.
//
// Threading: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cluster/worker_registry.h"

namespace gantry::cluster {

std::string encode_worker(const WorkerInfo &w);
// nullopt when `text` is not a record of the shape encode_worker writes.
std::optional<WorkerInfo> decode_worker(std::string_view text);

} // namespace gantry::cluster
