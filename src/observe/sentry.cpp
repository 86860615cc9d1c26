#include "observe/sentry.h"

#include "core/time_format.h"

#include <openssl/rand.h>

#include <algorithm>
#include <ctime>
#include <stdexcept>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

namespace gantry::observe {

namespace {

constexpr std::string_view kSdkName = "gantry";
constexpr std::string_view kSdkVersion = "0.1.0";
constexpr std::size_t kMaxSentryTagValue = 200; // Sentry rejects longer tag values

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

Unexpected bad_dsn(std::string what) {
  return Err(ErrorCode::kInvalidArgument, "sentry_dsn: " + std::move(what), "sentry_dsn");
}

std::string utf8_prefix(const std::string &s, std::size_t max) {
  if (s.size() <= max)
    return s;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  return s.substr(0, cut);
}

// Seconds of a rate-limit entry's retry_after ("60" or "60.5"); -1 when not a number.
double parse_seconds(std::string_view s) {
  s = trim(s);
  if (s.empty())
    return -1;
  double value = 0, scale = 0;
  for (char c : s) {
    if (c == '.' && scale == 0) {
      scale = 1;
    } else if (c >= '0' && c <= '9') {
      if (scale == 0) {
        value = value * 10 + (c - '0');
      } else {
        scale /= 10;
        value += (c - '0') * scale;
      }
    } else {
      return -1;
    }
  }
  return value;
}

// The longest pause among X-Sentry-Rate-Limits entries ("retry_after:categories:scope:...",
// comma-separated; categories ';'-separated, empty = all) that apply to error events.
std::chrono::seconds sentry_header_pause(std::string_view header) {
  double longest = -1;
  while (!header.empty()) {
    const std::size_t comma = header.find(',');
    std::string_view entry = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    const std::size_t colon = entry.find(':');
    const double seconds = parse_seconds(entry.substr(0, colon));
    if (seconds < 0)
      continue;
    std::string_view categories =
        colon == std::string_view::npos ? std::string_view{} : entry.substr(colon + 1);
    categories = categories.substr(0, categories.find(':'));
    bool applies = trim(categories).empty();
    while (!applies && !categories.empty()) {
      const std::size_t semi = categories.find(';');
      const std::string_view c = trim(categories.substr(0, semi));
      applies = c == "error" || c == "default";
      categories =
          semi == std::string_view::npos ? std::string_view{} : categories.substr(semi + 1);
    }
    if (applies)
      longest = std::max(longest, seconds);
  }
  if (longest < 0)
    return std::chrono::seconds(-1);
  return std::chrono::seconds(static_cast<std::int64_t>(longest + 0.999));
}

} // namespace

std::string SentryDsn::envelope_url() const {
  std::string url = scheme + "://" + host;
  if (port != 0)
    url += ":" + std::to_string(port);
  return url + path + "/api/" + project_id + "/envelope/";
}

std::string SentryDsn::auth_header(std::string_view client) const {
  return "Sentry sentry_version=7, sentry_client=" + std::string(client) +
         ", sentry_key=" + public_key;
}

Result<SentryDsn> parse_dsn(std::string_view text) {
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed)
    return bad_dsn("not a URL (" + parsed.error().message() + ")");
  const boost::urls::url_view &u = *parsed;
  SentryDsn dsn;
  dsn.scheme = lower(u.scheme());
  if (dsn.scheme != "http" && dsn.scheme != "https")
    return bad_dsn("scheme must be http or https, got '" + dsn.scheme + "'");
  if (!u.has_userinfo() || u.user().empty())
    return bad_dsn("missing the public key before '@'");
  dsn.public_key = u.user();
  dsn.host = std::string(u.encoded_host());
  if (dsn.host.empty())
    return bad_dsn("missing the host");
  if (u.has_port()) {
    if (!all_digits(u.port()) || u.port_number() == 0)
      return bad_dsn("bad port");
    dsn.port = u.port_number();
  }
  std::string_view path = u.encoded_path();
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  const std::size_t slash = path.rfind('/');
  if (slash == std::string_view::npos)
    return bad_dsn("missing the project id");
  dsn.project_id = std::string(path.substr(slash + 1));
  if (!all_digits(dsn.project_id))
    return bad_dsn("the project id must be numeric");
  dsn.path = std::string(path.substr(0, slash));
  // Rebuilt without any legacy secret, because this string travels in every envelope header.
  dsn.raw = dsn.scheme + "://" + dsn.public_key + "@" + dsn.host +
            (dsn.port ? ":" + std::to_string(dsn.port) : "") + dsn.path + "/" + dsn.project_id;
  return dsn;
}

std::string rfc3339_millis(std::int64_t unix_millis) {
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(unix_millis % 1000));
  return format_utc(unix_millis / 1000, "%Y-%m-%dT%H:%M:%S") + frac;
}

std::string random_event_id() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1)
    throw std::runtime_error("RAND_bytes failed");
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40); // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80); // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 0xF];
  }
  return out;
}

