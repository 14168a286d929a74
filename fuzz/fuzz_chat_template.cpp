// libFuzzer target: chat templates from arbitrary bytes (as a GGUF file may carry them); what
// parses is rendered against a small chat. Seeds: shared/testdata/templates/*.jinja.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chatai/core/json.hpp"
#include "chatai/engine/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const rapidjson::Document context = [] {
    auto doc = chatai::json::parse(
        R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},)"
        R"( {"role": "assistant", "content": "Hello", "tool_calls": [{"id": "abcdefghi", "type": "function",)"
        R"( "function": {"name": "f", "arguments": {"x": 1}}}]}, {"role": "tool", "content": "ok"}],)"
        R"( "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],)"
        R"( "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
    if (!doc) std::abort();
    return std::move(doc).value();
  }();
  static const chatai::engine::render_options options = [] {
    chatai::engine::render_options o;
    o.now = std::tm{};
    return o;
  }();
  auto tmpl = chatai::engine::chat_template::parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!tmpl) {
    if (tmpl.err().message().empty()) std::abort();
    return 0;
  }
  auto out = tmpl->render(context, options);
  if (!out && out.err().code() == chatai::errc::internal) std::abort();
  return 0;
}
