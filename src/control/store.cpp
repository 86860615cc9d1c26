#include "control/store.h"

namespace gantry::control {

std::string_view to_string(OwnerKind kind) {
  switch (kind) {
  case OwnerKind::kKey: return "key";
  case OwnerKind::kProject: return "project";
  }
  return "project";
}

std::optional<OwnerKind> owner_kind_from(std::string_view s) {
  if (s == "key")
    return OwnerKind::kKey;
  if (s == "project")
    return OwnerKind::kProject;
  return std::nullopt;
}

std::string_view to_string(Period period) {
  switch (period) {
  case Period::kDay: return "day";
  case Period::kMonth: return "month";
  }
  return "month";
}

std::optional<Period> period_from(std::string_view s) {
  if (s == "day")
    return Period::kDay;
  if (s == "month")
    return Period::kMonth;
  return std::nullopt;
}

} // namespace gantry::control
