// libFuzzer target: the frame reader of gate protocol version 2 on arbitrary bytes, fed in
// pieces whose sizes the input chooses, with the hello and status parsers on every payload.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/proto/frames.hpp"
#include "chatai/proto/wire.hpp"

using namespace chatai;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // The first two bytes choose the reader's limit and how the rest is cut.
  const std::uint32_t max_payload = 1024u + static_cast<std::uint32_t>(data[0]) * 256u;
  const std::size_t step = 1 + data[1];
  const std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);

  proto::frame_reader reader(max_payload);
  std::string again;  // the frames read, encoded anew
  bool failed = false;
  for (std::size_t i = 0; i < input.size() && !failed; i += step) {
    auto st = reader.feed(input.substr(i, step), [&](const proto::frame_view& f) {
      if (f.payload.size() > max_payload) std::abort();
      if ((f.kind == proto::frame_kind::hello || f.kind == proto::frame_kind::goaway) != (f.id == 0)) std::abort();
      if (f.kind == proto::frame_kind::window && (f.payload.size() != 4 || proto::window_credit(f) == 0)) std::abort();
      if (f.kind == proto::frame_kind::end && (f.payload.size() != 1 || proto::end_status(f) > 2)) std::abort();
      if (f.kind == proto::frame_kind::hello) {
        if (auto h = proto::parse_hello(f.payload); h && (h->version != 2 || h->max_requests == 0)) std::abort();
      }
      (void)proto::parse_status(f.payload);
      proto::append_frame(again, f.kind, f.id, f.payload);
      return status{};
    });
    if (!st) failed = true;
    if (reader.buffered() > proto::frame_head_bytes + max_payload) std::abort();
  }
  if (failed) return 0;
  // What was read whole is the input's prefix, byte for byte.
  if (input.substr(0, again.size()) != again) std::abort();
  if (again.size() + reader.buffered() != input.size()) std::abort();
  return 0;
}
