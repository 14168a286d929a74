// The boundary between the model-agnostic serving code and a compute backend (CPU, CUDA):
// per-sequence KV caches, batched forward steps over several sequences, logits (or the final
// hidden states, for embeddings) out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/token.hpp"

namespace chatai::engine {

// A sequence's handle: its KV cache inside one backend. Handles are never reused, so a freed
// handle is reported as unknown rather than reaching another sequence.
using sequence_id = std::uint64_t;

enum class logits_mode {
  none,  // only fill the KV cache (a prompt chunk that is not the last)
  last,  // the logits after the entry's last token (generation)
  all,   // the logits after every token of the entry (perplexity, scoring)
  // The final hidden state of every token of the entry: the residual stream after the output
  // RMSNorm, before the output projection (embeddings). A step's entries ask either for
  // logits (last, all) or for hidden states, never both.
  hidden,
};

// One sequence's part of a step: its new tokens, which take the positions
// sequence_length(sequence) .. sequence_length(sequence) + tokens.size() - 1.
// Thread safety: a value type (its tokens are borrowed).
struct batch_entry {
  sequence_id sequence = 0;
  std::span<const token_id> tokens;  // at least one; borrowed for the duration of forward()
  logits_mode logits = logits_mode::last;
};

// A forward step. Sequences join and leave between steps: any set of live sequences, each
// at most once, may form a batch. Thread safety: a value type.
struct batch {
  std::vector<batch_entry> entries;
};

// The outputs of one step, in batch order: entry i owns rows [entry_rows[i], entry_rows[i + 1]),
// one per token for logits_mode::all and hidden, one for last, none for none. A row is the
// logits (width n_vocab) or, in a step that asked for hidden states, one token's final hidden
// state (width n_embd).
// Thread safety: a value type.
struct logits_out {
  std::int64_t width = 0;                // n_vocab, or n_embd for hidden states
  std::vector<float> values;             // [n_rows × width]
  std::vector<std::int64_t> entry_rows;  // [n_entries + 1]

  std::int64_t n_rows() const noexcept { return width ? static_cast<std::int64_t>(values.size()) / width : 0; }
  std::span<const float> row(std::int64_t r) const noexcept {
    return {values.data() + r * width, static_cast<std::size_t>(width)};
  }
  // The last row of entry i: the logits that predict the token after its last one.
  std::span<const float> last_row(std::size_t entry) const noexcept { return row(entry_rows[entry + 1] - 1); }
};

// A backend holds the model's weights in the form it computes with (mapped or uploaded
// once, at creation) and the KV caches of its sequences.
// Thread safety: not thread-safe; one caller drives a backend (its scheduler).
class backend {
 public:
  virtual ~backend() = default;

  // For logs: "cpu avx512, 2 threads".
  virtual std::string description() const = 0;
  virtual const model_hparams& hparams() const noexcept = 0;

  // A new, empty sequence that can hold max_tokens tokens (0: the model's training context).
  // Errors: invalid_argument for a negative size; resource_exhausted when its cache cannot
  // be allocated.
  virtual result<sequence_id> create_sequence(std::int64_t max_tokens) = 0;
  // Releases a sequence's cache. Errors: not_found for an unknown handle.
  virtual status free_sequence(sequence_id sequence) = 0;
  // Tokens held, and the most it can hold. Errors: not_found.
  virtual result<std::int64_t> sequence_length(sequence_id sequence) const = 0;
  virtual result<std::int64_t> sequence_capacity(sequence_id sequence) const = 0;
  // Forgets the tokens from `length` on (to reuse a common prefix). Errors: not_found;
  // out_of_range when length exceeds the current length.
  virtual status truncate_sequence(sequence_id sequence, std::int64_t length) = 0;

  // Positions per KV page, the unit in which sequences share a cached prefix; 0 when the
  // backend cannot share (share_prefix then always fails with unsupported).
  virtual std::int64_t page_tokens() const noexcept = 0;
  // Makes the empty sequence `to` begin with the first `tokens` positions of `from`, holding the
  // same pages (by reference, not copied): a page either later writes into is copied first, so
  // neither ever sees the other's tokens beyond the prefix. Errors: not_found; invalid_argument
  // when `to` is `from` or not empty, or tokens is negative or more than `from` holds;
  // resource_exhausted when tokens exceed the capacity of `to`; unsupported (page_tokens 0).
  virtual status share_prefix(sequence_id from, sequence_id to, std::int64_t tokens) = 0;

  // Appends each entry's tokens to its sequence and computes the requested logits or hidden
  // states into `out` (its storage is reused between steps). Errors, checked before anything
  // changes: invalid_argument for an empty batch, an entry without tokens, a sequence twice, a
  // token outside the vocabulary, or logits and hidden states asked for in one step; not_found
  // for an unknown sequence; resource_exhausted when an entry would exceed its sequence's
  // capacity. On error no sequence changes.
  virtual status forward(const batch& step, logits_out& out) = 0;
};

}  // namespace chatai::engine
