// Ids for jobs, files and batches: the prefix (`job_`, `file-`, `batch_`, as OpenAI spells them)
// and 22 base62 characters. Without a clock all 22 are random (128 bits from the operating
// system's CSPRNG). With one, the first 8 are the creation time in unix milliseconds and the other
// 14 random (83 bits), like a UUIDv7: ids minted later sort later, so a store's primary-key index
// takes each new id at its end instead of anywhere (SQLite inserts were ~20% slower with fully
// random text keys at 30k jobs, more as the table grows). Either way the ids are unique across
// nodes without coordination and unguessable, so one tenant cannot predict or pre-claim
// another's job id (audit H4). The list APIs page in insertion order, not by id.
//
// Threading: next() may be called from any thread.
#pragma once

#include <string>
#include <string_view>

#include "core/clock.h"

namespace gantry::jobs {

class JobIds {
public:
  JobIds() = default;
  explicit JobIds(const Clock *clock) : clock_(clock) {}

  // Throws std::runtime_error when the CSPRNG fails (as the key generator does): an id that
  // might repeat must never be handed out.
  std::string next(std::string_view prefix);

private:
  const Clock *clock_ = nullptr;
};

// True when `id` is `prefix` followed by exactly the 22 base62 characters next() writes.
bool is_well_formed_id(std::string_view id, std::string_view prefix);

} // namespace gantry::jobs
