#include "control/key_service.h"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>

#include "control/api_key.h"

namespace gantry::control {
namespace json = boost::json;

Result<int64_t> parse_duration_s(std::string_view text) {
  if (text.empty())
    return Err(Error::invalid("empty duration"));
  int64_t mult = 1;
  switch (text.back()) {
  case 'd': mult = 86400; break;
  case 'h': mult = 3600; break;
  case 'm': mult = 60; break;
  case 's': mult = 1; break;
  default: mult = 0;
  }
  std::string_view digits = mult == 0 ? text : text.substr(0, text.size() - 1);
  if (mult == 0)
    mult = 1;
  int64_t n = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || p != digits.data() + digits.size() || n < 0 || n > int64_t{1} << 40) {
    return Err(
        Error::invalid("bad duration '" + std::string(text) + "' (use e.g. 30d, 24h, 90m, 45s)"));
  }
  return n * mult;
}

Result<IssuedKey> create_key(KeyStore &store, const std::string &pepper, const CreateKeyOptions &o,
                             int64_t now) {
  if (o.project.empty())
    return Err(Error::invalid("a key needs a project", "project"));
  if (o.limits.rpm < 0 || o.limits.tpm < 0 || o.limits.max_concurrent < 0) {
    return Err(Error::invalid("limits must be non-negative (0 = none)"));
  }
  // The project exists as soon as one of its keys does (limits can be set later).
  GANTRY_ASSIGN_OR_RETURN(auto proj, store.get_project(o.project));
  if (!proj)
    GANTRY_TRY(store.put_project(Project{o.project, {}, now}));
  IssuedKey out;
  KeyParts parts = generate_key();
  out.key = format_key(parts);
  ApiKey &k = out.record;
  k.id = parts.id;
  k.project = o.project;
  k.name = o.name;
  k.hash = hash_secret(pepper, parts.secret);
  k.models = o.models;
  k.limits = o.limits;
  k.created_at = now;
  k.expires_at = o.expires_in_s > 0 ? now + std::min(o.expires_in_s, kMaxDurationS) : 0;
  GANTRY_TRY(store.insert_key(k));
  return out;
}

Result<IssuedKey> rotate_key(KeyStore &store, const std::string &pepper, const std::string &id,
                             int64_t grace_s, int64_t now) {
  GANTRY_ASSIGN_OR_RETURN(auto key, store.get_key(id));
  if (!key)
    return Err(ErrorCode::kNotFound, "no API key with id '" + id + "'", "id");
  if (key->revoked_at != 0) {
    return Err(Error::invalid("API key '" + id + "' is revoked; create a new one", "id"));
  }
  KeyParts parts{id, random_base62(kKeySecretLength)};
  IssuedKey out;
  out.key = format_key(parts);
  out.record = *key;
  out.record.prev_hash = grace_s > 0 ? key->hash : std::string();
  out.record.prev_expires_at = grace_s > 0 ? now + std::min(grace_s, kMaxDurationS) : 0;
  out.record.hash = hash_secret(pepper, parts.secret);
  GANTRY_TRY(store.update_key(out.record));
  return out;
}

Result<ApiKey> revoke_key(KeyStore &store, const std::string &id, int64_t now) {
  GANTRY_ASSIGN_OR_RETURN(auto key, store.get_key(id));
  if (!key)
    return Err(ErrorCode::kNotFound, "no API key with id '" + id + "'", "id");
  if (key->revoked_at == 0) {
    key->revoked_at = now;
    GANTRY_TRY(store.update_key(*key));
  }
  return *key;
}

json::object key_json(const ApiKey &k, int64_t now) {
  json::array models;
  for (const auto &m : k.models)
    models.push_back(json::value(m));
  std::string status = "active";
  if (k.revoked_at != 0) {
    status = "revoked";
  } else if (k.expires_at != 0 && now >= k.expires_at) {
    status = "expired";
  }
  json::object o{
      {"id", k.id},
      {"object", "api_key"},
      {"project", k.project},
      {"name", k.name},
      {"status", status},
      {"models", std::move(models)},
      {"rpm", k.limits.rpm},
      {"tpm", k.limits.tpm},
      {"max_concurrent", k.limits.max_concurrent},
      {"created_at", k.created_at},
      {"expires_at", k.expires_at ? json::value(k.expires_at) : json::value(nullptr)},
      {"revoked_at", k.revoked_at ? json::value(k.revoked_at) : json::value(nullptr)},
      {"last_used_at", k.last_used_at ? json::value(k.last_used_at) : json::value(nullptr)}};
  if (!k.prev_hash.empty() && now < k.prev_expires_at) {
    o["previous_secret_valid_until"] = k.prev_expires_at;
  }
  return o;
}

} // namespace gantry::control
