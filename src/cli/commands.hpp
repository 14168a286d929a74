// The subcommands of the `chatai` program; each file in src/cli/ adds one to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace chatai::cli {

// Settings every subcommand shares (logging).
struct global_options {
  std::string log_level = "info";
  bool log_json = false;
};

// Each subcommand file defines one add_<name>_command that registers its subcommand on `app`;
// the subcommand's callback stores its process exit code in `exit_code`.

// `chatai inspect FILE [--json]`: the contents of a GGUF model file.
void add_inspect_command(CLI::App& app, int& exit_code);

// `chatai generate --model FILE --prompt TEXT`: the continuation of a prompt.
void add_generate_command(CLI::App& app, int& exit_code);
// `chatai chat --model FILE`: an interactive terminal chat.
void add_chat_command(CLI::App& app, int& exit_code);
// `chatai perplexity --model FILE --file TEXT [--ctx N]`: perplexity as llama-perplexity computes it.
void add_perplexity_command(CLI::App& app, int& exit_code);
// `chatai bench --model FILE [--device D] [-p N] [-n N] [--batch N[,N...]] [--json]`: prefill and
// decode speed.
void add_bench_command(CLI::App& app, int& exit_code);
// `chatai synth --shape NAME --type T -o FILE [--seed N] [--tokenizer FILE]`: a model of a
// real shape with random weights.
void add_synth_command(CLI::App& app, int& exit_code);
// `chatai serve --model FILE [--port P] ...`: the OpenAI-compatible model server.
void add_serve_command(CLI::App& app, int& exit_code);
// `chatai proxy --upstream URL --api-key-file F [--endpoint-file E]`: the job key front of
// another OpenAI-compatible server (vLLM) inside a job.
void add_proxy_command(CLI::App& app, int& exit_code);
// `chatai tokenize --model FILE [--bos] [--special] [--decode]`: token ids of standard input.
void add_tokenize_command(CLI::App& app, int& exit_code);

// `chatai scheduler --config FILE init|tick|status [--json]`: the Slurm adapter's autoscaler.
void add_scheduler_command(CLI::App& app, int& exit_code);

// `chatai gateway --config FILE [--port-file F]`: the web-facing OpenAI API.
void add_gateway_command(CLI::App& app, int& exit_code);
// `chatai keys --db FILE create|list|revoke|usage`: the gateway's API keys and usage.
void add_keys_command(CLI::App& app, int& exit_code);
// `chatai up [--model FILE | --config FILE]`: the whole service, by default on this machine.
void add_up_command(CLI::App& app, int& exit_code);

// `chatai template (--template FILE | --model FILE)`: a chat template rendered for the JSON
// context on stdin.
void add_template_command(CLI::App& app, int& exit_code);

}  // namespace chatai::cli
