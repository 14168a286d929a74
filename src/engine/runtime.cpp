// Loading a model with its vocabulary, template and backend.
#include "chatai/engine/runtime.hpp"

#include <rapidjson/document.h>

#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/cuda_backend.hpp"

namespace chatai::engine {

runtime::runtime(std::shared_ptr<const model> m, vocabulary v, chat_template t, bool fallback, std::unique_ptr<backend> b)
    : model_(std::move(m)), vocab_(std::move(v)), template_(std::move(t)), template_fallback_(fallback), backend_(std::move(b)) {}

result<std::unique_ptr<runtime>> runtime::load(const runtime_options& options) {
  if (options.device != "cpu" && options.device != "cuda" && options.device != "auto")
    return error(errc::invalid_argument, "device must be cpu, cuda or auto, got \"" + options.device + "\"");
  if (options.device == "cuda" && !cuda_available()) {
    return error(errc::unavailable, "device cuda: " + cuda_device_summary() + "; use --device cpu or auto");
  }
  auto m = model::load(options.model_path);
  if (!m) return std::move(m).err();
  auto v = vocabulary::from_gguf((*m)->file());
  if (!v) return std::move(v).err().with_context(options.model_path.string());
  bool fallback = false;
  std::optional<chat_template> tmpl;
  if (!options.chat_template.empty()) {
    auto parsed = chat_template::parse(options.chat_template);
    if (!parsed) return std::move(parsed).err().with_context("chat template");
    tmpl.emplace(std::move(*parsed));
  } else if (auto source = (*m)->file().get_string("tokenizer.chat_template")) {
    auto parsed = chat_template::parse(*source);
    if (!parsed) return std::move(parsed).err().with_context(options.model_path.string() + ": chat template");
    tmpl.emplace(std::move(*parsed));
  } else {
    fallback = true;
    tmpl.emplace(chat_template::chatml());
  }
  // "auto" takes the GPU when there is one; a GPU that cannot hold the model is an error,
  // not a silent fallback.
  const bool use_cuda = options.device == "cuda" || (options.device == "auto" && cuda_available());
  result<std::unique_ptr<backend>> b = error(errc::internal, "no backend");
  if (use_cuda) {
    b = create_cuda_backend(*m);
  } else {
    cpu_backend_options cpu;
    cpu.n_threads = options.threads;
    b = create_cpu_backend(*m, cpu);
  }
  if (!b) return std::move(b).err();
  return std::unique_ptr<runtime>(new runtime(std::move(*m), std::move(*v), std::move(*tmpl), fallback, std::move(*b)));
}

result<std::string> runtime::render_chat(const std::vector<chat_turn>& turns, bool add_generation_prompt) const {
  rapidjson::Document messages(rapidjson::kArrayType);
  auto& alloc = messages.GetAllocator();
  for (const auto& t : turns) {
    rapidjson::Value msg(rapidjson::kObjectType);
    msg.AddMember("role", rapidjson::Value(t.role.c_str(), static_cast<rapidjson::SizeType>(t.role.size()), alloc), alloc);
    msg.AddMember("content", rapidjson::Value(t.content.c_str(), static_cast<rapidjson::SizeType>(t.content.size()), alloc), alloc);
    messages.PushBack(msg, alloc);
  }
  const std::string bos(vocab_.bos() >= 0 ? vocab_.text(vocab_.bos()) : std::string_view{});
  const std::string eos(vocab_.eos() >= 0 ? vocab_.text(vocab_.eos()) : std::string_view{});
  return template_.render_chat(messages, add_generation_prompt, bos, eos);
}

std::vector<token_id> runtime::encode_prompt(std::string_view text, bool is_chat) const {
  encode_options o;
  o.parse_special = is_chat;
  auto ids = vocab_.encode(text, o);
  if (vocab_.add_bos() && vocab_.bos() >= 0 && (ids.empty() || ids.front() != vocab_.bos())) ids.insert(ids.begin(), vocab_.bos());
  return ids;
}

}  // namespace chatai::engine
