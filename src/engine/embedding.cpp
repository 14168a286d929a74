// Embeddings: prompt chunks through a temporary sequence, hidden rows pooled and normalized.
#include "chatai/engine/embedding.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace chatai::engine {

std::string_view to_string(pooling p) noexcept {
  switch (p) {
    case pooling::mean: return "mean";
    case pooling::last: return "last";
  }
  return "unknown";
}

result<pooling> parse_pooling(std::string_view name) {
  if (name == "mean") return pooling::mean;
  if (name == "last") return pooling::last;
  return error(errc::invalid_argument, "pooling must be \"mean\" or \"last\", got \"" + std::string(name) + "\"");
}

pooling default_pooling(const gguf_file& file) {
  auto arch = file.architecture();
  if (!arch) return pooling::mean;
  auto type = file.get_uint(std::string(*arch) + ".pooling_type");
  constexpr std::uint64_t llama_pooling_last = 3;
  return type && *type == llama_pooling_last ? pooling::last : pooling::mean;
}

std::vector<token_id> encode_embedding_input(const vocabulary& vocab, std::string_view text) {
  encode_options o;
  o.add_bos = vocab.add_bos();
  o.add_eos = vocab.add_eos();
  return vocab.encode(text, o);
}

embedding_job::embedding_job(backend& compute, std::vector<token_id> tokens, const embedding_options& options,
                             sequence_id sequence)
    : backend_(compute), tokens_(std::move(tokens)), options_(options), sequence_(sequence) {}

embedding_job::~embedding_job() { (void)backend_.free_sequence(sequence_); }

result<std::unique_ptr<embedding_job>> embedding_job::start(backend& compute, std::vector<token_id> tokens,
                                                            const embedding_options& options) {
  if (tokens.empty()) return error(errc::invalid_argument, "the input has no tokens");
  if (options.chunk_tokens < 1) return error(errc::invalid_argument, "chunk_tokens must be at least 1");
  const model_hparams& hp = compute.hparams();
  const std::int64_t limit = options.max_tokens > 0 ? options.max_tokens : hp.n_ctx_train;
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (n > limit) {
    return error(errc::out_of_range,
                 "the input has " + std::to_string(n) + " tokens, the context holds " + std::to_string(limit));
  }
  for (token_id t : tokens) {
    if (t < 0 || t >= hp.n_vocab) {
      return error(errc::invalid_argument,
                   "token " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(hp.n_vocab));
    }
  }
  auto sequence = compute.create_sequence(n);
  if (!sequence) return std::move(sequence).err();
  return std::unique_ptr<embedding_job>(new embedding_job(compute, std::move(tokens), options, *sequence));
}

status embedding_job::step() {
  if (done_) return {};
  const std::int64_t n_embd = backend_.hparams().n_embd;
  const auto total = static_cast<std::int64_t>(tokens_.size());
  const std::int64_t n = std::min(options_.chunk_tokens, total - read_);
  const bool last_chunk = read_ + n == total;
  const bool wanted = options_.pool == pooling::mean || last_chunk;
  batch step;
  step.entries.push_back({sequence_, std::span<const token_id>(tokens_).subspan(static_cast<std::size_t>(read_),
                                                                                static_cast<std::size_t>(n)),
                          wanted ? logits_mode::hidden : logits_mode::none});
  CHATAI_RETURN_IF_ERROR(backend_.forward(step, out_));
  read_ += n;
  if (options_.pool == pooling::mean) {
    sum_.resize(static_cast<std::size_t>(n_embd), 0.0);
    for (std::int64_t r = 0; r < out_.n_rows(); ++r) {
      const auto row = out_.row(r);
      for (std::int64_t i = 0; i < n_embd; ++i) sum_[static_cast<std::size_t>(i)] += row[static_cast<std::size_t>(i)];
    }
  }
  if (!last_chunk) return {};

  vector_.resize(static_cast<std::size_t>(n_embd));
  if (options_.pool == pooling::mean) {
    const auto n_rows = static_cast<double>(total);
    for (std::size_t i = 0; i < vector_.size(); ++i) vector_[i] = static_cast<float>(sum_[i] / n_rows);
  } else {
    const auto row = out_.row(out_.n_rows() - 1);
    std::copy(row.begin(), row.end(), vector_.begin());
  }
  double norm = 0.0;
  for (float v : vector_) norm += static_cast<double>(v) * v;
  if (!std::isfinite(norm)) return error(errc::internal, "the model's hidden states are not finite");
  if (options_.normalize && norm > 0.0) {
    const double scale = 1.0 / std::sqrt(norm);
    for (float& v : vector_) v = static_cast<float>(v * scale);
  }
  done_ = true;
  return {};
}

result<std::vector<float>> embed(backend& compute, std::span<const token_id> tokens, const embedding_options& options) {
  auto job = embedding_job::start(compute, std::vector<token_id>(tokens.begin(), tokens.end()), options);
  if (!job) return std::move(job).err();
  while (!(*job)->done()) CHATAI_RETURN_IF_ERROR((*job)->step());
  return (*job)->vector();
}

}  // namespace chatai::engine
