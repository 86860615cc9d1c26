#include "server/jobs_wire.h"

#include <boost/url/parse.hpp>

#include "core/time_format.h"
#include "http/destination.h"

#include <cstring>
#include <ctime>
#include <set>

namespace gantry::server {
namespace json = boost::json;
using jobs::Job;
using jobs::JobStatus;

void send_error(const std::shared_ptr<http::ResponseWriter> &w, const Error &e) {
  w->respond(http::error_response(e)); // Retry-After comes with it (one wire policy)
}

Error not_found(std::string_view what, std::string_view id) {
  return {ErrorCode::kNotFound, "No " + std::string(what) + " with id '" + std::string(id) + "'",
          "id"};
}

// "500ms", "30s", "5m", "2h", "1d", or plain seconds.
std::optional<int64_t> parse_duration_ms(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  size_t i = 0;
  int64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    v = v * 10 + (s[i++] - '0');
    if (v > 100'000'000)
      return std::nullopt;
  }
  if (i == 0)
    return std::nullopt;
  const std::string_view unit = s.substr(i);
  if (unit.empty() || unit == "s")
    return v * 1000;
  if (unit == "ms")
    return v;
  if (unit == "m")
    return v * 60'000;
  if (unit == "h")
    return v * 3'600'000;
  if (unit == "d")
    return v * 86'400'000;
  return std::nullopt;
}

// `Prefer: respond-async, wait=10` → 10.
std::optional<int64_t> prefer_wait_s(std::optional<std::string_view> h) {
  if (!h)
    return std::nullopt;
  const auto at = h->find("wait=");
  if (at == std::string_view::npos)
    return std::nullopt;
  int64_t v = 0;
  size_t i = at + 5;
  bool any = false;
  while (i < h->size() && (*h)[i] >= '0' && (*h)[i] <= '9') {
    v = std::min<int64_t>(v * 10 + ((*h)[i++] - '0'), 1'000'000);
    any = true;
  }
  return any ? std::optional<int64_t>(v) : std::nullopt;
}

// Syntax and literal addresses only: this runs on an HTTP I/O thread, so no DNS (audit H7). Names
// are resolved, checked and pinned at delivery (http/webhook_client.h).
Status check_destination(const std::string &url, const JobsConfig &c) {
  return http::check_webhook_url(url, {c.webhook_allow_loopback, c.webhook_allow_private});
}

json::value seconds_or_null(int64_t ms) {
  return ms > 0 ? json::value(ms / 1000) : json::value(nullptr);
}

json::value parse_or_string(const std::string &s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec)
    return json::value(s);
  return v;
}

json::object render_job(const Job &j) {
  json::object o;
  o["id"] = j.id;
  o["object"] = "job";
  o["status"] = std::string(jobs::job_status_name(j.status));
  o["endpoint"] = j.endpoint;
  o["priority"] = j.priority;
  o["metadata"] = parse_or_string(j.metadata);
  o["created_at"] = j.created_ms / 1000;
  o["started_at"] = seconds_or_null(j.started_ms);
  o["finished_at"] = seconds_or_null(j.finished_ms);
  o["expires_at"] = seconds_or_null(j.expires_at_ms);
  // Millisecond twins of the timestamps: ordering checks (fairness) need more than seconds.
  o["created_at_ms"] = j.created_ms;
  o["started_at_ms"] = j.started_ms;
  o["finished_at_ms"] = j.finished_ms;
  o["attempts"] = j.attempts;
  o["max_attempts"] = j.max_attempts;
  if (!j.webhook_url.empty()) {
    json::array ev;
    for (const auto &e : j.webhook_events)
      ev.push_back(json::value(e));
    o["webhook"] = j.webhook_url;
    o["webhook_events"] = std::move(ev);
  }
  if (!j.batch_id.empty()) {
    o["batch_id"] = j.batch_id;
    o["custom_id"] = j.custom_id;
  }
  o["result"] =
      j.status == JobStatus::kSucceeded ? parse_or_string(j.result) : json::value(nullptr);
  if (j.status == JobStatus::kFailed || j.status == JobStatus::kCanceled ||
      j.status == JobStatus::kExpired) {
    json::object e;
    e["message"] = j.error;
    e["status"] = j.result_status;
    if (!j.result.empty())
      e["response"] = parse_or_string(j.result);
    o["error"] = std::move(e);
  } else {
    o["error"] = nullptr;
  }
  if (j.status == JobStatus::kSucceeded) {
    o["usage"] = json::object{{"prompt_tokens", j.input_tokens},
                              {"completion_tokens", j.output_tokens},
                              {"total_tokens", j.input_tokens + j.output_tokens}};
    o["cost_usd"] = j.cost_usd;
  } else {
    o["usage"] = nullptr;
    o["cost_usd"] = nullptr;
  }
  o["urls"] = json::object{{"get", "/v1/jobs/" + j.id}, {"cancel", "/v1/jobs/" + j.id + "/cancel"}};
  return o;
}

