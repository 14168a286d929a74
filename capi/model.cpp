// The C ABI's models: loading, tokenizing, chat templates and streamed generation over the
// engine's runtime.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/engine/completion.hpp"
#include "chatai/engine/runtime.hpp"

struct chatai_model {
  explicit chatai_model(std::unique_ptr<chatai::engine::runtime> rt) : runtime(std::move(rt)) {}

  std::unique_ptr<chatai::engine::runtime> runtime;
  std::mutex generate_mutex;  // the backend has one driver at a time
  // Bumped by chatai_model_cancel; a generate call stops when it differs from its value at entry.
  std::atomic<std::uint64_t> cancel_epoch{0};
};

using chatai::capi::copy_out;
using chatai::capi::fail;
using chatai::capi::guard;

extern "C" {

chatai_status chatai_model_load(chatai_model** out, const chatai_model_options* opts) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || opts == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and opts must not be NULL");
    *out = nullptr;
    if (opts->version < 1 || opts->version > CHATAI_MODEL_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown chatai_model_options version");
    if (opts->path == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "opts->path must not be NULL");
    if (opts->threads < 0) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "opts->threads must not be negative");
    chatai::engine::runtime_options ro;
    ro.model_path = opts->path;
    if (opts->device != nullptr) ro.device = opts->device;
    ro.threads = opts->threads;
    auto rt = chatai::engine::runtime::load(ro);
    if (!rt) return fail(rt.err());
    *out = new chatai_model(std::move(rt).value());
    return CHATAI_OK;
  });
}

void chatai_model_free(chatai_model* model) { delete model; }

chatai_status chatai_model_tokenize(const chatai_model* model, const char* text, size_t text_len, unsigned flags,
                                    int32_t* ids, size_t capacity, size_t* n_out) {
  return guard([&]() -> chatai_status {
    if (model == nullptr || n_out == nullptr)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model and n_out must not be NULL");
    if (text == nullptr && text_len > 0) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "text is NULL but text_len is not 0");
    if (ids == nullptr && capacity > 0) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "ids is NULL but capacity is not 0");
    if ((flags & ~(CHATAI_TOKENIZE_ADD_BOS | CHATAI_TOKENIZE_PARSE_SPECIAL)) != 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown tokenize flags");
    chatai::engine::encode_options eo;
    eo.add_bos = (flags & CHATAI_TOKENIZE_ADD_BOS) != 0;
    eo.parse_special = (flags & CHATAI_TOKENIZE_PARSE_SPECIAL) != 0;
    const auto tokens = model->runtime->vocab().encode(std::string_view(text == nullptr ? "" : text, text_len), eo);
    *n_out = tokens.size();
    std::copy_n(tokens.begin(), std::min(capacity, tokens.size()), ids);
    if (capacity > 0 && tokens.size() > capacity) {
      return fail(CHATAI_ERROR_OUT_OF_RANGE, ("the text has " + std::to_string(tokens.size()) +
                                              " tokens, the buffer holds " + std::to_string(capacity))
                                                 .c_str());
    }
    return CHATAI_OK;
  });
}

chatai_status chatai_model_detokenize(const chatai_model* model, const int32_t* ids, size_t n_ids, char* buffer,
                                      size_t buffer_size, size_t* length) {
  return guard([&]() -> chatai_status {
    if (model == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model must not be NULL");
    if (ids == nullptr && n_ids > 0) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "ids is NULL but n_ids is not 0");
    if (buffer == nullptr && buffer_size > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "buffer is NULL but buffer_size is not 0");
    auto text = model->runtime->vocab().decode({ids, n_ids});
    if (!text) return fail(CHATAI_ERROR_INVALID_ARGUMENT, text.err().message().c_str());
    return copy_out(*text, buffer, buffer_size, length);
  });
}

chatai_status chatai_model_apply_template(const chatai_model* model, const char* messages_json,
                                          int add_generation_prompt, char* buffer, size_t buffer_size,
                                          size_t* length) {
  return guard([&]() -> chatai_status {
    if (model == nullptr || messages_json == nullptr)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model and messages_json must not be NULL");
    if (buffer == nullptr && buffer_size > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "buffer is NULL but buffer_size is not 0");
    auto text = chatai::engine::render_messages_json(*model->runtime, messages_json, add_generation_prompt != 0);
    if (!text) return fail(text.err());
    return copy_out(*text, buffer, buffer_size, length);
  });
}

chatai_status chatai_model_generate(chatai_model* model, const chatai_generate_options* opts,
                                    chatai_token_callback callback, void* user) {
  return guard([&]() -> chatai_status {
    if (model == nullptr || opts == nullptr || callback == nullptr)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model, opts and callback must not be NULL");
    const std::uint64_t epoch = model->cancel_epoch.load();
    if (opts->version < 1 || opts->version > CHATAI_GENERATE_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown chatai_generate_options version");
    if ((opts->prompt == nullptr) == (opts->messages_json == nullptr))
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "set exactly one of prompt and messages_json");
    if (opts->max_tokens < 1) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "max_tokens must be at least 1");
    if (opts->stop == nullptr && opts->n_stop > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "stop is NULL but n_stop is not 0");

    chatai::engine::completion_request req;
    if (opts->prompt != nullptr) {
      req.prompt = opts->prompt;
    } else {
      auto rendered = chatai::engine::render_messages_json(*model->runtime, opts->messages_json, true);
      if (!rendered) return fail(rendered.err());
      req.prompt = std::move(rendered).value();
      req.is_chat = true;
    }
    req.max_tokens = opts->max_tokens;
    req.sampling.temperature = opts->temperature;
    req.sampling.top_p = opts->top_p;
    req.sampling.top_k = opts->top_k;
    if (opts->seed >= 0) req.sampling.seed = static_cast<std::uint64_t>(opts->seed);
    for (size_t i = 0; i < opts->n_stop; ++i) {
      if (opts->stop[i] == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "a stop string is NULL");
      req.stop.emplace_back(opts->stop[i]);
    }

    std::lock_guard lock(model->generate_mutex);
    auto run = chatai::engine::completion::start(*model->runtime, std::move(req));
    if (!run) return fail(run.err());
    const auto cancelled = [&] {
      return fail(CHATAI_ERROR_CANCELLED, "the generation was cancelled");
    };
    while (!(*run)->done()) {
      if (model->cancel_epoch.load() != epoch) return cancelled();
      auto piece = (*run)->next();
      if (!piece) return fail(piece.err());
      if (!piece->empty() && callback(piece->c_str(), piece->size(), user) != 0) return cancelled();
    }
    return CHATAI_OK;
  });
}

chatai_status chatai_model_cancel(chatai_model* model) {
  return guard([&]() -> chatai_status {
    if (model == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model must not be NULL");
    model->cancel_epoch.fetch_add(1);
    return CHATAI_OK;
  });
}

}  // extern "C"