std::string build_envelope(const SentryDsn &dsn, const SentryEventContext &context,
                           const ErrorEvent &event, std::string_view fingerprint,
                           std::string_view event_id, std::int64_t unix_millis) {
  namespace json = boost::json;
  const std::string when = rfc3339_millis(unix_millis);
  const json::object sdk{{"name", kSdkName}, {"version", kSdkVersion}};

  json::object tags;
  for (const auto &[k, v] : event.tags)
    tags[k] = utf8_prefix(v, kMaxSentryTagValue);
  tags["status"] = std::to_string(event.status);
  tags["location"] = utf8_prefix(event.location, kMaxSentryTagValue);

  json::object payload{
      {"event_id", event_id},
      {"timestamp", when},
      {"platform", "native"},
      {"level", "error"},
      {"logger", context.logger},
      {"release", context.release},
      {"environment", context.environment},
      {"transaction", event.location},
      {"exception",
       json::object{
           {"values", json::array{json::object{
                          {"type", event.type},
                          {"value", event.message},
                          {"mechanism", json::object{{"type", "gantry"}, {"handled", true}}},
                      }}}}},
      {"tags", std::move(tags)},
      // Our own fingerprint, so that Sentry groups exactly as GET /admin/v1/errors does.
      {"fingerprint", json::array{json::string(fingerprint)}},
      {"sdk", sdk},
  };
  if (!context.server_name.empty())
    payload["server_name"] = context.server_name;

  const std::string body = json::serialize(payload);
  const std::string header = json::serialize(
      json::object{{"event_id", event_id}, {"sent_at", when}, {"dsn", dsn.raw}, {"sdk", sdk}});
  const std::string item = json::serialize(json::object{
      {"type", "event"}, {"length", body.size()}, {"content_type", "application/json"}});
  return header + "\n" + item + "\n" + body + "\n";
}

std::chrono::seconds rate_limit_pause(const PostResponse &response, std::chrono::seconds fallback) {
  if (!response.sentry_rate_limits.empty()) {
    const std::chrono::seconds pause = sentry_header_pause(response.sentry_rate_limits);
    if (pause.count() >= 0)
      return pause;
  }
  const std::string_view retry_after = trim(response.retry_after);
  // An HTTP-date Retry-After is not worth a date parser here; the fallback covers it.
  if (all_digits(retry_after) && retry_after.size() < 10)
    return std::chrono::seconds(std::stoll(std::string(retry_after)));
  return fallback;
}

SentryForwarder::SentryForwarder(SentryDsn dsn, SentryOptions options, HttpPoster poster,
                                 const Clock &clock)
    : dsn_(std::move(dsn)), options_(std::move(options)), poster_(std::move(poster)), clock_(clock),
      url_(dsn_.envelope_url()), headers_{{"X-Sentry-Auth", dsn_.auth_header(kSentryClient)},
                                          {"Content-Type", "application/x-sentry-envelope"}},
      thread_([this] { loop(); }) {}

SentryForwarder::~SentryForwarder() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool SentryForwarder::paused_locked() const { return clock_.now() < paused_until_; }

void SentryForwarder::forget_stale_groups_locked() {
  const auto now = clock_.now();
  std::erase_if(last_sent_,
                [&](const auto &entry) { return now - entry.second >= options_.repeat_interval; });
  // Still full of groups seen within the interval: forgetting them all costs at most one extra
  // event per group, which beats unbounded memory.
  if (last_sent_.size() >= options_.max_tracked_groups)
    last_sent_.clear();
}

void SentryForwarder::on_error(const ErrorEvent &event, const CaptureResult &capture) {
  const auto now = clock_.now();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_)
      return;
    if (paused_locked()) {
      ++stats_.dropped_paused;
      return;
    }
    auto last = last_sent_.find(capture.fingerprint);
    if (!capture.new_group && last != last_sent_.end() &&
        now - last->second < options_.repeat_interval) {
      ++stats_.suppressed_repeats;
      return;
    }
    if (queue_.size() >= options_.queue_capacity) {
      ++stats_.dropped_queue_full;
      return;
    }
    if (last != last_sent_.end()) {
      last->second = now;
    } else {
      if (last_sent_.size() >= options_.max_tracked_groups)
        forget_stale_groups_locked();
      last_sent_[capture.fingerprint] = now;
    }
    queue_.push_back(Item{event, capture.fingerprint});
    ++stats_.enqueued;
  }
  wake_.notify_one();
}

bool SentryForwarder::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  return idle_.wait_for(lk, timeout, [&] { return queue_.empty() && !in_flight_; });
}

SentryStats SentryForwarder::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void SentryForwarder::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    wake_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_)
      break;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    if (paused_locked()) {
      ++stats_.dropped_paused;
      if (queue_.empty())
        idle_.notify_all();
      continue;
    }
    in_flight_ = true;
    lk.unlock();

    Result<PostResponse> response = Error::internal("not sent");
    try {
      const std::string id = options_.new_event_id ? options_.new_event_id() : random_event_id();
      const std::string body = build_envelope(dsn_, options_.context, item.event, item.fingerprint,
                                              id, clock_.unix_millis());
      response = poster_(url_, body, headers_);
    } catch (const std::exception &e) {
      // The transport is third-party code; a throw must not end the forwarding thread.
      response = Error::internal(e.what());
    }

    lk.lock();
    in_flight_ = false;
    std::chrono::seconds pause{0};
    if (!response.ok()) {
      ++stats_.failed;
    } else if (response->status == 429) {
      ++stats_.rate_limited;
      pause = rate_limit_pause(*response, options_.default_pause);
    } else {
      if (response->status >= 200 && response->status < 300)
        ++stats_.sent;
      else
        ++stats_.failed;
      // Sentry may announce limits on any response, not only on a 429.
      if (!response->sentry_rate_limits.empty())
        pause = std::max(pause, rate_limit_pause(*response, std::chrono::seconds(0)));
    }
    if (pause.count() > 0)
      paused_until_ = std::max(paused_until_, clock_.now() + pause);
    if (queue_.empty())
      idle_.notify_all();
  }
  stats_.dropped_at_shutdown += queue_.size();
  queue_.clear();
  idle_.notify_all();
}

} // namespace gantry::observe
