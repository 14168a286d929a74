// The checks every backend makes on its sequences and batches (backend.hpp's contract), with the
// same errors whatever the device.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"

namespace chatai::engine {

inline error unknown_sequence(sequence_id sequence) {
  return error(errc::not_found, "sequence " + std::to_string(sequence) + " does not exist");
}

// out_of_range unless 0 <= length <= held (the tokens the sequence holds).
inline status check_truncation(sequence_id sequence, std::int64_t held, std::int64_t length) {
  if (length >= 0 && length <= held) return {};
  return error(errc::out_of_range, "sequence " + std::to_string(sequence) + " holds " + std::to_string(held) +
                                       " tokens; cannot truncate to " + std::to_string(length));
}

// The arguments of backend::share_prefix, given the lengths of both sequences and the capacity
// of the one that takes the prefix.
inline status check_sharing(sequence_id from, std::int64_t from_length, sequence_id to, std::int64_t to_length,
                            std::int64_t to_capacity, std::int64_t tokens) {
  if (from == to) return error(errc::invalid_argument, "a sequence cannot take a prefix from itself");
  if (to_length != 0) {
    return error(errc::invalid_argument, "sequence " + std::to_string(to) + " holds " + std::to_string(to_length) +
                                             " tokens; only an empty sequence takes a prefix");
  }
  if (tokens < 0 || tokens > from_length) {
    return error(errc::invalid_argument, "sequence " + std::to_string(from) + " holds " + std::to_string(from_length) +
                                             " tokens; cannot share " + std::to_string(tokens));
  }
  if (tokens > to_capacity) {
    return error(errc::resource_exhausted, std::to_string(tokens) + " tokens exceed the context of sequence " +
                                               std::to_string(to) + " (" + std::to_string(to_capacity) + " tokens)");
  }
  return {};
}

// Checks a batch before anything changes: entries present, each sequence known (`sequences`
// maps ids to states with `length` and `capacity`) and there once, tokens present and inside
// the vocabulary, capacities not exceeded, logits and hidden states not asked for together.
template <class SequenceMap>
status validate_batch(const batch& step, const SequenceMap& sequences, std::int64_t n_vocab) {
  if (step.entries.empty()) return error(errc::invalid_argument, "the batch has no entries");
  std::unordered_set<sequence_id> seen;
  bool logits = false, hidden = false;
  for (const batch_entry& e : step.entries) {
    logits |= e.logits == logits_mode::last || e.logits == logits_mode::all;
    hidden |= e.logits == logits_mode::hidden;
    if (logits && hidden) {
      return error(errc::invalid_argument, "a step asks for logits or for hidden states, not both");
    }
    auto it = sequences.find(e.sequence);
    if (it == sequences.end()) return unknown_sequence(e.sequence);
    if (!seen.insert(e.sequence).second) {
      return error(errc::invalid_argument, "sequence " + std::to_string(e.sequence) + " appears twice in the batch");
    }
    if (e.tokens.empty()) {
      return error(errc::invalid_argument, "the entry of sequence " + std::to_string(e.sequence) + " has no tokens");
    }
    for (token_id t : e.tokens) {
      if (t < 0 || t >= n_vocab) {
        return error(errc::invalid_argument,
                     "token " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(n_vocab));
      }
    }
    const auto& s = it->second;
    const auto n = static_cast<std::int64_t>(e.tokens.size());
    if (s.length + n > s.capacity) {
      return error(errc::resource_exhausted, "sequence " + std::to_string(e.sequence) + " holds " +
                                                 std::to_string(s.length) + " tokens; " + std::to_string(n) +
                                                 " more exceed its context of " + std::to_string(s.capacity) + " tokens");
    }
  }
  return {};
}

}  // namespace chatai::engine
