// `chatai serve`: the OpenAI-compatible model server, as it runs inside a Slurm job. SIGTERM,
// SIGINT and SIGUSR1 (Slurm's --signal) drain it; a second SIGTERM or SIGINT ends it at once.
// With --endpoint-file it reports where it listens the way the scheduler reads it.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <limits>
#include <thread>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/serve/server.hpp"
#include "commands.hpp"
#include "job_support.hpp"
#include "model_flags.hpp"

namespace chatai::cli {

namespace {

// Shows the loading time on a terminal until the model is loaded.
void show_loading(const serve::model_server& server, const std::string& model) {
  if (!::isatty(STDERR_FILENO)) return;
  const auto t0 = std::chrono::steady_clock::now();
  while (server.state() == serve::server_state::loading) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rloading %s ... %.1f s", model.c_str(), s);
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fputs("\r\033[K", stderr);
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  struct options {
    model_flags model;
    serve::server_options server;
    std::string api_key_file;
    std::string endpoint_file;
    int port = 8000;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("serve", "the OpenAI-compatible model server");
  opts->model.add_to(cmd);
  cmd->add_option("--api-key-file", opts->api_key_file,
                  "file holding the key every endpoint but /health requires (mode 600)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--endpoint-file", opts->endpoint_file,
                  "once listening, write {\"host\":...,\"port\":...} here (the scheduler's endpoint file)");
  cmd->add_option("--host", opts->server.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", opts->port, "port to listen on (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--served-model-name", opts->server.served_model_name,
                  "the model name clients use (default: the file name without .gguf)");
  cmd->add_option("--chat-template", opts->server.chat_template_path,
                  "a Jinja chat template file to use instead of the model's own")
      ->check(CLI::ExistingFile);
  cmd->add_option("--ctx", opts->server.context, "tokens per sequence (0: the model's context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefix-cache-tokens", opts->server.prefix_cache_tokens,
                  "tokens of finished requests kept for their prefixes (-1: the slots' worth, at most 1 GiB; 0: none)")
      ->check(CLI::Range(std::int64_t{-1}, std::numeric_limits<std::int64_t>::max()));
  cmd->add_option("--parallel", opts->server.parallel, "sequences decoding together at most")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-queue", opts->server.max_queue, "requests waiting at most; beyond it 429")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--retry-after", opts->server.retry_after_seconds, "Retry-After seconds of 429 and 503 answers")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->callback([opts, &exit_code] {
    auto& o = opts->server;
    o.model_path = opts->model.model;
    o.device = opts->model.device;
    o.threads = opts->model.threads;
    o.port = static_cast<std::uint16_t>(opts->port);
    o.api_key_file = opts->api_key_file;

    // Blocked before any thread starts, so only the watcher takes them.
    const sigset_t set = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    auto started = serve::model_server::start(o);
    if (!started) {
      std::fprintf(stderr, "chatai: %s\n", started.err().message().c_str());
      exit_code = 1;
      return;
    }
    auto& server = **started;
    std::atomic<bool> done{false};
    std::thread watcher([&] { watch_shutdown_signals([&] { server.drain(); }, done, "serve"); });
    show_loading(server, opts->model.model);
    auto ready = server.wait_ready();
    if (!ready) {
      std::fprintf(stderr, "chatai: %s\n", ready.err().message().c_str());
      exit_code = 1;
    } else {
      status reported;
      if (server.state() == serve::server_state::ready) {
        std::string line = "{\"event\":\"listening\",\"host\":";
        json::append_quoted(line, server.host());
        line += ",\"port\":" + std::to_string(server.port()) + ",\"model\":";
        json::append_quoted(line, server.served_model_name());
        line += "}\n";
        std::fputs(line.c_str(), stdout);
        std::fflush(stdout);
        log::info("serve: listening", {{"host", server.host()}, {"port", std::to_string(server.port())}});
        if (!opts->endpoint_file.empty()) reported = write_endpoint_file(opts->endpoint_file, server.host(), server.port());
      }
      if (!reported) {
        std::fprintf(stderr, "chatai: --endpoint-file: %s\n", reported.err().message().c_str());
        exit_code = 1;
      } else {
        server.wait_drained();
        log::info("serve: drained, exiting");
      }
    }
    server.stop();
    done.store(true);
    watcher.join();
  });
}

}  // namespace chatai::cli
