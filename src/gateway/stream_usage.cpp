// Usage in a response on its way to the client: counting through the protocol's usage scanner,
// and the removal of the usage-only chunk of a stream whose client did not ask for it.
#include "chatai/gateway/stream_usage.hpp"

#include "chatai/core/json.hpp"

namespace chatai::gateway {

bool is_usage_only_event(std::string_view event) {
  std::string data;
  std::size_t start = 0;
  while (start < event.size()) {
    std::size_t end = event.find('\n', start);
    if (end == std::string_view::npos) end = event.size();
    std::string_view line = event.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 5) == "data:") {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (!data.empty()) data += '\n';
      data += line;
    }
    start = end + 1;
  }
  if (data.find("\"usage\"") == std::string::npos) return false;
  auto doc = json::parse(data);
  if (!doc || !doc->IsObject()) return false;
  const auto choices = doc->FindMember("choices");
  const auto usage = doc->FindMember("usage");
  return choices != doc->MemberEnd() && choices->value.IsArray() && choices->value.Empty() &&
         usage != doc->MemberEnd() && usage->value.IsObject();
}

// An event ends at a blank line: "\n\n" or "\n\r\n" (a lone '\n' at the very start of an event
// does not end it).
std::size_t usage_filter::find_event_end(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (search_ == end_search::in_line) {
      const std::size_t newline = bytes.find('\n', i);
      const std::size_t upto = newline == std::string_view::npos ? bytes.size() : newline + 1;
      examined_ += upto - i;
      i = upto;
      if (newline != std::string_view::npos) search_ = end_search::line_start;
      continue;
    }
    ++examined_;
    const char c = bytes[i++];
    if (c == '\n') {
      search_ = end_search::in_line;
      return i;
    }
    search_ = c == '\r' && search_ == end_search::line_start ? end_search::line_start_cr : end_search::in_line;
  }
  return std::string_view::npos;
}

std::string usage_filter::feed(std::string_view bytes) {
  scanner_.feed(bytes);
  if (!event_stream_ || keep_usage_chunk_) return std::string(bytes);
  std::string out;
  while (!bytes.empty()) {
    const std::size_t end = find_event_end(bytes);
    const std::string_view piece = bytes.substr(0, end);
    bytes.remove_prefix(piece.size());
    if (passing_) {
      out.append(piece);
      passing_ = end == std::string_view::npos;
      continue;
    }
    const std::size_t event_size = pending_.size() + piece.size();
    if (end == std::string_view::npos) {
      if (event_size > max_held_event) {
        out.append(pending_);
        out.append(piece);
        pending_.clear();
        passing_ = true;
      } else {
        pending_.append(piece);
      }
      continue;
    }
    // A complete event; one longer than the bound passes as it would have passed in pieces.
    std::string_view event = piece;
    if (!pending_.empty()) {
      pending_.append(piece);
      event = pending_;
    }
    if (event_size > max_held_event || !is_usage_only_event(event)) out.append(event);
    pending_.clear();
  }
  return out;
}

std::string usage_filter::finish() {
  scanner_.finish();
  std::string out;
  if (!pending_.empty() && !is_usage_only_event(pending_)) out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace chatai::gateway