json::object render_delivery(const jobs::Delivery &d) {
  return json::object{{"id", d.id},
                      {"object", "job.delivery"},
                      {"event", d.event},
                      {"url", d.url},
                      {"status", d.status},
                      {"attempts", d.attempts},
                      {"last_status", d.last_status},
                      {"last_error", d.last_error},
                      {"created_at", d.created_ms / 1000},
                      {"next_attempt_at", d.status == "pending" ? seconds_or_null(d.next_at_ms)
                                                                : json::value(nullptr)},
                      {"delivered_at", seconds_or_null(d.delivered_ms)}};
}

json::object render_file(const jobs::StoredFile &f) {
  return json::object{{"id", f.id},
                      {"object", "file"},
                      {"bytes", f.bytes},
                      {"created_at", f.created_ms / 1000},
                      {"filename", f.filename},
                      {"purpose", f.purpose},
                      {"status", "processed"},
                      {"status_details", nullptr}};
}

json::object render_batch(const jobs::Batch &b) {
  json::object o{
      {"id", b.id},
      {"object", "batch"},
      {"endpoint", b.endpoint},
      {"errors", b.errors.empty() ? json::value(nullptr) : parse_or_string(b.errors)},
      {"input_file_id", b.input_file_id},
      {"completion_window", b.completion_window},
      {"status", b.status},
      {"output_file_id",
       b.output_file_id.empty() ? json::value(nullptr) : json::value(b.output_file_id)},
      {"error_file_id",
       b.error_file_id.empty() ? json::value(nullptr) : json::value(b.error_file_id)},
      {"created_at", b.created_ms / 1000},
      {"in_progress_at", seconds_or_null(b.in_progress_ms)},
      {"expires_at", seconds_or_null(b.expires_ms)},
      {"finalizing_at", seconds_or_null(b.finalizing_ms)},
      {"completed_at", seconds_or_null(b.completed_ms)},
      {"failed_at", seconds_or_null(b.failed_ms)},
      {"expired_at", seconds_or_null(b.expired_ms)},
      {"cancelling_at", seconds_or_null(b.cancelling_ms)},
      {"cancelled_at", seconds_or_null(b.cancelled_ms)},
      {"request_counts",
       json::object{{"total", b.total}, {"completed", b.completed}, {"failed", b.failed}}},
      {"metadata", parse_or_string(b.metadata)}};
  return o;
}

std::string iso8601(int64_t unix_s) { return format_utc(unix_s, "%Y-%m-%dT%H:%M:%SZ"); }

// The body of a job's request as the gateway will run it: an object, never streamed (a job's
// result is one response).
Result<std::string> job_body(const json::value &body) {
  if (!body.is_object())
    return Error::invalid("body must be a JSON object (the request to run)", "body");
  json::object o = body.as_object();
  o["stream"] = false;
  o.erase("stream_options");
  return json::serialize(o);
}

std::string job_model(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object())
    return {};
  const json::value *m = v.as_object().if_contains("model");
  return m && m->is_string() ? std::string(m->as_string()) : std::string();
}

std::optional<api::Endpoint> endpoint_of(std::string_view path) {
  if (path == "/v1/chat/completions")
    return api::Endpoint::kChatCompletions;
  if (path == "/v1/completions")
    return api::Endpoint::kCompletions;
  return std::nullopt;
}

