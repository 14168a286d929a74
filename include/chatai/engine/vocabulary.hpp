// A model's vocabulary and its tokenizer: byte-level BPE and SentencePiece, exact to llama.cpp,
// special tokens, and detokenization of whole sequences or token by token.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/token.hpp"

namespace chatai::engine {

class gguf_file;

// The id of a special token the vocabulary does not have.
inline constexpr token_id no_token = -1;

// The tokenizer algorithm (tokenizer.ggml.model).
enum class tokenizer_model {
  bpe,  // "gpt2": byte-level BPE with ranked merges
  spm,  // "llama": SentencePiece, merges by token score, byte fallback
};

// How byte-level BPE splits text into words before merging (tokenizer.ggml.pre). Each value
// reproduces the regular expressions llama.cpp uses for the names listed.
enum class pre_tokenizer {
  standard,        // "default" or absent
  gpt2,            // "gpt-2", "mpt", "olmo", "phi-2", "jais", "roberta-bpe", ...
  llama3,          // "llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe", "falcon3", ...
  qwen2,           // "qwen2", "stablelm2", "deepseek-r1-qwen", "megrez", ...: llama3, one digit per word
  deepseek_llm,    // "deepseek-llm"
  deepseek_coder,  // "deepseek-coder"
  falcon,          // "falcon"
  starcoder,       // "starcoder", "refact", "smollm", "command-r", "codeshell", ...: digits alone
};

// The pre-tokenizer of a tokenizer.ggml.pre name. Errors: unsupported for names not listed.
result<pre_tokenizer> pre_tokenizer_from_name(std::string_view name);

// The words `pre` splits `text` into; byte-level BPE merges within each word. The words join
// to `text`, except that a byte outside a well-formed UTF-8 sequence reads as U+FFFD.
std::vector<std::string> pre_tokenize(pre_tokenizer pre, std::string_view text);

// Token kinds; the numbers are GGUF's tokenizer.ggml.token_type values.
enum class token_type : std::uint8_t {
  undefined = 0,
  normal = 1,
  unknown = 2,       // the <unk> token
  control = 3,       // BOS, EOS, chat markers: text only when asked for
  user_defined = 4,  // added tokens that are plain text
  unused = 5,
  byte = 6,          // SentencePiece byte fallback: <0xXX>
};

// Everything a vocabulary is built from; what a GGUF file's tokenizer.ggml.* keys hold.
struct vocabulary_spec {
  tokenizer_model model = tokenizer_model::bpe;
  pre_tokenizer pre = pre_tokenizer::standard;  // BPE only
  std::vector<std::string> tokens;              // token texts; BPE texts use GPT-2's byte characters
  std::vector<float> scores;                    // SPM merge priority per token; empty: all 0
  std::vector<token_type> types;                // per token; empty: all normal
  std::vector<std::string> merges;              // BPE: "left right", highest priority first
  token_id bos = no_token;
  token_id eos = no_token;
  token_id eot = no_token;
  token_id unknown = no_token;
  token_id padding = no_token;
  bool add_bos = false;           // the model expects prompts to begin with BOS
  bool add_eos = false;           // the model expects prompts to end with EOS
  bool add_space_prefix = false;  // SPM: a space goes before the text (and after special tokens)
  bool ignore_merges = false;     // BPE: a word that is itself a token stays whole (Llama 3)
};

struct encode_options {
  bool add_bos = false;        // put BOS first (when the vocabulary has one)
  bool add_eos = false;        // put EOS last (when the vocabulary has one)
  bool parse_special = false;  // read the text of control tokens in the input as those tokens
};

// A vocabulary with its tokenizer. Copies share one immutable state.
//
// Encoding follows llama.cpp (and so Hugging Face's tokenizers) exactly:
// - User-defined tokens are split out of the text first, always; control and unknown tokens
//   only with parse_special. Longer tokens go first: each splits every remaining stretch of
//   plain text.
// - BPE: the text is UTF-8 (a byte outside a well-formed sequence reads as U+FFFD); the
//   pre-tokenizer splits it into words; each word's bytes merge by rank into tokens.
// - SPM: spaces become U+2581, a space is put before each stretch of text that starts the
//   input or follows a special token (when add_space_prefix), pieces merge by score, and
//   characters without a token are spelt as <0xXX> byte tokens.
// Thread safety: immutable; every member is safe from any thread.
class vocabulary {
 public:
  // Checks and indexes `spec`. Errors: invalid_argument when there are no tokens, or scores or
  // types do not match the token count. Special ids outside the vocabulary are treated as
  // absent; merges that do not name two tokens whose joined text is a token are ignored; a
  // byte that BPE has no token for is dropped from the input, as llama.cpp does.
  static result<vocabulary> create(vocabulary_spec spec);

