// The production HttpPoster: HTTP/1.1 through http::HttpClient, http:// or https:// (verified
// against the system CA store plus an optional CA file). The DSN is operator configuration, so
// its host is resolved by the system resolver on the forwarder's thread.
#pragma once

#include <chrono>
#include <string>

#include "core/result.h"
#include "observe/sentry.h"

namespace gantry::observe {

// Ok for http:// and https:// URLs with a host; kInvalidArgument otherwise. The composition
// root calls it on dsn.envelope_url() at start-up so that a bad DSN fails there.
Status check_postable_url(std::string_view url);

// Each call opens one connection (events are rate-limited, so there is nothing to pool), with
// `timeout` for connect, write and read. `tls_ca_file` adds trusted CAs for https (private CAs,
// tests). Thread-compatible: the forwarder calls it from its one thread.
HttpPoster make_http_poster(std::chrono::milliseconds timeout = std::chrono::seconds(5),
                            std::string tls_ca_file = {});

} // namespace gantry::observe
