#include "control/key_authenticator.h"

#include "control/api_key.h"

namespace gantry::control {
namespace {

constexpr size_t kMaxCached = 100'000;

Error unauthorized(std::string msg) { return {ErrorCode::kUnauthorized, std::move(msg), {}}; }

} // namespace

std::optional<AuthMode> auth_mode_from_name(std::string_view name) {
  if (name == "auto")
    return AuthMode::kAuto;
  if (name == "required")
    return AuthMode::kRequired;
  if (name == "off")
    return AuthMode::kOff;
  return std::nullopt;
}

std::optional<std::string> open_api_warning(AuthMode mode, bool keys_required,
                                            std::string_view host) {
  if (mode != AuthMode::kOff && keys_required)
    return std::nullopt;
  const bool loopback = host == "localhost" || host == "::1" || host.starts_with("127.");
  std::string w = "WARNING: ";
  if (mode == AuthMode::kOff) {
    w += "auth = \"off\": the API accepts every request without a key, and keys, limits and "
         "quotas are not applied. For local development only.";
  } else {
    w += "no API key exists yet, so the API accepts every request without one (auth = "
         "\"auto\"). Create a key (`gantry keys create --project NAME`) to require keys from "
         "then on, or set auth = \"required\".";
  }
  if (!loopback) {
    w += " The server listens on " + std::string(host) +
         ", so anyone who can reach it over the network can use it.";
  }
  return w;
}

KeyAuthenticator::KeyAuthenticator(KeyStore &store, std::string pepper, const Clock &clock,
                                   AuthMode mode, UsedCallback on_used)
    : store_(store), pepper_(std::move(pepper)), clock_(clock), mode_(mode),
      on_used_(std::move(on_used)) {}

bool KeyAuthenticator::required() const {
  if (mode_ == AuthMode::kOff)
    return false;
  return mode_ == AuthMode::kRequired || keys_ever_.load(std::memory_order_relaxed) > 0;
}

Status KeyAuthenticator::refresh() {
  GANTRY_ASSIGN_OR_RETURN(int64_t gen, store_.keys_generation());
  // Revoked and expired keys count: once a key has existed, "auto" never falls open again.
  GANTRY_ASSIGN_OR_RETURN(int64_t ever, store_.count_keys_ever());
  keys_ever_.store(ever);
  if (generation_.exchange(gen) != gen)
    invalidate();
  return Ok();
}

void KeyAuthenticator::invalidate() {
  std::lock_guard<std::mutex> lk(mu_);
  cache_.clear();
}

Result<std::shared_ptr<const ApiKey>> KeyAuthenticator::lookup(const std::string &id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = cache_.find(id);
    if (it != cache_.end())
      return it->second.key;
  }
  GANTRY_ASSIGN_OR_RETURN(auto found, store_.get_key(id));
  std::shared_ptr<const ApiKey> key;
  if (found)
    key = std::make_shared<const ApiKey>(std::move(*found));
  std::lock_guard<std::mutex> lk(mu_);
  // Random ids from a scanner would otherwise grow the negative cache without bound.
  if (cache_.size() >= kMaxCached)
    cache_.clear();
  cache_[id] = Cached{key};
  return key;
}

Result<std::optional<Principal>>
KeyAuthenticator::authenticate(std::optional<std::string_view> authorization) {
  // Off: no key is looked at, not even a valid one (so no call is attributed or limited).
  if (mode_ == AuthMode::kOff)
    return std::optional<Principal>{};
  if (!authorization || authorization->empty()) {
    if (!required())
      return std::optional<Principal>{};
    return Err(unauthorized("You didn't provide an API key. You need to provide your API key in "
                            "an Authorization header using Bearer auth (i.e. Authorization: "
                            "Bearer YOUR_KEY)."));
  }
  std::string_view v = *authorization;
  constexpr std::string_view kBearer = "Bearer ";
  // ASCII case folding inline (std::tolower is a locale-aware library call per character).
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  if (v.size() < kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), v.begin(),
                  [&](char a, char b) { return lower(a) == lower(b); })) {
    return Err(unauthorized("The Authorization header must be 'Bearer YOUR_KEY'."));
  }
  v.remove_prefix(kBearer.size());
  while (!v.empty() && v.front() == ' ')
    v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ')
    v.remove_suffix(1);
  auto parts = parse_key(v);
  if (!parts) {
    // Without keys, clients that always send some token (the openai SDK insists on one) work.
    if (!required())
      return std::optional<Principal>{};
    return Err(unauthorized("Incorrect API key provided. Gantry keys look like gsk_..."));
  }
  GANTRY_ASSIGN_OR_RETURN(auto key, lookup(parts->id));
  if (!key)
    return Err(unauthorized("Incorrect API key provided."));
  const int64_t now = clock_.unix_seconds();
  const std::string h = hash_secret(pepper_, parts->secret);
  const bool current = hashes_equal(h, key->hash);
  const bool previous = !current && !key->prev_hash.empty() && now < key->prev_expires_at &&
                        hashes_equal(h, key->prev_hash);
  if (!current && !previous)
    return Err(unauthorized("Incorrect API key provided."));
  if (key->revoked_at != 0)
    return Err(unauthorized("This API key has been revoked."));
  if (key->expires_at != 0 && now >= key->expires_at) {
    return Err(unauthorized("This API key has expired."));
  }
  if (on_used_)
    on_used_(key->id, now);
  return std::optional<Principal>{Principal{key->id, key->project, key->models, key->limits}};
}

} // namespace gantry::control
