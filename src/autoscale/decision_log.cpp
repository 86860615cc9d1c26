#include "autoscale/decision_log.h"

#include <boost/json.hpp>

#include <cstdio>

#include "core/time_format.h"

namespace gantry::autoscale {

std::string decision_json(const std::string &model, const Decision &d, const Signals &s,
                          int64_t unix_millis) {
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03dZ", static_cast<int>(unix_millis % 1000));
  namespace json = boost::json;
  json::object o;
  o["timestamp"] = format_utc(unix_millis / 1000, "%Y-%m-%dT%H:%M:%S") + ms;
  o["event"] = "autoscale_decision";
  o["model"] = model;
  o["desired"] = d.desired;
  o["previous"] = d.previous;
  o["recommended"] = d.recommended;
  o["reason"] = to_string(d.reason);
  o["trigger"] = to_string(d.trigger);
  o["detail"] = d.detail;
  o["signals"] = json::object{
      {"running", s.running_requests}, {"waiting", s.waiting_requests},
      {"queued_jobs", s.queued_jobs},  {"oldest_wait_s", s.oldest_wait_s},
      {"kv_usage", s.kv_usage},        {"tokens_per_s_per_replica", s.tokens_per_s_per_replica}};
  o["replicas"] = json::object{{"starting", s.replicas.starting},
                               {"ready", s.replicas.ready},
                               {"draining", s.replicas.draining}};
  return json::serialize(o);
}

bool worth_logging(const Decision &last, const Decision &next) {
  return next.desired != last.desired || next.reason != last.reason;
}

} // namespace gantry::autoscale
