// Ids for jobs, files and batches: the prefix (`job_`, `file-`, `batch_`, as OpenAI spells them)
// and 128 bits from the operating system's CSPRNG, written as 22 base62 characters. The ids are
// unique across nodes without coordination (two nodes minting in the same millisecond collide
// with probability ~2^-128) and unguessable, so one tenant cannot predict or pre-claim another's
// job id (audit H4). They carry no order: the list APIs page in insertion order instead.
//
// Threading: next() may be called from any thread.
#pragma once

#include <string>
#include <string_view>

namespace gantry::jobs {

class JobIds {
public:
  // Throws std::runtime_error when the CSPRNG fails (as the key generator does): an id that
  // might repeat must never be handed out.
  std::string next(std::string_view prefix);
};

// True when `id` is `prefix` followed by exactly the 22 base62 characters next() writes.
bool is_well_formed_id(std::string_view id, std::string_view prefix);

} // namespace gantry::jobs
