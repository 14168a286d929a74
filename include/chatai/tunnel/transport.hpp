// The transport from the gateway to chatai-gate: one interface, with an SSH implementation
// (gate protocol version 2 where the gate announces it, version 1 otherwise) (ssh_transport.hpp) and a local one that runs the
// gate as a child process (local_transport.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chatai/core/cancellation.hpp"
#include "chatai/core/status.hpp"
#include "chatai/proto/wire.hpp"

namespace chatai::tunnel {

// The gate's commands (what the tunnel asks sshd to run), and one request before encoding
// (proto::encode_request): the wire format is the protocol module's.
using verb = proto::command;
using gate_request = proto::request;

// Where the response goes. Both run on the transport's I/O thread and must not block: a
// consumer on an Asio executor posts from them (asio::post) and reports progress with
// stream::consumed().
struct stream_callbacks {
  std::function<void(std::string_view bytes)> on_data;  // the next piece of the gate's answer
  // Called exactly once, after the last on_data: OK when the gate answered whole; otherwise
  // errc::cancelled, errc::timeout, errc::unavailable (the connection broke after the request
  // was sent, or the gate exited with an error status), errc::permission_denied (the client
  // key or the host key was refused), or errc::resource_exhausted (the queue is full).
  std::function<void(const status& outcome)> on_end;
};

struct request_options {
  // From the call until the first byte of the answer (queueing and connecting included).
  std::chrono::milliseconds first_byte_timeout{30000};
  // The longest gap between two pieces of the answer.
  std::chrono::milliseconds idle_timeout{60000};
  // Bytes delivered to on_data but not yet reported by stream::consumed() before the transport
  // stops reading this answer (the SSH window then fills and the gate waits). 0: no limit.
  std::size_t window = 0;
  // Firing it ends the request as stream::cancel() does.
  cancellation cancel;
};

// The caller's handle on one request in flight.
// Thread safety: all members may be called from any thread, also after the request ended.
class stream {
 public:
  virtual ~stream() = default;
  // Returns `bytes` of window (see request_options::window).
  virtual void consumed(std::size_t bytes) = 0;
  // Ends the request: its channel (or child) is closed at once, so the gate sees its client
  // leave; on_end gets errc::cancelled unless the request had ended already.
  virtual void cancel() = 0;
};

// A snapshot of the transport's health.
// Thread safety: a value type.
struct transport_health {
  bool alive = false;                 // the last keep-alive was answered
  std::chrono::steady_clock::time_point last_keep_alive{};  // when (default: never)
  int sessions_up = 0;                // SSH sessions connected (1 for the local transport)
  int requests_running = 0;
  int requests_queued = 0;
  std::string last_error;             // the last connection or keep-alive error, if any
};

// Thread safety: all members may be called from any thread, except that the blocking calls
// (call, status, keep_alive) must not be made from a stream callback.
class transport {
 public:
  virtual ~transport() = default;
  transport() = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  // Starts one verb with `input` on the gate's stdin. Returns at once; the callbacks run later
  // on the I/O thread. For verb::request stdin stays open until the answer ends (the gate
  // takes end-of-file as its client leaving); for the other verbs it is closed after `input`.
  virtual std::shared_ptr<stream> start(verb v, std::string input, stream_callbacks callbacks,
                                        request_options options) = 0;

  virtual transport_health health() const = 0;

  std::shared_ptr<stream> request(const gate_request& r, stream_callbacks callbacks, request_options options = {}) {
    return start(verb::request, proto::encode_request(r), std::move(callbacks), std::move(options));
  }

  // Runs a verb without input and returns its whole answer (blocking).
  result<std::string> call(verb v, std::chrono::milliseconds timeout);
  // The gate's status document (JSON text): services, models, backends, demand.
  result<std::string> status(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // One keep-alive: the gate answers OK and runs a scheduler tick when one is due.
  chatai::status keep_alive(std::chrono::milliseconds timeout = std::chrono::seconds(10));
};

}  // namespace chatai::tunnel
