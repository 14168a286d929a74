// Loading a vocabulary from a GGUF file's tokenizer.ggml.* keys.
#include <algorithm>
#include <limits>

#include "chatai/engine/gguf.hpp"
#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine {

namespace {

// The pre-tokenizer names whose Hugging Face tokenizer keeps a word whole when it is a token
// (ignore_merges) and whose prompts begin with BOS.
constexpr std::string_view llama3_names[] = {"llama3", "llama-v3", "llama-bpe", "falcon3"};

error key_error(std::string_view key, const error& cause) { return cause.with_context(std::string(key)); }

// Reads an optional token id; ids that do not fit are absent.
result<token_id> read_id(const gguf_file& file, std::string_view key, token_id fallback) {
  if (!file.has(key)) return fallback;
  auto value = file.get_int(key);
  if (!value) return key_error(key, value.err());
  if (*value < 0 || *value > std::numeric_limits<token_id>::max()) return no_token;
  return static_cast<token_id>(*value);
}

result<bool> read_flag(const gguf_file& file, std::string_view key, bool fallback) {
  if (!file.has(key)) return fallback;
  auto value = file.get_bool(key);
  if (!value) return key_error(key, value.err());
  return *value;
}

}  // namespace

result<vocabulary> vocabulary::from_gguf(const gguf_file& file) {
  vocabulary_spec spec;
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model) return key_error("tokenizer.ggml.model", model.err());
  if (*model == "gpt2") {
    spec.model = tokenizer_model::bpe;
  } else if (*model == "llama") {
    spec.model = tokenizer_model::spm;
  } else {
    return error(errc::unsupported, "tokenizer.ggml.model \"" + std::string(*model) + "\" is not supported");
  }
  const bool bpe = spec.model == tokenizer_model::bpe;

  std::string_view pre_name;
  if (bpe && file.has("tokenizer.ggml.pre")) {
    auto name = file.get_string("tokenizer.ggml.pre");
    if (!name) return key_error("tokenizer.ggml.pre", name.err());
    pre_name = *name;
    auto pre = pre_tokenizer_from_name(pre_name);
    if (!pre) return key_error("tokenizer.ggml.pre", pre.err());
    spec.pre = *pre;
  }
  const bool llama3_style = std::find(std::begin(llama3_names), std::end(llama3_names), pre_name) != std::end(llama3_names);

  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return key_error("tokenizer.ggml.tokens", tokens.err());
  spec.tokens.assign(tokens->begin(), tokens->end());

  if (file.has("tokenizer.ggml.scores")) {
    auto scores = file.get_float32_array("tokenizer.ggml.scores");
    if (!scores) return key_error("tokenizer.ggml.scores", scores.err());
    spec.scores = std::move(*scores);
  }
  if (file.has("tokenizer.ggml.token_type")) {
    auto types = file.get_int32_array("tokenizer.ggml.token_type");
    if (!types) return key_error("tokenizer.ggml.token_type", types.err());
    spec.types.reserve(types->size());
    for (const std::int32_t t : *types) {
      const bool known = t >= 0 && t <= static_cast<std::int32_t>(token_type::byte);
      spec.types.push_back(known ? static_cast<token_type>(t) : token_type::undefined);
    }
  }
  if (bpe) {
    auto merges = file.get_string_array("tokenizer.ggml.merges");
    if (!merges) return key_error("tokenizer.ggml.merges", merges.err());
    spec.merges.assign(merges->begin(), merges->end());
  }

  // Without the keys, llama.cpp's defaults: SentencePiece models are LLaMA's.
  struct id_key {
    std::string_view key;
    token_id& id;
    token_id fallback;
  };
  const id_key ids[] = {
      {"tokenizer.ggml.bos_token_id", spec.bos, bpe ? no_token : 1},
      {"tokenizer.ggml.eos_token_id", spec.eos, bpe ? no_token : 2},
      {"tokenizer.ggml.eot_token_id", spec.eot, no_token},
      {"tokenizer.ggml.unknown_token_id", spec.unknown, bpe ? no_token : 0},
      {"tokenizer.ggml.padding_token_id", spec.padding, no_token},
  };
  for (const id_key& k : ids) {
    auto id = read_id(file, k.key, k.fallback);
    if (!id) return std::move(id).err();
    k.id = *id;
  }

  struct flag_key {
    std::string_view key;
    bool& flag;
    bool fallback;
  };
  const flag_key flags[] = {
      {"tokenizer.ggml.add_bos_token", spec.add_bos, !bpe || llama3_style},
      {"tokenizer.ggml.add_eos_token", spec.add_eos, false},
      {"tokenizer.ggml.add_space_prefix", spec.add_space_prefix, !bpe},
  };
  for (const flag_key& k : flags) {
    auto flag = read_flag(file, k.key, k.fallback);
    if (!flag) return std::move(flag).err();
    k.flag = *flag;
  }
  spec.ignore_merges = llama3_style;

  return create(std::move(spec));
}

}  // namespace chatai::engine
