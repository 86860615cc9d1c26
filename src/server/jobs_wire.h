// The jobs API's wire format and request parsing, shared by jobs_api.cpp (/v1/jobs) and
// batch_api.cpp (/v1/files, /v1/batches): JSON renderings of jobs, deliveries, files and batches,
// header values (Prefer, Cancel-After), multipart bodies, and the webhook destination check.
#pragma once

#include <boost/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "api/openai.h"
#include "core/result.h"
#include "http/response_writer.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"
#include "server/config.h"

namespace gantry::server {

// An error response, with Retry-After for errors that carry retry_after_ms.
void send_error(const std::shared_ptr<http::ResponseWriter> &w, const Error &e);
Error not_found(std::string_view what, std::string_view id);
// "500ms", "30s", "5m", "2h", "1d", or plain seconds.
std::optional<int64_t> parse_duration_ms(std::string_view s);
// `Prefer: respond-async, wait=10` → 10.
std::optional<int64_t> prefer_wait_s(std::optional<std::string_view> header);
// The webhook URL's check at submission: http(s) syntax, and a literal IP must be global unicast
// (loopback and private ranges only when configured). No DNS here (it runs on an I/O thread);
// names are resolved, checked and pinned at each delivery (http/webhook_client.h).
Status check_destination(const std::string &url, const JobsConfig &config);

boost::json::value seconds_or_null(int64_t ms);
// Stored JSON text as a value (a string when it does not parse).
boost::json::value parse_or_string(const std::string &s);
boost::json::object render_job(const jobs::Job &j);
boost::json::object render_delivery(const jobs::Delivery &d);
boost::json::object render_file(const jobs::StoredFile &f);
boost::json::object render_batch(const jobs::Batch &b);
std::string iso8601(int64_t unix_s);

// The body of a job's request as the gateway will run it: an object, never streamed (a job's
// result is one response).
Result<std::string> job_body(const boost::json::value &body);
// The "model" of a stored job body ("" when it has none): the job queue's lease filter key.
std::string job_model(std::string_view body);
std::optional<api::Endpoint> endpoint_of(std::string_view path);

// The Batch API's input file (JSONL): every non-blank line must be {"custom_id": unique
// non-empty string, "method": "POST" (optional), "url": `endpoint`, "body": a request this
// server can run}. Lines are split on '\n' (a trailing '\r' dropped). `errors` holds at most
// kMaxBatchInputErrors OpenAI-shaped entries {code, message, param, line}; any error fails the
// whole batch, so `lines` is meaningful only when there is none.
inline constexpr size_t kMaxBatchInputErrors = 100;
struct BatchInputLine {
  int line_no = 0;
  std::string custom_id;
  std::string body; // job_body() of the line's body
};
struct BatchInput {
  std::vector<BatchInputLine> lines;
  boost::json::array errors;
};
BatchInput parse_batch_input(std::string_view content, std::string_view endpoint);

// The same checks one line at a time, for an input file read piece by piece (it may be 200 MB):
// feed() splits what arrives into lines (a line longer than kMaxBatchLineBytes is an error) and
// calls `on_line` for each valid request; errors() collects the rest, as parse_batch_input.
// Holds the current partial line and the custom_ids seen (their uniqueness is a batch rule).
inline constexpr size_t kMaxBatchLineBytes = size_t{8} << 20;
class BatchLineReader {
public:
  BatchLineReader(std::string_view endpoint, std::function<void(BatchInputLine &&)> on_line);
  void feed(std::string_view bytes);
  void finish(); // the last line, when the file does not end with '\n'
  boost::json::array &errors() { return errors_; }

private:
  void line(std::string_view text);
  void fail(int line_no, std::string message);

  std::string endpoint_;
  std::function<void(BatchInputLine &&)> on_line_;
  std::set<std::string, std::less<>> seen_;
  std::string partial_;
  bool overlong_ = false; // skipping the rest of a line past kMaxBatchLineBytes
  int line_no_ = 0;
  boost::json::array errors_;
};

struct MultipartPart {
  std::string name;
  std::string filename;
  std::string content;
};
// multipart/form-data (RFC 7578) as the openai SDK's FormData sends it.
Result<std::vector<MultipartPart>> parse_multipart(std::string_view content_type,
                                                   std::string_view body);

} // namespace gantry::server
