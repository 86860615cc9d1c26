#include "http/exchange.h"

namespace gantry::http::detail {

void for_each_line(std::string_view data, const std::function<void(std::string_view)> &f) {
  std::size_t start = 0;
  while (true) {
    std::size_t nl = data.find('\n', start);
    std::string_view line = data.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    f(line);
    if (nl == std::string_view::npos)
      break;
    start = nl + 1;
  }
}

void Exchange::schedule_locked() {
  if (inline_ || flush_scheduled_ || finished_)
    return;
  // After an abort the connection is gone; nothing to flush.
  if (auto c = conn_.lock()) {
    flush_scheduled_ = true;
    c->post_flush();
  }
}

} // namespace gantry::http::detail
