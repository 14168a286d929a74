// The usage scanner: token counts out of a JSON body or the events of a stream.
#include "chatai/proto/usage.hpp"

#include <rapidjson/document.h>

namespace chatai::proto {

namespace {
constexpr std::size_t max_scanned = 1 << 20;
// No request comes near 2^40 tokens; a count beyond it is as wrong as a negative one.
constexpr std::int64_t max_token_count = std::int64_t(1) << 40;

// A count is believed only when it is a whole number in [0, max_token_count]. A wrong one is
// rejected rather than clamped: clamping would record a number the backend never meant (and a
// negative count would credit the key), while absent is what the records already say when a
// backend reports nothing. A rejected count leaves an earlier good one of the same stream.
void take_count(const rapidjson::Value& usage, const char* name, std::optional<std::int64_t>& out) {
  const auto it = usage.FindMember(name);
  if (it == usage.MemberEnd() || !it->value.IsInt64()) return;
  const std::int64_t n = it->value.GetInt64();
  if (n >= 0 && n <= max_token_count) out = n;
}

}  // namespace

void usage_scanner::scan_json(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) return;
  const rapidjson::Value& root = doc;
  const auto usage = root.FindMember("usage");
  if (usage == root.MemberEnd() || !usage->value.IsObject()) return;
  take_count(usage->value, "prompt_tokens", prompt_tokens_);
  take_count(usage->value, "completion_tokens", completion_tokens_);
}

void usage_scanner::feed(std::string_view bytes) {
  if (!event_stream_) {
    if (overflow_) return;
    if (pending_.size() + bytes.size() > max_scanned) {
      overflow_ = true;
      pending_.clear();
      return;
    }
    pending_.append(bytes);
    return;
  }
  while (!bytes.empty()) {
    const auto newline = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, newline);
    if (!overflow_) {
      if (pending_.size() + piece.size() > max_scanned) {
        overflow_ = true;
        pending_.clear();
      } else {
        pending_.append(piece);
      }
    }
    if (newline == std::string_view::npos) return;
    bytes.remove_prefix(newline + 1);
    if (!overflow_) {
      std::string_view line(pending_);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, 5) == "data:") {
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (line != "[DONE]") scan_json(line);
      }
    }
    pending_.clear();
    overflow_ = false;
  }
}

void usage_scanner::finish() {
  if (!event_stream_ && !overflow_) scan_json(pending_);
  pending_.clear();
}

}  // namespace chatai::proto
