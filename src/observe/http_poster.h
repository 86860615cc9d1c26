// The production HttpPoster: plain-TCP HTTP/1.1 through http::HttpClient. https:// URLs are
// refused (HttpClient has no TLS); point sentry_dsn at a TLS-terminating proxy (e.g. a local
// nginx or Relay on http://127.0.0.1) to reach sentry.io.
#pragma once

#include <chrono>

#include "core/result.h"
#include "observe/sentry.h"

namespace gantry::observe {

// Ok for http:// URLs with a host; kUnsupported for https://, kInvalidArgument otherwise. The
// composition root calls it on dsn.envelope_url() at start-up so that a bad DSN fails there.
Status check_postable_url(std::string_view url);

// Each call opens one connection (events are rate-limited, so there is nothing to pool), with
// `timeout` for connect, write and read. Thread-compatible: the forwarder calls it from its one
// thread.
HttpPoster make_http_poster(std::chrono::milliseconds timeout = std::chrono::seconds(5));

} // namespace gantry::observe
