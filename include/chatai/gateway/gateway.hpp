// The gateway: the web-facing OpenAI API of the cluster. It checks API keys (or a user signed in
// by a trusted reverse proxy), applies per-key limits, routes each request by model through the
// tunnel to chatai-gate, streams the answer back, accounts usage in SQLite and serves the chat
// page, /health and /metrics.
//
// Routes: POST /v1/chat/completions, /v1/completions and /v1/embeddings (proxied, accounted
// alike: an answer's usage, streamed or whole, is recorded per key), GET /v1/models (the cluster's
// models with a "state" each: ready, starting or offline), GET /health, GET /metrics, and the
// chat page (GET / and its assets) unless the config turns it off.
//
// API answers carry the gateway's own Content-Type, never the backend's: text/event-stream for a
// stream the client asked for, application/json otherwise; a whole answer that is not a JSON
// object, or a stream the client did not ask for, becomes a 502 error. Every API answer has
// X-Content-Type-Options: nosniff, and every error an OpenAI-style JSON body.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "chatai/core/status.hpp"
#include "chatai/gateway/config.hpp"
#include "chatai/gateway/key_store.hpp"
#include "chatai/tunnel/transport.hpp"

namespace chatai::gateway {

// Thread safety: port(), url(), keys() and refresh_models() may be called from any thread;
// start() and stop() from one thread at a time, never from a request handler.
class gateway {
 public:
  // Opens the database and builds the transport the config names; the gateway owns both.
  static result<std::unique_ptr<gateway>> create(gateway_config config);
  // Uses an existing transport (the config's transport settings are ignored); the transport
  // must outlive stop().
  static result<std::unique_ptr<gateway>> create(gateway_config config, std::shared_ptr<tunnel::transport> transport);
  ~gateway();  // stop()
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  // Fetches the cluster's status once (a failure is reported by /health, not here), then
  // listens. Errors: the address cannot be bound, or the gateway was started before.
  status start();

  // Fetches the cluster's status now rather than at the next renewal (after the caller changed
  // the cluster, say). A failure is reported by /health, as for a renewal.
  void refresh_models();

  // The bound port (the real one when the config said 0); 0 before start().
  std::uint16_t port() const noexcept;
  // "http://host:port".
  std::string url() const;

  // Stops listening, lets streams in flight end (until the config's shutdown grace passes,
  // then cuts them off), writes the usage still queued and stops the transport's use.
  // Idempotent.
  void stop();

  // The key store (for creating keys in-process).
  key_store& keys() noexcept;

  struct impl;

 private:
  explicit gateway(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::gateway
