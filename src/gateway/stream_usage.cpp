// Usage in a response on its way to the client: counting through the gate's usage scanner,
// and the removal of the usage-only chunk of a stream whose client did not ask for it.
#include "chatai/gateway/stream_usage.hpp"

#include "chatai/core/json.hpp"

namespace chatai::gateway {

namespace {

// The end of the first event in `text` (just past its blank line), or npos.
std::size_t event_end(std::string_view text) {
  for (std::size_t i = text.find('\n'); i != std::string_view::npos; i = text.find('\n', i + 1)) {
    if (i + 1 < text.size() && text[i + 1] == '\n') return i + 2;
    if (i + 2 < text.size() && text[i + 1] == '\r' && text[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

}  // namespace

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

std::string usage_filter::feed(std::string_view bytes) {
  scanner_.feed(bytes);
  if (!event_stream_ || keep_usage_chunk_) return std::string(bytes);
  pending_.append(bytes);
  std::string out;
  std::size_t done = 0;
  for (;;) {
    const std::size_t end = event_end(std::string_view(pending_).substr(done));
    if (end == std::string_view::npos) break;
    const std::string_view event = std::string_view(pending_).substr(done, end);
    if (!is_usage_only_event(event)) out.append(event);
    done += end;
  }
  pending_.erase(0, done);
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
