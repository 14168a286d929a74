// `chatai tokenize --model FILE`: the token ids of the text on standard input, space-separated
// on one line; with --decode, the text of the token ids on standard input.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "chatai/engine/gguf.hpp"
#include "chatai/engine/vocabulary.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

using engine::token_id;

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

// Whitespace-separated decimal ids. Errors: invalid_argument naming the first bad word.
result<std::vector<token_id>> parse_ids(const std::string& text) {
  std::vector<token_id> ids;
  const char* pos = text.c_str();
  while (true) {
    while (*pos == ' ' || *pos == '\t' || *pos == '\n' || *pos == '\r') ++pos;
    if (*pos == '\0') break;
    char* end = nullptr;
    errno = 0;
    const long value = std::strtol(pos, &end, 10);
    const bool separated = *end == '\0' || *end == ' ' || *end == '\t' || *end == '\n' || *end == '\r';
    if (end == pos || !separated || errno == ERANGE || value < 0 || value > INT32_MAX) {
      std::string word(pos, std::strcspn(pos, " \t\r\n"));
      return error(errc::invalid_argument, "\"" + word + "\" is not a token id");
    }
    ids.push_back(static_cast<token_id>(value));
    pos = end;
  }
  return ids;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string model;
    bool bos = false;
    bool special = false;
    bool decode = false;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("tokenize", "print the token ids of the text on standard input");
  cmd->add_option("--model", opts->model, "the GGUF model file whose vocabulary to use")->required();
  cmd->add_flag("--bos", opts->bos, "put the BOS token first");
  cmd->add_flag("--special", opts->special,
                "read control tokens in the text (<|im_start|>) as those tokens; with --decode, print them");
  cmd->add_flag("--decode", opts->decode, "read token ids and print their text");
  cmd->callback([opts, &exit_code] {
    exit_code = 1;
    auto file = engine::gguf_file::open(opts->model);
    if (!file) {
      std::fprintf(stderr, "chatai tokenize: %s\n", file.err().message().c_str());
      return;
    }
    auto vocab = engine::vocabulary::from_gguf(*file);
    if (!vocab) {
      std::fprintf(stderr, "chatai tokenize: %s: %s\n", opts->model.c_str(), vocab.err().message().c_str());
      return;
    }
    const std::string input = read_stdin();
    if (opts->decode) {
      auto ids = parse_ids(input);
      if (!ids) {
        std::fprintf(stderr, "chatai tokenize: %s\n", ids.err().message().c_str());
        return;
      }
      auto text = vocab->decode(*ids, opts->special);
      if (!text) {
        std::fprintf(stderr, "chatai tokenize: %s\n", text.err().message().c_str());
        return;
      }
      std::fwrite(text->data(), 1, text->size(), stdout);
    } else {
      const auto ids = vocab->encode(input, {.add_bos = opts->bos, .parse_special = opts->special});
      std::string line;
      for (const token_id id : ids) {
        if (!line.empty()) line += ' ';
        line += std::to_string(id);
      }
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    exit_code = 0;
  });
}

}  // namespace chatai::cli
