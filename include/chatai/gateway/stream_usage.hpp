// Usage in a response on its way to the client: the token counts of a streamed or whole body,
// and the removal of the final usage chunk from a stream whose client did not ask for it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chatai/proto/usage.hpp"

namespace chatai::gateway {

// Fed the body piece by piece (events may be split anywhere); returns what goes on to the
// client. For a stream with keep_usage_chunk false, an event whose data is a JSON object with
// "choices":[] and a "usage" object (the chunk stream_options.include_usage adds) is dropped;
// every other byte passes unchanged and complete events are never held back.
//
// Only the start of an event that may still turn out to be the usage chunk is held back, at most
// max_held_event bytes: an event longer than that is passed on unfiltered as it arrives (the
// usage chunk is a few hundred bytes; a long event carries content and must not be delayed or
// buffered without bound). Whether an event is dropped depends only on its bytes, never on where
// the stream was split. The search for an event's end resumes where the last piece left it, so
// each byte is looked at once.
// Thread safety: not thread-safe; one per response.
class usage_filter {
 public:
  static constexpr std::size_t max_held_event = 64 * 1024;

  usage_filter(bool event_stream, bool keep_usage_chunk)
      : event_stream_(event_stream), keep_usage_chunk_(keep_usage_chunk), scanner_(event_stream) {}

  std::string feed(std::string_view bytes);
  // The end of the body: returns what was held back (an unterminated last event).
  std::string finish();

  std::optional<std::int64_t> prompt_tokens() const noexcept { return scanner_.prompt_tokens(); }
  std::optional<std::int64_t> completion_tokens() const noexcept { return scanner_.completion_tokens(); }

  // Bytes held back now (at most max_held_event).
  std::size_t held_bytes() const noexcept { return pending_.size(); }
  // Bytes the search for event ends has looked at so far: at most the bytes fed.
  std::size_t bytes_examined() const noexcept { return examined_; }

 private:
  // Where the search for the current event's end stands after the bytes seen so far.
  enum class end_search { in_line, line_start, line_start_cr };

  // The position just past the current event's end in `bytes`, or npos; carries the search's
  // state from one piece to the next.
  std::size_t find_event_end(std::string_view bytes);

  bool event_stream_;
  bool keep_usage_chunk_;
  proto::usage_scanner scanner_;
  std::string pending_;        // the start of an event not yet complete
  bool passing_ = false;       // the current event outgrew max_held_event and is passed on as it comes
  end_search search_ = end_search::in_line;
  std::size_t examined_ = 0;
};

// True when one server-sent event (its lines, without the blank line that ends it) carries
// only usage: data that is a JSON object with an empty "choices" array and a "usage" object.
bool is_usage_only_event(std::string_view event);

}  // namespace chatai::gateway
