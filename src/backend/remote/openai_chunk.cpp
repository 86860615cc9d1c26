// The common OpenAI stream chunk decoded without a document: every streamed token passes through
// one chunk, and building and searching a Boost.JSON DOM for it was the largest single cost of a
// proxied stream (about 5,000 instructions a chunk). Boost.JSON's own tokenizer (basic_parser)
// feeds a handler that keeps only the fields the DOM decoder reads. It takes the shapes engines
// send for text — choices with index, delta.content or text, finish_reason, a null logprobs; a
// usage object — and gives up (nullopt) on anything else: tool calls, logprobs, an error, a
// repeated field, a value of an unexpected type. The DOM decoder then decides, so for every
// chunk this accepts the result is the DOM decoder's (tests/backend/remote compares the two).
#include <boost/json/basic_parser_impl.hpp>

#include <array>
#include <limits>
#include <span>

#include "backend/remote/wire.h"
#include "core/utf8.h"

namespace gantry::backend::remote::detail {
namespace {

namespace json = boost::json;

class ChunkHandler {
public:
  static constexpr std::size_t max_object_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_array_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_key_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_string_size = std::numeric_limits<std::size_t>::max();

  StreamStep step;
  bool gave_up = false;

  bool on_document_begin(json::error_code &) { return true; }
  bool on_document_end(json::error_code &) { return depth_ == 0; }

  bool on_object_begin(json::error_code &ec) {
    if (depth_ == 0)
      return push(Ctx::kTop, ec);
    switch (ctx()) {
    case Ctx::kSkip: return push(Ctx::kSkip, ec);
    case Ctx::kChoices:
      choice_ = UpstreamChoice{};
      choice_.index = next_pos_++;
      seen_ &= ~choice_fields();
      delta_object_ = false;
      delta_text_.clear();
      text_field_.clear();
      return push(Ctx::kChoice, ec);
    default: break;
    }
    switch (take_field()) {
    case Field::kUsage: step.usage = UpstreamUsage{}; return push(Ctx::kUsage, ec);
    case Field::kDelta: delta_object_ = true; return push(Ctx::kDelta, ec);
    case Field::kDetails: return push(Ctx::kDetails, ec);
    case Field::kOther: return push(Ctx::kSkip, ec);
    default: return give_up(ec);
    }
  }
  bool on_object_end(std::size_t, json::error_code &ec) {
    if (ctx() == Ctx::kChoice) {
      choice_.text = delta_object_ ? std::move(delta_text_) : std::move(text_field_);
      if (!choice_.text.empty() || !choice_.finish_reason.empty())
        step.deltas.push_back(std::move(choice_));
    }
    return pop(ec);
  }
  bool on_array_begin(json::error_code &ec) {
    if (depth_ == 0)
      return give_up(ec); // not an object
    if (ctx() == Ctx::kSkip)
      return push(Ctx::kSkip, ec);
    if (ctx() == Ctx::kChoices)
      return give_up(ec);
    switch (take_field()) {
    case Field::kChoices: return push(Ctx::kChoices, ec);
    case Field::kOther: return push(Ctx::kSkip, ec);
    default: return give_up(ec);
    }
  }
  bool on_array_end(std::size_t, json::error_code &ec) { return pop(ec); }

  bool on_key_part(json::string_view s, std::size_t, json::error_code &) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code &ec) {
    key_.append(s.data(), s.size());
    field_ = Field::kOther;
    for (const Known &k : known_in(ctx())) {
      // Length and first byte before the compare: most keys a chunk holds are not read.
      if (k.name.size() == key_.size() && k.name[0] == key_[0] && k.name == key_) {
        field_ = k.field;
        break;
      }
    }
    key_.clear();
    if (field_ == Field::kOther)
      return true;
    // A field read twice: which one the DOM keeps is its business.
    if (seen_ & bit(field_))
      return give_up(ec);
    seen_ |= bit(field_);
    return true;
  }

