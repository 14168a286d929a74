// Continuous batching over a backend: sequences join and leave between steps; each step
// advances every active sequence together (one decoded token each, prompt chunks for those
// still reading their prompt) and reports the text each produced, stop-filtered and in whole
// UTF-8 characters.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"
#include "chatai/engine/grammar.hpp"
#include "chatai/engine/prefix_cache.hpp"
#include "chatai/engine/sampler.hpp"
#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine {

struct generation_request {
  std::vector<token_id> prompt;  // at least one token
  sampling_params sampling;
  std::vector<std::string> stop;   // stop strings: generation ends before them, they are never emitted
  std::int64_t max_tokens = 256;   // generated tokens at most
  std::int64_t top_logprobs = -1;  // -1: no log-probabilities; 0..20: the chosen token's and that many more
  bool ignore_eos = false;         // keep generating past EOS/EOT (benchmarks)
  // The output must be a sentence of this grammar: each step samples as usual and, when the
  // token drawn is not allowed, samples again from the logits masked to the allowed tokens
  // (the same distribution as masking first, at the cost of a mask only when needed). The
  // sequence ends (stop) when the grammar is complete and nothing can follow.
  std::shared_ptr<const grammar> constraint;
  bool render_special = false;  // control tokens appear in the text (markers such as [TOOL_CALLS])
};

enum class finish_reason { none, stop, length, cancelled };

std::string_view to_string(finish_reason reason) noexcept;

struct generated_token {
  token_id token = 0;
  token_logprob chosen;               // when log-probabilities were asked for
  std::vector<token_logprob> top;     // most likely first
};

// What one sequence produced in one step.
struct sequence_event {
  std::uint64_t id = 0;
  std::string text;                     // new text, possibly empty (held back for stop strings or UTF-8)
  std::vector<generated_token> tokens;  // tokens sampled in this step (0 or 1)
  finish_reason finished = finish_reason::none;
  std::int64_t prompt_tokens = 0;
  std::int64_t cached_tokens = 0;  // of the prompt tokens: those taken from the prefix cache
  std::int64_t completion_tokens = 0;
};

struct generator_options {
  std::int64_t max_batch_tokens = 256;  // tokens per step at most: decodes first, then prompt chunks
  std::int64_t prefill_chunk = 128;     // prompt tokens of one sequence per step at most
  std::int64_t context = 0;             // tokens per sequence (prompt + output); 0: the model's
  // Tokens the prefix cache keeps in finished sequences (prefix_cache.hpp); 0: no cache.
  std::int64_t prefix_cache_tokens = 0;
};

// Thread safety: not thread-safe; one thread adds, removes and steps.
class generator {
 public:
  generator(backend& compute, vocabulary vocab, generator_options options = {});
  ~generator();
  generator(const generator&) = delete;
  generator& operator=(const generator&) = delete;

  // Starts a sequence. Errors (nothing changes): invalid_argument for an empty prompt, bad
  // sampling parameters or a token outside the vocabulary; out_of_range when the prompt does
  // not fit the context ("prompt has 5000 tokens, the context holds 4096"); the backend's
  // resource_exhausted when no cache is left.
  result<std::uint64_t> add(generation_request request);

  // Ends a sequence now; its cache goes to the prefix cache (or is freed). Errors: not_found
  // for an unknown id.
  status remove(std::uint64_t id);

  // One step over every active sequence. Finished sequences are reported once, with
  // their finish reason, and removed.
  result<std::vector<sequence_event>> step();

  std::size_t active() const noexcept { return sequences_.size(); }
  // Tokens held in the KV caches of the active sequences now.
  std::int64_t cached_tokens() const noexcept;
  prefix_cache_stats prefix_stats() const noexcept { return prefix_.stats(); }
  std::int64_t context() const noexcept { return context_; }
  const vocabulary& vocab() const noexcept { return vocab_; }

 private:
  struct sequence;
  // Hands a sequence's cache to the prefix cache, or frees it.
  void release(sequence& seq);

  backend& backend_;
  vocabulary vocab_;
  generator_options options_;
  std::int64_t context_ = 0;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::unique_ptr<sequence>> sequences_;
  logits_out logits_;
  std::shared_ptr<const token_table> tokens_;  // built when the first grammar arrives
  std::vector<float> masked_;
  prefix_cache prefix_;  // declared last: destroyed first, while the backend is still in use
};

}  // namespace chatai::engine
