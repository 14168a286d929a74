// The chat template API: parsing, rendering, and errors turned into chatai::error values.
#include "chatai/engine/chat_template.hpp"

#include <new>
#include <stdexcept>

#include "template_eval.hpp"
#include "template_lexer.hpp"
#include "template_parser.hpp"

namespace chatai::engine {

namespace {

constexpr std::string_view chatml_source =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

error to_error(const jinja::template_error& e, std::string_view source) {
  if (e.verbatim() || e.offset() == jinja::template_error::no_offset) return error(e.code(), e.what());
  const auto [line, column] = jinja::line_column(source, e.offset());
  return error(e.code(), std::to_string(line) + ":" + std::to_string(column) + ": " + e.what());
}

std::tm current_local_time() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  return local;
}

result<std::string> run(const jinja::program& prog, const jinja::dict_data& context, const render_options& options) {
  try {
    jinja::interpreter in(prog, context, options.now ? *options.now : current_local_time());
    return in.render();
  } catch (const jinja::template_error& e) {
    return to_error(e, prog.source);
  } catch (const std::bad_alloc&) {
    return error(errc::resource_exhausted, "out of memory while rendering the chat template");
  } catch (const std::length_error&) {
    return error(errc::resource_exhausted, "the chat template builds a value too large to hold");
  } catch (const std::exception& e) {
    return error(errc::internal, std::string("chat template: ") + e.what());
  }
}

}  // namespace

chat_template::chat_template(std::shared_ptr<const jinja::program> program) : program_(std::move(program)) {}

result<chat_template> chat_template::parse(std::string_view source) {
  auto prog = std::make_shared<jinja::program>();
  prog->source = jinja::normalize_newlines(source);
  try {
    jinja::parse_program(*prog);
  } catch (const jinja::template_error& e) {
    return to_error(e, prog->source);
  } catch (const std::bad_alloc&) {
    return error(errc::resource_exhausted, "out of memory while parsing the chat template");
  } catch (const std::exception& e) {
    return error(errc::internal, std::string("chat template: ") + e.what());
  }
  return chat_template(std::move(prog));
}

chat_template chat_template::chatml() {
  static const chat_template parsed = std::move(parse(chatml_source)).value();
  return parsed;
}

const std::string& chat_template::source() const noexcept { return program_->source; }

result<std::string> chat_template::render(const rapidjson::Value& context, const render_options& options) const {
  if (!context.IsObject()) return error(errc::invalid_argument, "the chat template context must be a JSON object");
  jinja::dict_data variables;
  try {
    variables.entries.reserve(context.MemberCount());
    for (const auto& m : context.GetObject())
      variables.set(jinja::value::string(std::string(m.name.GetString(), m.name.GetStringLength())),
                    jinja::value::from_json(m.value));
  } catch (const jinja::template_error& e) {
    return error(e.code(), std::string("chat template context: ") + e.what());
  }
  return run(*program_, variables, options);
}

result<std::string> chat_template::render_chat(const rapidjson::Value& messages, bool add_generation_prompt,
                                               std::string_view bos_token, std::string_view eos_token,
                                               const rapidjson::Value* extra, const render_options& options) const {
  if (!messages.IsArray()) return error(errc::invalid_argument, "messages must be a JSON array");
  if (extra && !extra->IsObject() && !extra->IsNull())
    return error(errc::invalid_argument, "extra chat template variables must be a JSON object");
  jinja::dict_data variables;
  try {
    if (extra && extra->IsObject())
      for (const auto& m : extra->GetObject())
        variables.set(jinja::value::string(std::string(m.name.GetString(), m.name.GetStringLength())),
                      jinja::value::from_json(m.value));
    variables.set(jinja::value::string("messages"), jinja::value::from_json(messages));
  } catch (const jinja::template_error& e) {
    return error(e.code(), std::string("chat template context: ") + e.what());
  }
  variables.set(jinja::value::string("add_generation_prompt"), jinja::value::boolean(add_generation_prompt));
  variables.set(jinja::value::string("bos_token"), jinja::value::string(std::string(bos_token)));
  variables.set(jinja::value::string("eos_token"), jinja::value::string(std::string(eos_token)));
  return run(*program_, variables, options);
}

}  // namespace chatai::engine
