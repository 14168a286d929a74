// One streamed generation over a runtime, and chat messages rendered with its template.
#include "chatai/engine/completion.hpp"

#include "chatai/core/json.hpp"

namespace chatai::engine {

result<std::string> render_messages(const runtime& rt, const rapidjson::Value& messages, bool add_generation_prompt) {
  const auto& vocab = rt.vocab();
  const std::string_view bos = vocab.bos() >= 0 ? vocab.text(vocab.bos()) : std::string_view{};
  const std::string_view eos = vocab.eos() >= 0 ? vocab.text(vocab.eos()) : std::string_view{};
  return rt.chat().render_chat(messages, add_generation_prompt, bos, eos);
}

result<std::string> render_messages_json(const runtime& rt, std::string_view messages_json,
                                         bool add_generation_prompt) {
  auto messages = json::parse(messages_json);
  if (!messages) return std::move(messages).err().with_context("messages");
  if (!messages->IsArray())
    return error(errc::invalid_argument,
                 "messages must be a JSON array of messages, got " + std::string(json::type_name(*messages)));
  return render_messages(rt, *messages, add_generation_prompt);
}

completion::completion(runtime& rt) : generator_(rt.compute(), rt.vocab()) {}

result<std::unique_ptr<completion>> completion::start(runtime& rt, completion_request request) {
  generation_request req;
  req.prompt = rt.encode_prompt(request.prompt, request.is_chat);
  req.sampling = std::move(request.sampling);
  req.stop = std::move(request.stop);
  req.max_tokens = request.max_tokens;
  std::unique_ptr<completion> out(new completion(rt));
  out->prompt_tokens_ = static_cast<std::int64_t>(req.prompt.size());
  auto id = out->generator_.add(std::move(req));
  if (!id) return std::move(id).err();
  return out;
}

result<std::string> completion::next() {
  std::string text;
  while (!done() && text.empty()) {
    auto events = generator_.step();
    if (!events) {
      reason_ = finish_reason::cancelled;
      return std::move(events).err();
    }
    for (auto& ev : *events) {
      text += ev.text;
      completion_tokens_ = ev.completion_tokens;
      if (ev.finished != finish_reason::none) reason_ = ev.finished;
    }
  }
  return text;
}

}  // namespace chatai::engine
