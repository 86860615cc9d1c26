// Config tables described once: each key's name, where its value goes and how it is checked.
// The same list rejects unknown keys and reads the known ones, so a new key is one line here next
// to its field (before, a key was listed for the unknown-key check and read again further down,
// and the remote-model reader had its own copy of every reader). Only the config readers include
// this header, so toml++ stays out of config.h's users.
#pragma once

#include <toml++/toml.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <variant>

#include "server/config.h"

namespace gantry::server::toml_keys {

enum class Range { kAny, kNonNegative, kPositive };

// A number in the file (seconds, hours, ...) kept as milliseconds: unit_ms per unit.
template <typename S> struct Millis {
  std::chrono::milliseconds S::*field;
  double unit_ms;
};

// The same, kept as whole seconds.
template <typename S> struct Secs {
  std::chrono::seconds S::*field;
  double unit_s;
};

// A key with a shape of its own (a sub-table, a list): reads the node into the struct.
template <typename S>
using Custom = Status (*)(const toml::node &n, S &out, const std::string &key);

// A key that is recognised only to be refused with a better message than "unknown key".
struct Refused {
  const char *why;
};

template <typename S>
using Field = std::variant<std::string S::*, int S::*, int64_t S::*, uint64_t S::*, double S::*,
                           bool S::*, Millis<S>, Secs<S>, Custom<S>, Refused>;

template <typename S> struct Key {
  const char *name;
  Field<S> field;
  Range range = Range::kAny;
};

namespace detail {

inline Status check_range(double v, Range r, const std::string &key) {
  if (r == Range::kNonNegative && v < 0)
    return config_error(key, "must not be negative");
  if (r == Range::kPositive && v <= 0)
    return config_error(key, "must be positive");
  return Ok();
}

// Every number of the config (durations, prices) is non-negative, and within `r`.
inline Result<double> number(const toml::node &n, Range r, const std::string &key) {
  auto v = n.value<double>();
  if (!v || *v < 0)
    return config_error(key, "expected a non-negative number");
  GANTRY_TRY(check_range(*v, r, key));
  return *v;
}

template <typename S>
Status read_one(const toml::node &n, const Key<S> &k, S &out, const std::string &key) {
  return std::visit(
      [&](const auto &f) -> Status {
        using F = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<F, Refused>) {
          return config_error(key, f.why);
        } else if constexpr (std::is_same_v<F, Custom<S>>) {
          return f(n, out, key);
        } else if constexpr (std::is_same_v<F, Millis<S>>) {
          GANTRY_ASSIGN_OR_RETURN(double v, number(n, k.range, key));
          out.*(f.field) = std::chrono::milliseconds(static_cast<int64_t>(v * f.unit_ms));
          return Ok();
        } else if constexpr (std::is_same_v<F, Secs<S>>) {
          GANTRY_ASSIGN_OR_RETURN(double v, number(n, k.range, key));
          out.*(f.field) = std::chrono::seconds(static_cast<int64_t>(v * f.unit_s));
          return Ok();
        } else if constexpr (std::is_same_v<F, std::string S::*>) {
          auto v = n.value<std::string>();
          if (!v)
            return config_error(key, "expected a string");
          out.*f = *v;
          return Ok();
        } else if constexpr (std::is_same_v<F, bool S::*>) {
          // value<bool>() would also accept 0 and 1; a typed TOML boolean is asked for.
          if (!n.is_boolean())
            return config_error(key, "expected true or false");
          out.*f = *n.value<bool>();
          return Ok();
        } else if constexpr (std::is_same_v<F, double S::*>) {
          GANTRY_ASSIGN_OR_RETURN(out.*f, number(n, k.range, key));
          return Ok();
        } else {
          auto parsed = n.value<int64_t>();
          if (!parsed)
            return config_error(key, "expected an integer");
          const int64_t v = *parsed;
          using T = std::remove_reference_t<decltype(out.*f)>;
          if (std::is_unsigned_v<T> && v < 0)
            return config_error(key, "must not be negative");
          GANTRY_TRY(check_range(static_cast<double>(v), k.range, key));
          out.*f = static_cast<T>(v);
          return Ok();
        }
      },
      k.field);
}

} // namespace detail

// Reads table `t` into `out` through `keys`; `prefix` ("jobs.", "models[2].") names the table in
// errors. A key not in the list is an error naming it.
template <typename S>
Status read_table(const toml::table &t, std::type_identity_t<std::span<const Key<S>>> keys, S &out,
                  const std::string &prefix) {
  for (const auto &[name, node] : t) {
    const Key<S> *k = nullptr;
    for (const auto &candidate : keys)
      if (name.str() == candidate.name)
        k = &candidate;
    const std::string key = prefix + std::string(name.str());
    if (!k)
      return config_error(key, "unknown key");
    GANTRY_TRY(detail::read_one(node, *k, out, key));
  }
  return Ok();
}

// The same for a node that must be a table (`[jobs]`, a `[[models]]` entry).
template <typename S>
Status read_table(const toml::node &n, std::type_identity_t<std::span<const Key<S>>> keys, S &out,
                  const std::string &key) {
  const toml::table *t = n.as_table();
  if (!t)
    return config_error(key, "expected a table");
  return read_table(*t, keys, out, key + ".");
}

} // namespace gantry::server::toml_keys
