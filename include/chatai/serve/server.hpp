// The OpenAI-compatible model server: HTTP endpoints over one engine thread that batches
// every request's sequences together; shared by `chatai serve`, the C ABI and Python.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

namespace chatai::serve {

struct server_options {
  std::filesystem::path model_path;
  std::string served_model_name;  // empty: the model file's name without ".gguf"
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port; see model_server::port()
  std::string device = "auto";
  int threads = 0;                      // CPU threads; 0: one per hardware thread
  std::int64_t context = 0;             // tokens per sequence; 0: the model's training context
  std::filesystem::path chat_template_path;  // a Jinja template to use instead of the model's; empty: the model's
  std::int64_t parallel = 8;            // sequences decoding together at most (a request with n takes n)
  // Tokens of finished sequences kept for their prefixes (engine/prefix_cache.hpp): a chat
  // turn reuses the KV of the history an earlier turn computed. -1: as many as the slots hold
  // (parallel × context), at most 1 GiB of KV; 0: no prefix cache.
  std::int64_t prefix_cache_tokens = -1;
  std::int64_t max_queue = 64;          // requests waiting for a slot at most; beyond it 429
  std::int64_t retry_after_seconds = 1;  // the Retry-After of 429 and 503 answers
  // A file holding the key that every endpoint but /health requires as "Authorization:
  // Bearer <key>". Empty: no authentication. The file must not be readable by group or others.
  std::filesystem::path api_key_file;
  int io_threads = 2;
};

enum class server_state { loading, ready, draining, stopped };

std::string_view to_string(server_state state) noexcept;

// Reads an API key file: one line, surrounding whitespace ignored. Errors: io_error or
// not_found when it cannot be read; permission_denied when group or others may read it;
// invalid_argument when it is empty.
result<std::string> read_api_key_file(const std::filesystem::path& path);

// A running server. start() binds the port and returns while the model loads on the engine
// thread (/health answers 503 "loading" meanwhile); wait_ready() reports the outcome.
// Thread safety: all members may be called from any thread, but never from a signal handler;
// stop() must not race with the destructor.
class model_server {
 public:
  // Errors: those of reading the API key file and of binding (invalid_argument, io_error).
  static result<std::unique_ptr<model_server>> start(server_options options);
  ~model_server();  // stop()
  model_server(const model_server&) = delete;
  model_server& operator=(const model_server&) = delete;

  // The bound port (the real one when options.port was 0).
  std::uint16_t port() const noexcept;
  const std::string& host() const noexcept;
  const std::string& served_model_name() const noexcept;
  server_state state() const noexcept;

  // Blocks until the model is loaded (OK, the state is then ready) or loading failed (its
  // error; the server then stays up answering 503 until stop()).
  status wait_ready();

  // Starts draining: /health answers 503 "draining", new requests get 503, the requests
  // already accepted (running or waiting) finish. Returns at once; idempotent.
  void drain();
  // Blocks until draining is complete (no request left) or the server stopped.
  void wait_drained();

  // Stops now: requests in flight are cut off (answers already complete are still sent out),
  // the threads joined. Idempotent.
  void stop();

  class impl;

 private:
  explicit model_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::serve
