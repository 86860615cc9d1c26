// One Server-Sent Event with a name: the typed streams of OpenAI's Responses API and Anthropic's
// Messages API, whose clients dispatch on the `event:` field (the Anthropic SDK skips events
// without one).
#pragma once

#include <string>
#include <vector>

namespace gantry::api {

struct TypedEvent {
  std::string name; // the `event:` field; also the JSON's "type"
  std::string data; // one JSON object
};
using TypedEvents = std::vector<TypedEvent>;

} // namespace gantry::api
