// The usage scanner: token counts out of a JSON body or the events of a stream.
#include "chatai/proto/usage.hpp"

#include <rapidjson/document.h>

namespace chatai::proto {

namespace {
constexpr std::size_t max_scanned = 1 << 20;
constexpr std::size_t tail_kept = 64 << 10;  // of a JSON body beyond max_scanned
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

void take_counts(const rapidjson::Value& usage, std::optional<std::int64_t>& prompt,
                 std::optional<std::int64_t>& completion) {
  take_count(usage, "prompt_tokens", prompt);
  take_count(usage, "completion_tokens", completion);
}

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

void usage_scanner::scan_json(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) return;
  const rapidjson::Value& root = doc;
  const auto usage = root.FindMember("usage");
  if (usage == root.MemberEnd() || !usage->value.IsObject()) return;
  take_counts(usage->value, prompt_tokens_, completion_tokens_);
}

// The object after the last "usage" key of the tail. Inside a JSON string every quote is
// escaped, and a quote that ends a string is never followed by a letter: so an unescaped quote,
// usage, a quote and a colon can only be the key "usage", and no text of the answer forges one.
void usage_scanner::scan_tail() {
  constexpr std::string_view key = "\"usage\"";
  std::string_view tail(tail_);
  constexpr auto none = std::string_view::npos;
  for (auto at = tail.rfind(key); at != none; at = at == 0 ? none : tail.rfind(key, at - 1)) {
    std::size_t backslashes = 0;
    while (backslashes < at && tail[at - 1 - backslashes] == '\\') ++backslashes;
    if (backslashes % 2 == 1 || backslashes == at) continue;  // escaped, or cannot be told
    std::size_t i = at + key.size();
    while (i < tail.size() && is_json_space(tail[i])) ++i;
    if (i == tail.size() || tail[i] != ':') continue;
    ++i;
    while (i < tail.size() && is_json_space(tail[i])) ++i;
    if (i == tail.size() || tail[i] != '{') continue;
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseStopWhenDoneFlag>(tail.data() + i, tail.size() - i);
    if (!doc.HasParseError() && doc.IsObject()) take_counts(doc, prompt_tokens_, completion_tokens_);
    return;
  }
}

void usage_scanner::feed(std::string_view bytes) {
  if (!event_stream_) {
    if (!overflow_ && pending_.size() + bytes.size() > max_scanned) {
      overflow_ = true;
      tail_ = std::move(pending_);
      pending_.clear();
    }
    if (!overflow_) {
      pending_.append(bytes);
      return;
    }
    tail_.append(bytes);
    if (tail_.size() > 2 * tail_kept) tail_.erase(0, tail_.size() - tail_kept);
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
  if (!event_stream_) {
    if (!overflow_) scan_json(pending_);
    if (overflow_) {
      if (tail_.size() > tail_kept) tail_.erase(0, tail_.size() - tail_kept);
      scan_tail();
    }
  }
  pending_.clear();
  tail_.clear();
}

}  // namespace chatai::proto
