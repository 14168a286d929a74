// Token sampling from logits: greedy, temperature, top-k, top-p, min-p, penalties, logit bias
// and seeded randomness, plus the log-probabilities that OpenAI's API reports.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/token.hpp"

namespace chatai::engine {


struct sampling_params {
  float temperature = 1.0f;         // 0 selects the most likely token (greedy)
  std::int32_t top_k = 0;           // keep the k most likely tokens; 0 keeps all
  float top_p = 1.0f;               // keep the smallest set whose probability reaches p
  float min_p = 0.0f;               // drop tokens below min_p times the top probability
  float repetition_penalty = 1.0f;  // divides positive (multiplies negative) logits of seen tokens
  float presence_penalty = 0.0f;    // subtracted once from tokens generated so far
  float frequency_penalty = 0.0f;   // subtracted per occurrence in tokens generated so far
  std::vector<std::pair<token_id, float>> logit_bias;  // added to the logits before anything else
  std::optional<std::uint64_t> seed;                   // the same seed and input give the same tokens

  // Checks ranges against `vocab_size`; the error names the parameter.
  status validate(std::int32_t vocab_size) const;
};

struct token_logprob {
  token_id token = 0;
  float logprob = 0.0f;
};

// Samples one sequence's tokens. Penalties look at the prompt (repetition) and at the tokens
// accepted so far (all three).
// Thread safety: not thread-safe; one sampler per sequence.
class sampler {
 public:
  sampler(sampling_params params, std::int32_t vocab_size);

  // Tokens of the prompt, for the repetition penalty.
  void set_prompt(std::span<const token_id> prompt);

  // Picks the next token from `logits` ([vocab_size]). Does not record it: call accept().
  token_id sample(std::span<const float> logits);

  // Records a generated token for the penalties.
  void accept(token_id token);

  // Log-probabilities of the unmodified distribution: the chosen token's and the `top_n`
  // most likely ones (most likely first).
  static token_logprob logprob_of(std::span<const float> logits, token_id token);
  static std::vector<token_logprob> top_logprobs(std::span<const float> logits, std::size_t top_n);

  const sampling_params& params() const { return params_; }

 private:
  struct candidate {
    float logit;
    token_id token;
  };

  void apply_bias_and_penalties(std::vector<float>& logits) const;
  token_id draw_from_all();  // temperature sampling over the whole vocabulary (in scratch_)

  sampling_params params_;
  std::int32_t vocab_size_;
  std::mt19937_64 rng_;
  std::vector<std::uint32_t> generated_counts_;  // [vocab_size]
  std::vector<bool> seen_;                        // [vocab_size]: in the prompt or generated
  std::vector<token_id> seen_list_;
  std::vector<float> scratch_;
  std::vector<candidate> candidates_;
};

// Finds stop strings in streamed text. Text that could still be the start of a stop string
// is held back; a matched stop string and everything after it are never emitted.
// Thread safety: not thread-safe; one matcher per sequence.
class stop_matcher {
 public:
  explicit stop_matcher(std::vector<std::string> stops);

  struct step {
    std::string emit;      // text that is safe to pass on now
    bool stopped = false;  // a stop string was found; nothing more should be generated
  };

  // Adds the next piece of generated text.
  step push(std::string_view piece);

  // The end of generation: returns what was held back.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  std::size_t longest_ = 0;
};

}  // namespace chatai::engine
