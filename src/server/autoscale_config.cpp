#include "server/autoscale_config.h"

#include "server/toml_keys.h"

namespace gantry::server {
namespace {

using autoscale::PolicyConfig;
using toml_keys::Key;
using toml_keys::Millis;
using toml_keys::Range;

const Key<PolicyConfig> kPolicyKeys[] = {
    {"min_replicas", &PolicyConfig::min_replicas},
    {"max_replicas", &PolicyConfig::max_replicas},
    {"target_ongoing_requests", &PolicyConfig::target_ongoing_requests, Range::kPositive},
    {"target_queue_wait_s", Millis<PolicyConfig>{&PolicyConfig::target_queue_wait, 1000}},
    {"upscale_delay_s", Millis<PolicyConfig>{&PolicyConfig::upscale_delay, 1000}},
    {"downscale_delay_s", Millis<PolicyConfig>{&PolicyConfig::downscale_delay, 1000}},
    {"downscale_to_zero_delay_s",
     Millis<PolicyConfig>{&PolicyConfig::downscale_to_zero_delay, 1000}},
    {"max_scale_step", &PolicyConfig::max_scale_step},
};

} // namespace

Status read_autoscale(const toml::node &n, ServerConfig &c, const std::string &key) {
  const toml::table *t = n.as_table();
  if (!t)
    return config_error(key, "expected a table of [autoscale.<model>] tables");
  c.autoscale.clear();
  for (const auto &[model, node] : *t) {
    PolicyConfig p;
    const std::string at = key + "." + std::string(model.str());
    if (!node.is_table())
      return config_error(at, "expected a table ([autoscale.<model>] with the policy's knobs)");
    GANTRY_TRY(toml_keys::read_table(node, std::span(kPolicyKeys), p, at));
    c.autoscale[std::string(model.str())] = p;
  }
  return Ok();
}

Status validate_autoscale(const ServerConfig &c) {
  for (const auto &[model, policy] : c.autoscale) {
    const std::string at = "autoscale." + model;
    bool known = false;
    for (const auto &m : c.models)
      known = known || m.name == model;
    for (const auto &m : c.remote_models)
      known = known || m.name == model;
    if (!known)
      return config_error(at, "names no configured model (a [[models]] entry's name)");
    if (auto st = autoscale::validate(policy); !st)
      return config_error(at + "." + st.error().param, st.error().message);
  }
  return Ok();
}

} // namespace gantry::server