  bool on_string_part(json::string_view s, std::size_t, json::error_code &) {
    if (ctx() != Ctx::kSkip && wants_string(field_))
      str_.append(s.data(), s.size());
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code &ec) {
    if (ctx() == Ctx::kSkip)
      return true;
    const Field f = take_field();
    if (f == Field::kOther)
      return true;
    if (!wants_string(f))
      return give_up(ec);
    str_.append(s.data(), s.size());
    std::string text = utf8_sanitize(str_);
    str_.clear();
    if (f == Field::kContent)
      delta_text_ = std::move(text);
    else if (f == Field::kText)
      text_field_ = std::move(text);
    else
      choice_.finish_reason = std::move(text);
    return true;
  }
  bool on_number_part(json::string_view, json::error_code &) { return true; }
  bool on_int64(int64_t i, json::string_view, json::error_code &ec) {
    return integer(i >= 0, i >= 0 ? static_cast<uint64_t>(i) : 0, static_cast<double>(i), ec);
  }
  bool on_uint64(uint64_t u, json::string_view, json::error_code &ec) {
    return integer(true, u, static_cast<double>(u), ec);
  }
  bool on_double(double d, json::string_view, json::error_code &ec) {
    if (ctx() == Ctx::kSkip)
      return true;
    const Field f = take_field();
    if (f == Field::kOther)
      return true;
    if (f != Field::kCost)
      return give_up(ec);
    step.usage->cost_usd = plausible_cost(d);
    return true;
  }
  bool on_bool(bool, json::error_code &ec) { return scalar_other(ec); }
  bool on_null(json::error_code &ec) {
    if (ctx() == Ctx::kSkip)
      return true;
    switch (take_field()) {
    // null reads as absent for these (the DOM decoder's text_of, usage_of, embedded_error).
    case Field::kOther:
    case Field::kChoices:
    case Field::kUsage:
    case Field::kError:
    case Field::kDelta:
    case Field::kText:
    case Field::kFinish:
    case Field::kLogprobs:
    case Field::kContent:
    case Field::kToolCalls: return true;
    default: return give_up(ec);
    }
  }
  bool on_comment_part(json::string_view, json::error_code &) { return true; }
  bool on_comment(json::string_view, json::error_code &) { return true; }

private:
  enum class Ctx : uint8_t { kOutside, kTop, kChoices, kChoice, kDelta, kUsage, kDetails, kSkip };
  enum class Field : uint8_t {
    kNone,
    kOther, // a field this decoder does not read: its value is skipped
    kChoices,
    kUsage,
    kError,
    kIndex,
    kDelta,
    kText,
    kFinish,
    kLogprobs,
    kContent,
    kToolCalls,
    kPrompt,
    kCompletion,
    kDetails,
    kCost,
    kCached,
  };
  static constexpr uint32_t bit(Field f) { return uint32_t{1} << static_cast<unsigned>(f); }
  static constexpr uint32_t choice_fields() {
    return bit(Field::kIndex) | bit(Field::kDelta) | bit(Field::kText) | bit(Field::kFinish) |
           bit(Field::kLogprobs) | bit(Field::kContent) | bit(Field::kToolCalls);
  }
  // The fields read, by the object they are in; any other key's value is skipped.
  struct Known {
    std::string_view name;
    Field field;
  };
  static constexpr Known kTopFields[] = {
      {"choices", Field::kChoices}, {"usage", Field::kUsage}, {"error", Field::kError}};
  static constexpr Known kChoiceFields[] = {{"index", Field::kIndex},
                                            {"delta", Field::kDelta},
                                            {"text", Field::kText},
                                            {"finish_reason", Field::kFinish},
                                            {"logprobs", Field::kLogprobs}};
  static constexpr Known kDeltaFields[] = {{"content", Field::kContent},
                                           {"tool_calls", Field::kToolCalls}};
  static constexpr Known kUsageFields[] = {{"prompt_tokens", Field::kPrompt},
                                           {"completion_tokens", Field::kCompletion},
                                           {"prompt_tokens_details", Field::kDetails},
                                           {"cost_usd", Field::kCost}};
  static constexpr Known kDetailsFields[] = {{"cached_tokens", Field::kCached}};
  static std::span<const Known> known_in(Ctx c) {
    switch (c) {
    case Ctx::kTop: return kTopFields;
    case Ctx::kChoice: return kChoiceFields;
    case Ctx::kDelta: return kDeltaFields;
    case Ctx::kUsage: return kUsageFields;
    case Ctx::kDetails: return kDetailsFields;
    default: return {};
    }
  }
  static bool wants_string(Field f) {
    return f == Field::kContent || f == Field::kText || f == Field::kFinish;
  }

  // kOutside for a document that is not an object (then every value gives up).
  Ctx ctx() const { return depth_ == 0 ? Ctx::kOutside : ctxs_[depth_ - 1]; }
  Field take_field() {
    const Field f = field_;
    field_ = Field::kNone;
    return f;
  }
  bool push(Ctx c, json::error_code &ec) {
    if (depth_ == ctxs_.size())
      return give_up(ec);
    ctxs_[depth_++] = c;
    return true;
  }
  bool pop(json::error_code &) {
    --depth_;
    return true;
  }
  bool give_up(json::error_code &ec) {
    gave_up = true;
    ec = json::error::extra_data; // any error: the parser stops here
    return false;
  }
  // An integer value: token counts read as the DOM decoder's int_of (negative -> 0, above
  // INT64_MAX -> INT64_MAX); an index only when it is a valid choice index.
  bool integer(bool non_negative, uint64_t u, double d, json::error_code &ec) {
    if (ctx() == Ctx::kSkip)
      return true;
    const Field f = take_field();
    const int64_t count = non_negative
                              ? static_cast<int64_t>(std::min<uint64_t>(
                                    u, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
                              : 0;
    switch (f) {
    case Field::kOther: return true;
    case Field::kIndex:
      if (!non_negative || u >= static_cast<uint64_t>(api::kMaxTotalChoices))
        return give_up(ec);
      choice_.index = static_cast<int>(u);
      return true;
    case Field::kPrompt: step.usage->prompt_tokens = count; return true;
    case Field::kCompletion: step.usage->completion_tokens = count; return true;
    case Field::kCached: step.usage->cached_tokens = count; return true;
    case Field::kCost: step.usage->cost_usd = plausible_cost(d); return true;
    default: return give_up(ec);
    }
  }
  bool scalar_other(json::error_code &ec) {
    if (ctx() == Ctx::kSkip)
      return true;
    return take_field() == Field::kOther || give_up(ec);
  }

  std::array<Ctx, 80> ctxs_{};
  std::size_t depth_ = 0;
  Field field_ = Field::kNone;
  uint32_t seen_ = 0; // bit(field) of each field read in its object (a choice's: per choice)
  int next_pos_ = 0;
  UpstreamChoice choice_;
  bool delta_object_ = false;
  std::string delta_text_, text_field_;
  std::string key_, str_;
};

} // namespace

std::optional<StreamStep> decode_common_chunk(std::string_view data) {
  json::parse_options po;
  po.allow_invalid_utf8 = true; // repaired field by field, as the DOM decoder does
  po.max_depth = 64;
  json::basic_parser<ChunkHandler> p(po);
  json::error_code ec;
  const std::size_t n = p.write_some(false, data.data(), data.size(), ec);
  if (ec || n != data.size() || p.handler().gave_up || !p.done())
    return std::nullopt;
  return std::move(p.handler().step);
}

} // namespace gantry::backend::remote::detail
