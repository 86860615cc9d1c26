// The JSON line the server logs for a scaling decision (one per change of the desired count or
// of the reason, not one per evaluation), in the request log's shape: "timestamp" first, UTC
// with milliseconds, then an "event" naming the line.
#pragma once

#include <cstdint>
#include <string>

#include "autoscale/policy.h"

namespace gantry::autoscale {

std::string decision_json(const std::string &model, const Decision &d, const Signals &s,
                          int64_t unix_millis);

// Whether `next` is worth a line after `last` (the last one logged): the count or the reason
// moved. A pending state logs once when it begins, not every second while it lasts.
bool worth_logging(const Decision &last, const Decision &next);

} // namespace gantry::autoscale
