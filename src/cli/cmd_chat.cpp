// `chatai chat`: an interactive terminal chat. Answers stream; Ctrl-C stops the answer, not
// the program (Ctrl-C at the prompt, Ctrl-D or /exit leave).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include "chatai/engine/completion.hpp"
#include "commands.hpp"
#include "model_flags.hpp"

namespace chatai::cli {

namespace {
std::atomic<bool> g_generating{false};
std::atomic<bool> g_interrupted{false};

void on_sigint(int) {
  if (g_generating.load()) {
    g_interrupted.store(true);
    return;
  }
  // At the prompt: leave as an interrupted program does.
  ::signal(SIGINT, SIG_DFL);
  ::raise(SIGINT);
}
}  // namespace

void add_chat_command(CLI::App& app, int& exit_code) {
  struct options {
    model_flags model;
    std::string system;
    std::int64_t n = 512;
    float temperature = 0.7f, top_p = 0.95f;
    std::optional<std::uint64_t> seed;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("chat", "chat with a model in the terminal");
  opts->model.add_to(cmd);
  cmd->add_option("--system", opts->system, "a system message");
  cmd->add_option("-n,--max-tokens", opts->n, "tokens per answer at most")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", opts->temperature)->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", opts->top_p)->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", opts->seed);
  cmd->callback([opts, &exit_code] {
    auto rt = opts->model.load();
    if (!rt) {
      exit_code = 1;
      return;
    }
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);

    std::vector<engine::chat_turn> turns;
    if (!opts->system.empty()) turns.push_back({"system", opts->system});
    const bool tty = ::isatty(STDIN_FILENO);
    std::string line;
    for (;;) {
      if (tty) std::fputs("\n> ", stdout);
      std::fflush(stdout);
      if (!std::getline(std::cin, line) || line == "/exit") break;
      if (line.empty()) continue;
      turns.push_back({"user", line});
      auto rendered = rt->render_chat(turns, true);
      if (!rendered) {
        std::fprintf(stderr, "chatai: %s\n", rendered.err().message().c_str());
        turns.pop_back();
        continue;
      }
      engine::completion_request req;
      req.prompt = std::move(*rendered);
      req.is_chat = true;
      req.max_tokens = opts->n;
      req.sampling.temperature = opts->temperature;
      req.sampling.top_p = opts->top_p;
      req.sampling.seed = opts->seed;
      auto run = engine::completion::start(*rt, std::move(req));
      if (!run) {
        std::fprintf(stderr, "chatai: %s\n", run.err().message().c_str());
        turns.pop_back();
        continue;
      }
      std::string answer;
      g_interrupted.store(false);
      g_generating.store(true);
      while (!(*run)->done()) {
        if (g_interrupted.load()) {
          std::fputs(" [stopped]", stdout);
          break;
        }
        auto piece = (*run)->next();
        if (!piece) {
          std::fprintf(stderr, "\nchatai: %s\n", piece.err().message().c_str());
          exit_code = 1;
          break;
        }
        answer += *piece;
        std::fputs(piece->c_str(), stdout);
        std::fflush(stdout);
      }
      g_generating.store(false);
      std::fputc('\n', stdout);
      turns.push_back({"assistant", answer});
    }
  });
}

}  // namespace chatai::cli
