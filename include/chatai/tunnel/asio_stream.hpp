// A tunnel request whose answer is delivered on an Asio executor, with back-pressure and
// cancellation: the bridge from the transport's I/O thread to an Asio consumer (the gateway's
// HTTP connections), with no thread per request.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/strand.hpp>

#include "chatai/core/cancellation.hpp"
#include "chatai/core/status.hpp"
#include "chatai/tunnel/transport.hpp"

namespace chatai::tunnel {

struct asio_stream_callbacks {
  // The next bytes of the answer. Pieces that arrived while the consumer was busy come joined
  // in one call. The bytes count against the window until consumed() returns them.
  std::function<void(std::string bytes)> on_data;
  // Exactly once, after the last on_data; the outcomes are those of stream_callbacks::on_end.
  std::function<void(const status& outcome)> on_end;
};

// The answer of one request, delivered on a strand of the consumer's executor: callbacks run
// there one at a time, in order, and never on the transport's I/O thread. Back-pressure: the
// transport stops reading the answer once `window` bytes were delivered and not consumed (the
// SSH window then fills and the gate waits for its client), so a consumer that passes bytes on
// asynchronously (asio::async_write, an HTTP response) calls consumed() when they have left.
// Timeouts are request_options' (first byte, idle). Cancelling closes the request's channel or
// child process at once; data not yet delivered is dropped and on_end gets errc::cancelled
// (unless the answer had ended already). The callbacks hold the stream until on_end has run.
//
// With core's http::response as the consumer: on_data writes the bytes with response::write()
// and calls consumed() once response::buffered_bytes() is below the server's low-water mark
// (checking again on a timer of the strand while it is not); on_end calls finish(); the
// response's cancelled() token goes in request_options::cancel, so a client that leaves closes
// the channel. No thread waits on anything.
// Thread safety: consumed(), cancel() and strand() may be called from any thread.
class asio_stream : public std::enable_shared_from_this<asio_stream> {
 public:
  // The window used when request_options::window is 0.
  static constexpr std::size_t default_window = 256 * 1024;

  // Starts `r` on `t`. The returned stream ends by itself; keeping it is needed only to call
  // consumed() or cancel(). Firing options.cancel ends it as cancel() does.
  static std::shared_ptr<asio_stream> start(transport& t, const asio::any_io_executor& executor, const gate_request& r,
                                            asio_stream_callbacks callbacks, request_options options = {});

  // Returns `bytes` of window: the consumer has passed them on.
  void consumed(std::size_t bytes);
  // Ends the request now (see above).
  void cancel();

  // The strand the callbacks run on.
  const asio::strand<asio::any_io_executor>& strand() const noexcept { return strand_; }

  // Use start(); public for std::make_shared.
  asio_stream(const asio::any_io_executor& executor, asio_stream_callbacks callbacks);

 private:
  void on_transport_data(std::string_view bytes);
  void on_transport_end(const status& outcome);
  void post_drain_locked();
  void drain();

  asio::strand<asio::any_io_executor> strand_;
  asio_stream_callbacks callbacks_;  // used on the strand only
  cancellation_source cancel_;

  std::mutex mutex_;  // guards the members below
  std::shared_ptr<stream> stream_;  // set once the transport took the request
  std::string pending_;             // delivered by the transport, not yet handed to on_data
  std::optional<status> end_;
  bool drain_posted_ = false;
  bool cancelled_ = false;
};

}  // namespace chatai::tunnel
