// The request side of the HTTP layer: what a handler receives. Knows nothing about models.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gantry::http {

enum class Method { kGet, kHead, kPost, kPut, kDelete, kPatch, kOptions, kOther };

std::string_view to_string(Method method);

struct Header {
  std::string name;
  std::string value;
};
// A flat list rather than a map: requests carry a handful of headers, and a linear scan over
// contiguous memory beats hashing at that size.
using Headers = std::vector<Header>;

// Case-insensitive lookup of the first header named `name`.
std::optional<std::string_view> find_header(const Headers &headers, std::string_view name);

using Params = std::vector<std::pair<std::string, std::string>>;

// A fully read request. Built on an I/O thread, then owned by whichever thread the handler
// hands it to.
struct Request {
  Method method = Method::kOther;
  std::string target; // raw request-target as sent ("/v1/jobs/7?x=1")
  std::string path;   // percent-decoded path without the query ("/v1/jobs/7")
  Params query;       // decoded query parameters in order of appearance
  Params path_params; // filled by the Router from "{name}" segments
  Headers headers;
  std::string body;
  std::string remote_address; // "ip:port" of the peer
  std::string request_id;     // sanitized x-request-id from the client, or a generated one
  // Server-generated and unique per call (next_call_id()): the usage ledger's key. Never the
  // client's id, which a client could repeat to have calls deduplicated out of billing (H4).
  std::string call_id;
  bool keep_alive = true;

  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers, name);
  }
  std::optional<std::string_view> query_param(std::string_view name) const;
  // Empty when the route has no such parameter; routes declare their parameters statically.
  std::string_view path_param(std::string_view name) const;
};

} // namespace gantry::http
