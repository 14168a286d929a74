// Sampling: bias and penalties, then greedy or top-k / top-p / min-p with temperature.
#include "chatai/engine/sampler.hpp"

#include "chatai/engine/cpu_backend.hpp"
#include "cpu/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace chatai::engine {

status sampling_params::validate(std::int32_t vocab_size) const {
  auto bad = [](const char* name, const std::string& what) {
    return error(errc::invalid_argument, std::string(name) + " " + what);
  };
  if (!std::isfinite(temperature) || temperature < 0.0f || temperature > 100.0f)
    return bad("temperature", "must be between 0 and 100");
  if (top_k < 0) return bad("top_k", "must be 0 (off) or positive");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return bad("top_p", "must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return bad("min_p", "must be in [0, 1]");
  if (!(repetition_penalty > 0.0f && repetition_penalty <= 100.0f))
    return bad("repetition_penalty", "must be in (0, 100]");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return bad("presence_penalty", "must be between -2 and 2");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return bad("frequency_penalty", "must be between -2 and 2");
  for (const auto& [token, bias] : logit_bias) {
    if (token < 0 || token >= vocab_size)
      return bad("logit_bias", "names token " + std::to_string(token) + ", outside the vocabulary of " +
                                   std::to_string(vocab_size));
    if (!(bias >= -100.0f && bias <= 100.0f)) return bad("logit_bias", "values must be between -100 and 100");
  }
  return {};
}

sampler::sampler(sampling_params params, std::int32_t vocab_size)
    : params_(std::move(params)),
      vocab_size_(vocab_size),
      rng_(params_.seed ? *params_.seed : std::random_device{}()),
      generated_counts_(static_cast<std::size_t>(vocab_size), 0),
      seen_(static_cast<std::size_t>(vocab_size), false) {}

void sampler::set_prompt(std::span<const token_id> prompt) {
  for (const token_id t : prompt) {
    if (t >= 0 && t < vocab_size_ && !seen_[static_cast<std::size_t>(t)]) {
      seen_[static_cast<std::size_t>(t)] = true;
      seen_list_.push_back(t);
    }
  }
}

void sampler::accept(token_id token) {
  if (token < 0 || token >= vocab_size_) return;
  const auto i = static_cast<std::size_t>(token);
  if (generated_counts_[i]++ == 0 && !seen_[i]) {
    seen_[i] = true;
    seen_list_.push_back(token);
  }
}

void sampler::apply_bias_and_penalties(std::vector<float>& logits) const {
  for (const auto& [token, bias] : params_.logit_bias) logits[static_cast<std::size_t>(token)] += bias;
  const bool penalties = params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                         params_.frequency_penalty != 0.0f;
  if (!penalties) return;
  for (const token_id t : seen_list_) {
    const auto i = static_cast<std::size_t>(t);
    float& l = logits[i];
    if (params_.repetition_penalty != 1.0f) l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    const auto count = generated_counts_[i];
    if (count > 0) l -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
  }
}

token_id sampler::sample(std::span<const float> logits) {
  scratch_.assign(logits.begin(), logits.end());
  apply_bias_and_penalties(scratch_);

  if (params_.temperature <= 0.0f || params_.top_k == 1) {
    return static_cast<token_id>(std::max_element(scratch_.begin(), scratch_.end()) - scratch_.begin());
  }

  // Plain temperature sampling draws from the whole vocabulary: the weights in place, the
  // exponentials vectorised, and the draw found block by block.
  const bool whole_vocabulary = (params_.top_k <= 0 || static_cast<std::size_t>(params_.top_k) >= scratch_.size()) &&
                                params_.min_p <= 0.0f && params_.top_p >= 1.0f;
  if (whole_vocabulary) return draw_from_all();

  candidates_.resize(scratch_.size());
  for (std::size_t i = 0; i < scratch_.size(); ++i) candidates_[i] = {scratch_[i], static_cast<token_id>(i)};
  auto by_logit = [](const candidate& a, const candidate& b) { return a.logit > b.logit; };

  std::size_t n = candidates_.size();
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < n) {
    n = static_cast<std::size_t>(params_.top_k);
    std::nth_element(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n - 1), candidates_.end(), by_logit);
  }
  const auto head_end = candidates_.begin() + static_cast<std::ptrdiff_t>(n);
  const float max_logit = std::max_element(candidates_.begin(), head_end, [](const candidate& a, const candidate& b) {
                            return a.logit < b.logit;
                          })->logit;

  // Softmax with temperature over the n candidates (unnormalised weights first).
  const float inv_t = 1.0f / params_.temperature;
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const float w = std::exp((candidates_[i].logit - max_logit) * inv_t);
    candidates_[i].logit = w;  // from here on the field holds the weight
    total += w;
  }

  // min-p: relative to the top weight, which is exp(0) = 1.
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p;
    auto end = std::partition(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n),
                              [threshold](const candidate& c) { return c.logit >= threshold; });
    n = static_cast<std::size_t>(end - candidates_.begin());
    total = 0.0;
    for (std::size_t i = 0; i < n; ++i) total += candidates_[i].logit;
  }

  // top-p: sort a growing prefix until it holds enough probability mass.
  if (params_.top_p < 1.0f) {
    const double target = params_.top_p * total;
    std::size_t sorted = 0;
    std::size_t keep = n;
    double mass = 0.0;
    for (std::size_t chunk = 64; sorted < n; chunk *= 4) {
      const std::size_t upto = std::min(n, chunk);
      std::partial_sort(candidates_.begin() + static_cast<std::ptrdiff_t>(sorted),
                        candidates_.begin() + static_cast<std::ptrdiff_t>(upto),
                        candidates_.begin() + static_cast<std::ptrdiff_t>(n), by_logit);
      bool done = false;
      for (std::size_t i = sorted; i < upto; ++i) {
        mass += candidates_[i].logit;
        if (mass >= target) {
          keep = i + 1;
          done = true;
          break;
        }
      }
      sorted = upto;
      if (done) break;
    }
    n = keep;
    total = 0.0;
    for (std::size_t i = 0; i < n; ++i) total += candidates_[i].logit;
  }

  std::uniform_real_distribution<double> uniform(0.0, total);
  double r = uniform(rng_);
  for (std::size_t i = 0; i < n; ++i) {
    r -= candidates_[i].logit;
    if (r <= 0.0) return candidates_[i].token;
  }
  return candidates_[n - 1].token;
}

