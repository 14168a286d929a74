// Entry point of the `chatai` program: parses the command line and runs one subcommand.
#include <cstdio>

#include "chatai/core/log.hpp"
#include "chatai_version.h"
#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"chatai: a Slurm-native, OpenAI-compatible LLM service"};
  app.set_version_flag("--version", CHATAI_VERSION_STRING);
  app.require_subcommand(1);
  chatai::cli::global_options global;
  app.add_option("--log-level", global.log_level, "debug, info, warn, error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
  app.add_flag("--log-json", global.log_json, "write logs as JSON lines");
  app.parse_complete_callback([&global] {
    chatai::log::level lvl{};
    if (chatai::log::parse_level(global.log_level, lvl)) chatai::log::set_level(lvl);
    if (global.log_json) chatai::log::set_format(chatai::log::format::json);
  });

  int exit_code = 0;
  auto* version = app.add_subcommand("version", "print the version");
  version->callback([] { std::printf("chatai %s\n", CHATAI_VERSION_STRING); });
  chatai::cli::add_inspect_command(app, exit_code);
  chatai::cli::add_generate_command(app, exit_code);
  chatai::cli::add_chat_command(app, exit_code);
  chatai::cli::add_perplexity_command(app, exit_code);
  chatai::cli::add_bench_command(app, exit_code);
  chatai::cli::add_synth_command(app, exit_code);
  chatai::cli::add_serve_command(app, exit_code);
  chatai::cli::add_proxy_command(app, exit_code);
  chatai::cli::add_tokenize_command(app, exit_code);
  chatai::cli::add_scheduler_command(app, exit_code);
  chatai::cli::add_template_command(app, exit_code);
  chatai::cli::add_gateway_command(app, exit_code);
  chatai::cli::add_keys_command(app, exit_code);
  chatai::cli::add_up_command(app, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
