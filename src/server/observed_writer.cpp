#include "server/observed_writer.h"

#include <boost/json.hpp>

namespace gantry::server {

void ObservedWriter::note_error(const std::string &body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) {
    rec_->error_type = "unknown";
    rec_->error = body.substr(0, 200);
    return;
  }
  const auto *e = v.as_object().if_contains("error");
  if (!e || !e->is_object())
    return;
  const auto &o = e->as_object();
  if (const auto *t = o.if_contains("type"); t && t->is_string()) {
    rec_->error_type = std::string(t->as_string());
  }
  if (const auto *m = o.if_contains("message"); m && m->is_string()) {
    rec_->error = std::string(m->as_string());
  }
}

} // namespace gantry::server
