// `chatai template`: renders a chat template for a JSON context read on stdin, from a
// template file or from a GGUF model's tokenizer.chat_template.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>

#include "chatai/core/config.hpp"
#include "chatai/core/json.hpp"
#include "chatai/engine/chat_template.hpp"
#include "chatai/engine/gguf.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

struct template_options {
  std::string template_path;
  std::string model_path;
};

// The text of the token whose id the metadata key names, or "" when the model has none.
std::string special_token(const engine::gguf_file& model, std::string_view id_key) {
  auto id = model.get_uint(id_key);
  auto tokens = model.get_string_array("tokenizer.ggml.tokens");
  if (!id || !tokens || *id >= tokens->size()) return {};
  return std::string((*tokens)[*id]);
}

result<std::string> render_with_template(const std::string& path, const rapidjson::Document& context) {
  auto source = config::read_file(path);
  if (!source) return std::move(source).err();
  auto tmpl = engine::chat_template::parse(*source);
  if (!tmpl) return std::move(tmpl).err().with_context(path);
  return tmpl->render(context);
}

result<std::string> render_with_model(const std::string& path, const rapidjson::Document& input) {
  auto model = engine::gguf_file::open(path);
  if (!model) return std::move(model).err();
  std::optional<engine::chat_template> tmpl;
  if (auto source = model->get_string("tokenizer.chat_template")) {
    auto parsed = engine::chat_template::parse(*source);
    if (!parsed) return std::move(parsed).err().with_context(path + ": tokenizer.chat_template");
    tmpl = std::move(*parsed);
  } else {
    tmpl = engine::chat_template::chatml();
  }
  const auto messages = input.FindMember("messages");
  if (messages == input.MemberEnd() || !messages->value.IsArray())
    return error(errc::invalid_argument, "the input needs \"messages\": an array of messages");
  bool add_generation_prompt = true;
  if (const auto flag = input.FindMember("add_generation_prompt"); flag != input.MemberEnd()) {
    if (!flag->value.IsBool()) return error(errc::invalid_argument, "\"add_generation_prompt\" must be true or false");
    add_generation_prompt = flag->value.GetBool();
  }
  return tmpl->render_chat(messages->value, add_generation_prompt,
                           special_token(*model, "tokenizer.ggml.bos_token_id"),
                           special_token(*model, "tokenizer.ggml.eos_token_id"), &input);
}

int run_template(const template_options& opts) {
  std::ios::sync_with_stdio(false);
  const std::string input_text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  auto input = json::parse(input_text);
  if (!input) {
    std::fprintf(stderr, "chatai template: stdin: %s\n", input.err().message().c_str());
    return 1;
  }
  if (!input->IsObject()) {
    std::fprintf(stderr, "chatai template: stdin must hold a JSON object\n");
    return 1;
  }
  auto out = opts.model_path.empty() ? render_with_template(opts.template_path, *input)
                                     : render_with_model(opts.model_path, *input);
  if (!out) {
    std::fprintf(stderr, "%s\n", out.err().message().c_str());
    return 1;
  }
  std::fwrite(out->data(), 1, out->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

void add_template_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<template_options>();
  auto* cmd = app.add_subcommand(
      "template",
      "render a chat template for the JSON context on stdin (with --model: {\"messages\": [...]}, "
      "add_generation_prompt defaults to true, BOS and EOS come from the model)");
  auto* tmpl = cmd->add_option("--template", opts->template_path, "a Jinja chat template file")
                   ->check(CLI::ExistingFile);
  auto* model = cmd->add_option("--model", opts->model_path, "a GGUF model whose tokenizer.chat_template to use")
                    ->check(CLI::ExistingFile);
  tmpl->excludes(model);
  cmd->callback([opts, cmd, tmpl, model, &exit_code] {
    if (tmpl->count() == 0 && model->count() == 0)
      throw CLI::RequiredError(cmd->get_name() + ": --template or --model");
    exit_code = run_template(*opts);
  });
}

}  // namespace chatai::cli