// multipart/form-data (RFC 7578) as the openai SDK's FormData sends it.
Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body) {
  auto at = content_type.find("boundary=");
  if (at == std::string_view::npos)
    return Error::invalid("expected multipart/form-data with a boundary", "file");
  std::string boundary(content_type.substr(at + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos)
    boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  const std::string delim = "--" + boundary;
  std::vector<MultipartPart> parts;
  size_t pos = body.find(delim);
  while (pos != std::string_view::npos) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--")
      break;
    if (body.substr(pos, 2) == "\r\n")
      pos += 2;
    const size_t head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos)
      return Error::invalid("malformed multipart body", "file");
    const std::string_view head = body.substr(pos, head_end - pos);
    const size_t next = body.find("\r\n" + delim, head_end + 4);
    if (next == std::string_view::npos)
      return Error::invalid("malformed multipart body (no closing boundary)", "file");
    MultipartPart p;
    p.content = std::string(body.substr(head_end + 4, next - head_end - 4));
    auto param = [&](std::string_view key) -> std::string {
      const std::string k = std::string(key) + "=\"";
      auto a = head.find(k);
      if (a == std::string_view::npos)
        return {};
      auto e = head.find('"', a + k.size());
      return std::string(head.substr(a + k.size(), e - a - k.size()));
    };
    p.name = param(" name");
    if (p.name.empty())
      p.name = param(";name");
    p.filename = param("filename");
    parts.push_back(std::move(p));
    pos = next + 2;
  }
  return parts;
}

BatchLineReader::BatchLineReader(std::string_view endpoint,
                                 std::function<void(BatchInputLine &&)> on_line)
    : endpoint_(endpoint), on_line_(std::move(on_line)) {}

void BatchLineReader::fail(int line_no, std::string message) {
  if (errors_.size() < kMaxBatchInputErrors)
    errors_.push_back(json::object{{"code", "invalid_request"},
                                   {"message", std::move(message)},
                                   {"param", nullptr},
                                   {"line", line_no}});
}

void BatchLineReader::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view part = bytes.substr(0, nl);
    if (!overlong_) {
      if (partial_.size() + part.size() > kMaxBatchLineBytes) {
        overlong_ = true;
        partial_.clear();
        partial_.shrink_to_fit();
      } else {
        partial_.append(part);
      }
    }
    if (nl == std::string_view::npos)
      return;
    bytes.remove_prefix(nl + 1);
    ++line_no_;
    if (overlong_)
      fail(line_no_, "line is longer than " + std::to_string(kMaxBatchLineBytes) + " bytes");
    else
      line(partial_);
    overlong_ = false;
    partial_.clear();
  }
}

void BatchLineReader::finish() {
  if (partial_.empty() && !overlong_)
    return;
  ++line_no_;
  if (overlong_)
    fail(line_no_, "line is longer than " + std::to_string(kMaxBatchLineBytes) + " bytes");
  else
    line(partial_);
  overlong_ = false;
  partial_.clear();
}

void BatchLineReader::line(std::string_view line) {
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  if (line.find_first_not_of(" \t") == std::string_view::npos)
    return;
  const std::optional<api::Endpoint> ep = endpoint_of(endpoint_);
  boost::system::error_code lec;
  json::value lv = json::parse(line, lec);
  if (lec || !lv.is_object())
    return fail(line_no_, "line is not a JSON object");
  const json::object &lo = lv.as_object();
  const json::value *cid = lo.if_contains("custom_id");
  const json::value *url = lo.if_contains("url");
  const json::value *method = lo.if_contains("method");
  const json::value *body = lo.if_contains("body");
  if (!cid || !cid->is_string() || cid->as_string().empty())
    return fail(line_no_, "custom_id is required");
  if (!seen_.insert(std::string(cid->as_string())).second)
    return fail(line_no_, "custom_id '" + std::string(cid->as_string()) + "' is repeated");
  if (method && (!method->is_string() || method->as_string() != "POST"))
    return fail(line_no_, "method must be POST");
  if (!ep || !url || !url->is_string() || url->as_string() != endpoint_)
    return fail(line_no_, "url must be the batch's endpoint " + endpoint_);
  auto jb = body ? job_body(*body) : Result<std::string>(Err(Error::invalid("body is required")));
  if (!jb)
    return fail(line_no_, jb.error().message);
  if (auto parsed = api::parse_inference_request(*ep, *jb); !parsed)
    return fail(line_no_, parsed.error().message);
  on_line_({line_no_, std::string(cid->as_string()), std::move(*jb)});
}

BatchInput parse_batch_input(std::string_view content, std::string_view endpoint) {
  BatchInput out;
  BatchLineReader reader(endpoint, [&](BatchInputLine &&l) { out.lines.push_back(std::move(l)); });
  reader.feed(content);
  reader.finish();
  out.errors = std::move(reader.errors());
  return out;
}

} // namespace gantry::server
