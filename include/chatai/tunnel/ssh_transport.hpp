// The SSH transport: a pool of libssh sessions to the login node, each with one long-lived
// channel that carries many requests (gate protocol version 2) or one channel per request
// (version 1), the server's host key checked against a known_hosts file, reconnection with
// backoff and a periodic keep-alive.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "chatai/core/status.hpp"
#include "chatai/tunnel/transport.hpp"

namespace chatai::tunnel {

struct ssh_options {
  std::string host;
  int port = 22;
  std::string user;
  std::string key_file;        // an ed25519 or RSA private key (OpenSSH or PEM format)
  std::string passphrase;      // of the key file; empty: none
  std::string known_hosts;     // the file the server's host key is checked against
  // Accept a server that known_hosts does not list, and add its key to the file. A key that
  // differs from a listed one is refused all the same.
  bool trust_on_first_use = false;

  // With a gate of version 2 each session carries as many requests at once as its hello allows
  // (256 by default) on one channel; with one of version 1, 8 x 10 channels carry 80 requests
  // at once, with sshd's default MaxSessions (10).
  int sessions = 8;              // SSH connections in the pool
  int channels_per_session = 10; // channels open at once per session: at most sshd's MaxSessions
  int max_queued = 4096;         // requests waiting for a channel before new ones are refused

  std::chrono::milliseconds connect_timeout{5000};   // TCP, key exchange and authentication
  std::chrono::milliseconds reconnect_initial{100};  // the first backoff after a failure
  std::chrono::milliseconds reconnect_max{2000};     // backoff doubles up to this (with jitter)
  std::chrono::milliseconds keep_alive_interval{5000};  // 0: no keep-alive
  std::chrono::milliseconds keep_alive_timeout{5000};
};

// Thread model: one I/O thread drives every session of the pool without blocking (libssh in
// non-blocking mode, its event loop over the sessions' sockets and a wake-up descriptor);
// requests are queued from any thread and picked up there. Connecting, key exchange and
// authentication run on one short-lived thread per connection attempt, never on the I/O thread.
// Stream callbacks run on the I/O thread.
//
// When a session comes up it opens a channel for the gate's `session` command; once the gate's
// hello has come, requests go onto it as frames, each with its own window (the caller's
// request_options::window, or the hello's), so one slow reader never holds up another. A gate
// that refuses the command (exit status 2, or no hello within connect_timeout) gets one
// channel per request on that session, and version 2 is tried again 30 s later. After the
// gate's goaway a fresh session channel is opened beside the old one, which closes once its
// requests have ended. Keep-alive and status take a channel each.
// A request waits in the queue until a session can take it; if its session (or session
// channel) breaks before any of its bytes were sent, it goes back to the queue for a healthy
// one; once sent, it ends with errc::unavailable. A broken session is replaced after a backoff that doubles from
// reconnect_initial to reconnect_max, with jitter. An unknown or changed host key and a refused
// client key fail the waiting requests with errc::permission_denied; the pool goes on retrying.
// Thread safety: all members may be called from any thread (see transport).
class ssh_transport final : public transport {
 public:
  // Checks the options and reads the key file, then starts the I/O thread and the connections
  // (in the background: create() does not wait for them).
  static result<std::unique_ptr<ssh_transport>> create(ssh_options options);

  // Waits until a session is up (OK), a connection attempt fails (its error: errc::unavailable,
  // or errc::permission_denied for a refused host key or client key) or `timeout` passes.
  chatai::status wait_connected(std::chrono::milliseconds timeout);

  // Ends every request with errc::cancelled, closes the sessions, joins the threads.
  ~ssh_transport() override;

  std::shared_ptr<stream> start(verb v, std::string input, stream_callbacks callbacks,
                                request_options options) override;
  transport_health health() const override;

  struct impl;

 private:
  explicit ssh_transport(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::tunnel
