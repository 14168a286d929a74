// `chatai generate`: prints the continuation of a prompt, streaming.
#include <cstdio>

#include "chatai/engine/completion.hpp"
#include "commands.hpp"
#include "model_flags.hpp"

namespace chatai::cli {

void add_generate_command(CLI::App& app, int& exit_code) {
  struct options {
    model_flags model;
    std::string prompt;
    bool chat = false;
    std::int64_t n = 128;
    float temperature = 0.8f, top_p = 1.0f, min_p = 0.0f, repeat = 1.0f;
    std::int32_t top_k = 0;
    std::optional<std::uint64_t> seed;
    std::vector<std::string> stop;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("generate", "print the continuation of a prompt");
  opts->model.add_to(cmd);
  cmd->add_option("-p,--prompt", opts->prompt, "the prompt")->required();
  cmd->add_flag("--chat", opts->chat, "send the prompt as a user message through the chat template");
  cmd->add_option("-n,--max-tokens", opts->n, "tokens to generate at most")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", opts->temperature, "0 for greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", opts->top_p)->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", opts->top_k)->check(CLI::NonNegativeNumber);
  cmd->add_option("--min-p", opts->min_p)->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", opts->repeat)->check(CLI::PositiveNumber);
  cmd->add_option("--seed", opts->seed, "the same seed and prompt give the same text");
  cmd->add_option("--stop", opts->stop, "a stop string (repeatable)");
  cmd->callback([opts, &exit_code] {
    auto rt = opts->model.load();
    if (!rt) {
      exit_code = 1;
      return;
    }
    std::string text = opts->prompt;
    if (opts->chat) {
      auto rendered = rt->render_chat({{"user", opts->prompt}}, true);
      if (!rendered) {
        std::fprintf(stderr, "chatai: %s\n", rendered.err().message().c_str());
        exit_code = 1;
        return;
      }
      text = *rendered;
    }
    engine::completion_request req;
    req.prompt = std::move(text);
    req.is_chat = opts->chat;
    req.max_tokens = opts->n;
    req.stop = opts->stop;
    req.sampling.temperature = opts->temperature;
    req.sampling.top_p = opts->top_p;
    req.sampling.top_k = opts->top_k;
    req.sampling.min_p = opts->min_p;
    req.sampling.repetition_penalty = opts->repeat;
    req.sampling.seed = opts->seed;
    auto run = engine::completion::start(*rt, std::move(req));
    if (!run) {
      std::fprintf(stderr, "chatai: %s\n", run.err().message().c_str());
      exit_code = 1;
      return;
    }
    if (!opts->chat) std::fputs(opts->prompt.c_str(), stdout);
    while (!(*run)->done()) {
      auto piece = (*run)->next();
      if (!piece) {
        std::fprintf(stderr, "\nchatai: %s\n", piece.err().message().c_str());
        exit_code = 1;
        return;
      }
      std::fputs(piece->c_str(), stdout);
      std::fflush(stdout);
    }
    std::fputc('\n', stdout);
  });
}

}  // namespace chatai::cli
