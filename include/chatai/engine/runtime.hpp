// A model ready to use: the mapped GGUF file, its vocabulary, its chat template and a
// compute backend chosen by device ("cpu", "cuda" or "auto").
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"
#include "chatai/engine/chat_template.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine {

struct runtime_options {
  std::filesystem::path model_path;
  std::string device = "auto";  // cpu, cuda or auto (CUDA when built with it and a GPU is present)
  int threads = 0;              // CPU threads; 0: one per hardware thread
  std::string chat_template;    // Jinja source to use instead of the file's template; empty: the file's
};

struct chat_turn {
  std::string role;
  std::string content;
};

// Thread safety: the accessors are safe from any thread; backend() has one driver at a time.
class runtime {
 public:
  // "auto" takes the CUDA backend when cuda_available(), otherwise the CPU one. Errors: those
  // of model::load; invalid_argument for an unknown device; unavailable for "cuda" when this
  // build or machine has no CUDA device; those of create_cuda_backend (a model that does
  // not fit the GPU is an error, not a fallback to the CPU).
  static result<std::unique_ptr<runtime>> load(const runtime_options& options);

  const model& weights() const noexcept { return *model_; }
  const model_hparams& hparams() const noexcept { return model_->hparams(); }
  const vocabulary& vocab() const noexcept { return vocab_; }
  const chat_template& chat() const noexcept { return template_; }
  // True when the file has no template and ChatML stands in.
  bool chat_template_is_fallback() const noexcept { return template_fallback_; }
  backend& compute() noexcept { return *backend_; }

  // The prompt text of a conversation through the model's template.
  result<std::string> render_chat(const std::vector<chat_turn>& turns, bool add_generation_prompt) const;
  // The token ids of a rendered chat prompt (special tokens recognised) or of plain text
  // (special tokens as text); BOS first when the model asks for it and the text lacks it.
  std::vector<token_id> encode_prompt(std::string_view text, bool is_chat) const;

 private:
  runtime(std::shared_ptr<const model> m, vocabulary v, chat_template t, bool fallback, std::unique_ptr<backend> b);

  std::shared_ptr<const model> model_;
  vocabulary vocab_;
  chat_template template_;
  bool template_fallback_ = false;
  std::unique_ptr<backend> backend_;
};

}  // namespace chatai::engine
