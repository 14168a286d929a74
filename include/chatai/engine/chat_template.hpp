// Chat templates: an interpreter for the Jinja2 subset of models' tokenizer.chat_template,
// rendering exactly as Hugging Face transformers does.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "chatai/core/status.hpp"

namespace chatai::engine {

namespace jinja {
struct program;
}

// Settings of one render.
struct render_options {
  // The local date and time that strftime_now() formats; the current local time when empty.
  std::optional<std::tm> now;
};

// A parsed chat template. Rendering follows Jinja2 with Hugging Face's settings: trim_blocks
// and lstrip_blocks on, the loopcontrols extension ({% break %}, {% continue %}), the
// {% generation %} tag, a tojson filter that keeps non-ASCII characters, and the globals
// raise_exception(msg) and strftime_now(format); lists and dicts are immutable, as in its
// sandbox.
//
// Errors name the place in the template as "LINE:COLUMN: ". parse() fails with parse_error
// for malformed templates and unsupported for Jinja2 features chatai does not implement
// (template inheritance, includes, some filters). render() fails with invalid_argument when
// the context is not an object or the template fails at run time (an undefined variable used
// as an object, a type error), with unsupported for features met only at run time, and with
// resource_exhausted when a template builds a value over 64 MiB or runs more than ten million
// statements and loop iterations (a runaway or hostile template). When
// the template calls raise_exception(msg), the error is invalid_argument and its message is
// exactly msg, so that callers can show the template's own words.
//
// Thread safety: immutable after parse(); copies share the parsed tree, and render() may run
// concurrently from any number of threads.
class chat_template {
 public:
  static result<chat_template> parse(std::string_view source);

  // The ChatML template, for models that do not ship one:
  // <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, then <|im_start|>assistant\n when a
  // generation prompt is asked for.
  static chat_template chatml();

  // Renders with every top-level key of `context` (a JSON object) as a variable.
  result<std::string> render(const rapidjson::Value& context, const render_options& options = {}) const;

  // Renders `messages` (a JSON array) with the variables every template expects; the keys of
  // `extra` (a JSON object, or nullptr) add more, such as tools or enable_thinking. The named
  // arguments win over keys of `extra` with the same names.
  result<std::string> render_chat(const rapidjson::Value& messages, bool add_generation_prompt,
                                  std::string_view bos_token, std::string_view eos_token,
                                  const rapidjson::Value* extra = nullptr,
                                  const render_options& options = {}) const;

  // The template text as parsed (newlines normalized).
  const std::string& source() const noexcept;

 private:
  explicit chat_template(std::shared_ptr<const jinja::program> program);
  std::shared_ptr<const jinja::program> program_;
};

}  // namespace chatai::engine