  // Reads tokenizer.ggml.{model, pre, tokens, scores, token_type, merges, bos_token_id,
  // eos_token_id, eot_token_id, unknown_token_id, padding_token_id, add_bos_token,
  // add_eos_token, add_space_prefix}; the vocabulary keeps copies. Absent keys take llama.cpp's
  // defaults: SPM adds BOS and a space prefix and has BOS 1, EOS 2 and unknown 0; BPE adds
  // neither (llama3-style BPE adds BOS). Errors: not_found when
  // tokenizer.ggml.model or tokens are missing, unsupported for other models or unknown
  // pre-tokenizers, invalid_argument for keys of the wrong type, and create()'s errors.
  static result<vocabulary> from_gguf(const gguf_file& file);

  tokenizer_model model() const noexcept;
  pre_tokenizer pre() const noexcept;
  std::int32_t size() const noexcept;

  token_id bos() const noexcept;
  token_id eos() const noexcept;
  token_id eot() const noexcept;
  token_id unknown() const noexcept;
  token_id padding() const noexcept;
  bool add_bos() const noexcept;
  bool add_eos() const noexcept;
  bool add_space_prefix() const noexcept;
  // Whether generation stops at `id`: EOS or EOT.
  bool is_end_of_generation(token_id id) const noexcept;

  // The token's text as the vocabulary stores it, its score and type. Ids outside the
  // vocabulary give "", 0 and undefined.
  std::string_view text(token_id id) const noexcept;
  float score(token_id id) const noexcept;
  token_type type(token_id id) const noexcept;
  // The token whose stored text is `text`, or no_token.
  token_id find(std::string_view text) const noexcept;

  // The token ids of `text`.
  std::vector<token_id> encode(std::string_view text, const encode_options& options = {}) const;

  // The bytes a token stands for: BPE characters mapped back to bytes, SPM's U+2581 as a
  // space and byte tokens as their byte. Control and unknown tokens give their text only
  // when `render_special`, otherwise nothing; ids outside the vocabulary give nothing.
  // A piece may be part of a UTF-8 sequence.
  std::string_view token_to_piece(token_id id, bool render_special = false) const noexcept;

  // The text of a sequence: its pieces joined, where SPM with add_space_prefix also drops one
  // leading space from the text at the start and after each special token, undoing encode(),
  // so decode(encode(x)) == x for UTF-8 text. Errors: out_of_range for an id outside the
  // vocabulary.
  result<std::string> decode(std::span<const token_id> ids, bool render_special = false) const;

  struct impl;

 private:
  explicit vocabulary(std::shared_ptr<const impl> state);
  std::shared_ptr<const impl> impl_;
};

// Turns generated tokens into text as they come, holding back the bytes of a UTF-8 sequence
// that a later token completes; what it returns is always well-formed UTF-8. Bytes that can
// never form a sequence become U+FFFD. It does not drop SPM's leading space: the first
// generated token follows a prompt.
// Thread safety: not thread-safe; one decoder per sequence.
class streaming_decoder {
 public:
  explicit streaming_decoder(vocabulary vocab, bool render_special = false);

  // The text that `id` completes (possibly empty).
  std::string push(token_id id);
  // The bytes still held at the end of the sequence, as U+FFFD; then starts afresh.
  std::string finish();

 private:
  vocabulary vocab_;
  bool render_special_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

}  // namespace chatai::engine