token_id sampler::draw_from_all() {
  static const cpu::softmax_fn softmax = cpu::kernels_for(best_cpu_isa()).softmax;
  float* w = scratch_.data();
  const std::size_t n = scratch_.size();
  constexpr std::size_t block = 256;
  const float total = softmax(w, static_cast<std::int64_t>(n), 1.0f / params_.temperature);
  std::uniform_real_distribution<float> uniform(0.0f, total);
  float r = uniform(rng_);
  std::size_t at = 0;
  // Whole blocks first: each one's sum in eight independent lanes.
  for (; at + block <= n; at += block) {
    float lanes[8] = {};
    for (std::size_t i = 0; i < block; i += 8)
      for (std::size_t l = 0; l < 8; ++l) lanes[l] += w[at + i + l];
    float sum = 0.0f;
    for (const float v : lanes) sum += v;
    if (r < sum) break;
    r -= sum;
  }
  token_id last = -1;
  for (std::size_t i = at; i < n; ++i) {
    if (w[i] <= 0.0f) continue;
    last = static_cast<token_id>(i);
    r -= w[i];
    if (r < 0.0f) return last;
  }
  // Rounding left a sliver past the end: the last token that had any weight.
  for (std::size_t i = n; last < 0 && i-- > 0;)
    if (w[i] > 0.0f) last = static_cast<token_id>(i);
  return last;
}

namespace {
double log_sum_exp(std::span<const float> logits, float& max_out) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (const float l : logits) sum += std::exp(static_cast<double>(l - max_logit));
  max_out = max_logit;
  return std::log(sum);
}
}  // namespace

token_logprob sampler::logprob_of(std::span<const float> logits, token_id token) {
  float max_logit = 0.0f;
  const double lse = log_sum_exp(logits, max_logit);
  return {token, static_cast<float>(logits[static_cast<std::size_t>(token)] - max_logit - lse)};
}

std::vector<token_logprob> sampler::top_logprobs(std::span<const float> logits, std::size_t top_n) {
  float max_logit = 0.0f;
  const double lse = log_sum_exp(logits, max_logit);
  top_n = std::min(top_n, logits.size());
  std::vector<token_id> ids(logits.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<token_id>(i);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(top_n), ids.end(),
                    [&](token_id a, token_id b) { return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]; });
  std::vector<token_logprob> out;
  out.reserve(top_n);
  for (std::size_t i = 0; i < top_n; ++i) {
    out.push_back({ids[i], static_cast<float>(logits[static_cast<std::size_t>(ids[i])] - max_logit - lse)});
  }
  return out;
}

stop_matcher::stop_matcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
  for (const auto& s : stops_) longest_ = std::max(longest_, s.size());
}

stop_matcher::step stop_matcher::push(std::string_view piece) {
  step out;
  pending_.append(piece);
  // The earliest complete stop string wins.
  std::size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    out.emit = pending_.substr(0, first);
    out.stopped = true;
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  std::size_t hold = 0;
  const std::size_t max_hold = std::min(pending_.size(), longest_ > 0 ? longest_ - 1 : 0);
  for (std::size_t len = max_hold; len > 0 && hold == 0; --len) {
    const std::string_view tail = std::string_view(pending_).substr(pending_.size() - len);
    for (const auto& s : stops_) {
      if (std::string_view(s).substr(0, len) == tail) {
        hold = len;
        break;
      }
    }
  }
  out.emit = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string stop_matcher::flush() { return std::exchange(pending_, {}); }

}  // namespace chatai::engine
