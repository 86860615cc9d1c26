#include "cluster/worker_record.h"

#include <boost/json.hpp>

namespace gantry::cluster {
namespace json = boost::json;
namespace {

// A JSON number as an int64 field: absent is 0; a fraction is truncated; anything outside
// [0, 2^63) is malformed (converting it would be undefined behaviour, and loads are never
// negative).
bool count_field(const json::object &o, const char *k, int64_t &out) {
  const json::value *f = o.if_contains(k);
  if (!f) {
    out = 0;
    return true;
  }
  if (f->is_int64()) {
    out = f->as_int64();
    return out >= 0;
  }
  if (f->is_uint64()) {
    if (f->as_uint64() > static_cast<uint64_t>(INT64_MAX))
      return false;
    out = static_cast<int64_t>(f->as_uint64());
    return true;
  }
  if (!f->is_double())
    return false;
  const double d = f->as_double();
  if (!(d >= 0 && d < 9.2e18)) // also false for NaN
    return false;
  out = static_cast<int64_t>(d);
  return true;
}

} // namespace

std::string encode_worker(const WorkerInfo &w) {
  json::array models;
  for (const auto &m : w.models)
    models.push_back(json::value(m));
  json::array available;
  for (const auto &m : w.available)
    available.push_back(json::value(m));
  json::object o{{"node_id", w.node_id},        {"url", w.url},
                 {"models", std::move(models)}, {"available", std::move(available)},
                 {"in_flight", w.in_flight},    {"waiting", w.waiting},
                 {"kv_usage", w.kv_usage},      {"heartbeat_ms", w.heartbeat_ms}};
  if (!w.prices.empty()) {
    json::object prices;
    for (const auto &[m, p] : w.prices)
      prices[m] = json::array{p.input_per_mtok, p.output_per_mtok, p.usd_per_hour};
    o["prices"] = std::move(prices);
  }
  return json::serialize(o);
}

std::optional<WorkerInfo> decode_worker(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return std::nullopt;
  const auto &o = v.as_object();
  WorkerInfo w;
  auto str = [&](const char *k, std::string &out) {
    auto *f = o.if_contains(k);
    if (!f || !f->is_string())
      return false;
    out = std::string(f->as_string());
    return true;
  };
  if (!str("node_id", w.node_id) || !str("url", w.url))
    return std::nullopt;
  auto *models = o.if_contains("models");
  if (!models || !models->is_array())
    return std::nullopt;
  for (const auto &m : models->as_array()) {
    if (!m.is_string())
      return std::nullopt;
    w.models.emplace_back(m.as_string());
  }
  // Absent in the entries of workers from before placement (issue 14): nothing to load.
  if (auto *available = o.if_contains("available")) {
    if (!available->is_array())
      return std::nullopt;
    for (const auto &m : available->as_array()) {
      if (!m.is_string())
        return std::nullopt;
      w.available.emplace_back(m.as_string());
    }
  }
  // Absent in the entries of workers from before prices were announced: unpriced.
  if (auto *prices = o.if_contains("prices")) {
    if (!prices->is_object())
      return std::nullopt;
    for (const auto &[m, p] : prices->as_object()) {
      if (!p.is_array() || p.as_array().size() != 3)
        return std::nullopt;
      double v[3];
      for (int i = 0; i < 3; ++i) {
        const json::value &x = p.as_array()[i];
        if (x.is_double())
          v[i] = x.as_double();
        else if (x.is_int64())
          v[i] = static_cast<double>(x.as_int64());
        else if (x.is_uint64())
          v[i] = static_cast<double>(x.as_uint64());
        else
          return std::nullopt;
        if (!(v[i] >= 0 && v[i] <= kMaxPrice)) // also false for NaN
          return std::nullopt;
      }
      ModelPrice mp;
      mp.input_per_mtok = v[0];
      mp.output_per_mtok = v[1];
      mp.usd_per_hour = v[2];
      w.prices[std::string(m)] = mp;
    }
  }
  if (!count_field(o, "in_flight", w.in_flight) || !count_field(o, "waiting", w.waiting) ||
      !count_field(o, "heartbeat_ms", w.heartbeat_ms))
    return std::nullopt;
  if (const json::value *f = o.if_contains("kv_usage")) {
    if (f->is_int64())
      w.kv_usage = static_cast<double>(f->as_int64());
    else if (f->is_uint64())
      w.kv_usage = static_cast<double>(f->as_uint64());
    else if (f->is_double())
      w.kv_usage = f->as_double();
    else
      return std::nullopt;
    if (!(w.kv_usage >= 0 && w.kv_usage <= 1)) // a fraction; also false for NaN
      return std::nullopt;
  }
  return w;
}

} // namespace gantry::cluster
