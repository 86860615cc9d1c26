#include "server/autoscale_config.h"

#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "server/toml_keys.h"

namespace gantry::server {
namespace {

using autoscale::PolicyConfig;
using toml_keys::Custom;
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

Status read_command(const toml::node &n, AutoscaleExecutorSpec &out, const std::string &key) {
  const toml::array *a = n.as_array();
  if (!a || a->empty())
    return config_error(key, "expected a non-empty array of strings: [\"program\", \"arg\", ...]");
  out.scale_command.clear();
  for (const auto &e : *a) {
    auto v = e.value<std::string>();
    if (!v || v->empty())
      return config_error(key,
                          "expected a non-empty array of strings: [\"program\", \"arg\", ...]");
    out.scale_command.push_back(*v);
  }
  return Ok();
}

// The executor's keys live in the same table as the policy's; each list reads its own.
const Key<AutoscaleExecutorSpec> kExecutorKeys[] = {
    {"executor", &AutoscaleExecutorSpec::executor},
    {"scale_command", Custom<AutoscaleExecutorSpec>{read_command}},
    {"command_timeout_s",
     Millis<AutoscaleExecutorSpec>{&AutoscaleExecutorSpec::command_timeout, 1000},
     Range::kPositive},
    {"start_timeout_s", Millis<AutoscaleExecutorSpec>{&AutoscaleExecutorSpec::start_timeout, 1000},
     Range::kPositive},
    {"max_held_requests", &AutoscaleExecutorSpec::max_held_requests, Range::kNonNegative},
    {"cold_start_timeout_s",
     Millis<AutoscaleExecutorSpec>{&AutoscaleExecutorSpec::cold_start_timeout, 1000},
     Range::kPositive},
};

bool is_executor_key(std::string_view k) {
  for (const auto &key : kExecutorKeys)
    if (k == key.name)
      return true;
  return false;
}

// An executable file: a path as given, or a name looked up on $PATH like execvp does.
bool executable(const std::string &program) {
  if (program.find('/') != std::string::npos)
    return ::access(program.c_str(), X_OK) == 0;
  const char *path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0)
      return true;
  return false;
}

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
    toml::table policy_keys, executor_keys;
    for (const auto &[k, v] : *node.as_table())
      (is_executor_key(k.str()) ? executor_keys : policy_keys).insert(k, v);
    GANTRY_TRY(toml_keys::read_table(policy_keys, std::span(kPolicyKeys), p, at + "."));
    AutoscaleExecutorSpec e;
    GANTRY_TRY(toml_keys::read_table(executor_keys, std::span(kExecutorKeys), e, at + "."));
    c.autoscale[std::string(model.str())] = p;
    c.autoscale_executors[std::string(model.str())] = std::move(e);
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
    const auto found = c.autoscale_executors.find(model);
    if (found == c.autoscale_executors.end())
      continue;
    const AutoscaleExecutorSpec &e = found->second;
    if (e.executor != "none" && e.executor != "local" && e.executor != "command" &&
        e.executor != "external")
      return config_error(at + ".executor",
                          "must be \"none\", \"local\", \"command\" or \"external\", got '" +
                              e.executor + "'");
    if (e.executor == "command" && e.scale_command.empty())
      return config_error(at + ".scale_command", "is required with executor = \"command\"");
    if (e.executor != "command" && !e.scale_command.empty())
      return config_error(at + ".scale_command", "is only used with executor = \"command\"");
    if (e.executor == "command" && !executable(e.scale_command.front()))
      return config_error(at + ".scale_command",
                          "'" + e.scale_command.front() + "' is not an executable file");
    if (e.max_held_requests > 100'000)
      return config_error(at + ".max_held_requests", "must be 0..100000");
    // A worker reads the same file: there the executor keys mean nothing and are ignored.
    if (!e.managed() || c.role == "worker")
      continue;
    if (c.role != "gateway")
      return config_error(at + ".executor",
                          "executor = \"" + e.executor +
                              "\" needs role = \"gateway\" (the gateway starts and stops the "
                              "model's workers; they register in Redis)");
    bool local = false;
    for (const auto &m : c.models)
      local = local || m.name == model;
    if (!local)
      return config_error(at + ".executor", "executor = \"" + e.executor +
                                                "\" scales a [[models]] entry with a path; '" +
                                                model + "' is a remote model");
  }
  return Ok();
}

} // namespace gantry::server
