// Embeddings from a backend's final hidden states: a token sequence read in prompt chunks
// through a temporary sequence, its hidden rows pooled (mean or last) and, optionally, scaled
// to unit length.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/token.hpp"
#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine {

enum class pooling {
  mean,  // the mean of every token's hidden state
  last,  // the last token's hidden state (causal models that read the whole input into it)
};

// "mean" or "last".
std::string_view to_string(pooling p) noexcept;
// The pooling of a name. Errors: invalid_argument for any other name.
result<pooling> parse_pooling(std::string_view name);

// The pooling a GGUF file asks for in `<architecture>.pooling_type` (llama.cpp's numbering: 1
// mean, 3 last). Mean when the key is absent or names a pooling chatai does not compute
// (none, cls, rank).
pooling default_pooling(const gguf_file& file);

// The tokens of an input text: BOS first and EOS last when the model asks for them
// (tokenizer.ggml.add_bos_token, add_eos_token), control tokens read as plain text.
std::vector<token_id> encode_embedding_input(const vocabulary& vocab, std::string_view text);

struct embedding_options {
  pooling pool = pooling::mean;
  bool normalize = true;            // scale the vector to unit L2 norm
  std::int64_t chunk_tokens = 256;  // tokens per forward step
  std::int64_t max_tokens = 0;      // the longest input (the context); 0: the model's training context
};

// One input's embedding, computed a chunk at a time so that a caller can interleave it with
// other work on the same backend (the model server runs one chunk between generator steps).
// Its temporary sequence lives as long as the job.
// Thread safety: not thread-safe; it drives the backend, which has one driver at a time: the
// caller keeps step() from overlapping any other use of that backend.
class embedding_job {
 public:
  // Creates the temporary sequence for `tokens`. Errors: invalid_argument for no tokens, a
  // token outside the vocabulary or chunk_tokens < 1; out_of_range for more tokens than
  // max_tokens; the backend's resource_exhausted when no cache is left.
  static result<std::unique_ptr<embedding_job>> start(backend& compute, std::vector<token_id> tokens,
                                                      const embedding_options& options);
  ~embedding_job();  // frees the sequence
  embedding_job(const embedding_job&) = delete;
  embedding_job& operator=(const embedding_job&) = delete;

  // Reads the next chunk (the last one also pools). Errors: the backend's; internal when the
  // hidden states are not finite. After an error the job is over: done() stays false.
  status step();

  bool done() const noexcept { return done_; }
  std::int64_t n_tokens() const noexcept { return static_cast<std::int64_t>(tokens_.size()); }
  // The embedding, [n_embd], once done().
  const std::vector<float>& vector() const noexcept { return vector_; }

 private:
  embedding_job(backend& compute, std::vector<token_id> tokens, const embedding_options& options, sequence_id sequence);

  backend& backend_;
  std::vector<token_id> tokens_;
  embedding_options options_;
  sequence_id sequence_;
  std::int64_t read_ = 0;     // tokens already in the sequence
  std::vector<double> sum_;   // [n_embd]: the hidden rows summed so far (mean pooling)
  std::vector<float> vector_; // [n_embd]
  logits_out out_;
  bool done_ = false;
};

// One input's embedding at once. Errors: those of embedding_job::start and step.
result<std::vector<float>> embed(backend& compute, std::span<const token_id> tokens, const embedding_options& options);

}  // namespace chatai::engine
