// The dashboard's static files (web/dashboard/), compiled into the binary by
// cmake/embed_assets.cmake: the server needs no asset directory and the page loads nothing from
// another host.
#pragma once

#include <string_view>

namespace gantry::dashboard {

struct WebAsset {
  std::string_view name;         // "app.js": the file name under web/dashboard/
  std::string_view content_type; // "text/javascript; charset=utf-8"
  std::string_view body;
};

// nullptr when there is no such file.
const WebAsset *find_web_asset(std::string_view name);

} // namespace gantry::dashboard
