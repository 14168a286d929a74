// The continuous-batching generator: prompt chunks and decodes share each backend step.
#include "chatai/engine/generator.hpp"

#include <algorithm>

namespace chatai::engine {

std::string_view to_string(finish_reason reason) noexcept {
  switch (reason) {
    case finish_reason::none: return "none";
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
  }
  return "none";
}

struct generator::sequence {
  sequence(generation_request r, const vocabulary& v, std::int32_t n_vocab)
      : request(std::move(r)), pick(request.sampling, n_vocab), decoder(v, request.render_special), stops(request.stop) {
    pick.set_prompt(request.prompt);
  }

  generation_request request;
  sequence_id cache = 0;
  std::size_t prompt_done = 0;  // prompt tokens already in the cache
  std::int64_t reused = 0;      // of those, taken from the prefix cache
  std::vector<token_id> outputs;  // sampled so far
  std::optional<token_id> next_input;  // the last sampled token, fed in the next step
  std::int64_t generated = 0;
  sampler pick;
  streaming_decoder decoder;
  stop_matcher stops;
  std::optional<grammar_matcher> constraint;
};

generator::generator(backend& compute, vocabulary vocab, generator_options options)
    : backend_(compute), vocab_(std::move(vocab)), options_(options), prefix_(compute, options.prefix_cache_tokens) {
  const auto train = backend_.hparams().n_ctx_train;
  context_ = options_.context > 0 ? options_.context : train;
  options_.max_batch_tokens = std::max<std::int64_t>(1, options_.max_batch_tokens);
  options_.prefill_chunk = std::max<std::int64_t>(1, options_.prefill_chunk);
}

generator::~generator() {
  for (auto& [id, seq] : sequences_) (void)backend_.free_sequence(seq->cache);
}

void generator::release(sequence& seq) {
  const auto length = backend_.sequence_length(seq.cache);
  if (!length || !prefix_.enabled()) {
    (void)backend_.free_sequence(seq.cache);
    return;
  }
  // The cache holds the prompt and every output but the last (sampled, never fed back).
  std::vector<token_id> held(seq.request.prompt);
  held.insert(held.end(), seq.outputs.begin(), seq.outputs.end());
  held.resize(std::min(held.size(), static_cast<std::size_t>(*length)));
  prefix_.keep(seq.cache, std::move(held));
}

std::int64_t generator::cached_tokens() const noexcept {
  std::int64_t total = 0;
  for (const auto& [id, seq] : sequences_) {
    if (auto n = backend_.sequence_length(seq->cache)) total += *n;
  }
  return total;
}

result<std::uint64_t> generator::add(generation_request request) {
  const auto n_vocab = static_cast<std::int32_t>(backend_.hparams().n_vocab);
  if (request.prompt.empty()) return error(errc::invalid_argument, "the prompt is empty");
  for (const token_id t : request.prompt) {
    if (t < 0 || t >= n_vocab)
      return error(errc::invalid_argument, "prompt token " + std::to_string(t) + " is outside the vocabulary of " +
                                               std::to_string(n_vocab));
  }
  CHATAI_RETURN_IF_ERROR(request.sampling.validate(n_vocab));
  if (request.max_tokens < 1) return error(errc::invalid_argument, "max_tokens must be at least 1");
  const auto prompt_len = static_cast<std::int64_t>(request.prompt.size());
  if (prompt_len >= context_) {
    return error(errc::out_of_range, "the prompt has " + std::to_string(prompt_len) +
                                         " tokens, but the context holds " + std::to_string(context_) +
                                         " tokens (prompt and completion together)");
  }
  auto cache = backend_.create_sequence(context_);
  if (!cache && cache.err().code() == errc::resource_exhausted && prefix_.stats().kept > 0) {
    prefix_.shrink_to(0);  // memory pressure: the kept sequences go first
    cache = backend_.create_sequence(context_);
  }
  if (!cache) return std::move(cache).err();
  auto seq = std::make_unique<sequence>(std::move(request), vocab_, n_vocab);
  seq->cache = *cache;
  seq->reused = prefix_.reuse(seq->request.prompt, seq->cache);
  seq->prompt_done = static_cast<std::size_t>(seq->reused);
  if (seq->request.constraint) {
    if (!tokens_) tokens_ = std::make_shared<const token_table>(vocab_);
    seq->constraint.emplace(seq->request.constraint, tokens_);
  }
  const auto id = next_id_++;
  sequences_.emplace(id, std::move(seq));
  return id;
}

status generator::remove(std::uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return error(errc::not_found, "no sequence " + std::to_string(id));
  release(*it->second);
  sequences_.erase(it);
  return {};
}

result<std::vector<sequence_event>> generator::step() {
  std::vector<sequence_event> events;
  if (sequences_.empty()) return events;

  // Decodes first (one token each), then prompt chunks within the step's token budget.
  batch b;
  std::vector<std::uint64_t> owners;
  std::vector<token_id> decode_inputs;
  decode_inputs.reserve(sequences_.size());
  std::int64_t budget = options_.max_batch_tokens;
  for (auto& [id, seq] : sequences_) {
    if (!seq->next_input) continue;
    decode_inputs.push_back(*seq->next_input);
  }
  std::size_t decode_index = 0;
  for (auto& [id, seq] : sequences_) {
    if (!seq->next_input) continue;
    b.entries.push_back({seq->cache, std::span<const token_id>(&decode_inputs[decode_index++], 1), logits_mode::last});
    owners.push_back(id);
    --budget;
  }
  for (auto& [id, seq] : sequences_) {
    if (seq->next_input || budget <= 0) continue;
    const auto left = static_cast<std::int64_t>(seq->request.prompt.size() - seq->prompt_done);
    const auto n = std::min({left, options_.prefill_chunk, budget});
    const bool completes = n == left;
    b.entries.push_back({seq->cache,
                         std::span<const token_id>(seq->request.prompt.data() + seq->prompt_done, static_cast<std::size_t>(n)),
                         completes ? logits_mode::last : logits_mode::none});
    owners.push_back(id);
    budget -= n;
  }
  if (b.entries.empty()) return events;

  auto done = backend_.forward(b, logits_);
  if (!done && done.err().code() == errc::resource_exhausted && prefix_.stats().kept > 0) {
    prefix_.shrink_to(0);  // memory pressure: the kept sequences go first
    done = backend_.forward(b, logits_);
  }
  CHATAI_RETURN_IF_ERROR(done);

  std::vector<std::uint64_t> finished;
  for (std::size_t i = 0; i < b.entries.size(); ++i) {
    auto& seq = *sequences_.at(owners[i]);
    const auto& entry = b.entries[i];
    sequence_event ev;
    ev.id = owners[i];
    ev.prompt_tokens = static_cast<std::int64_t>(seq.request.prompt.size());
    ev.cached_tokens = seq.reused;
    if (!seq.next_input) seq.prompt_done += entry.tokens.size();
    if (entry.logits == logits_mode::none) {
      ev.completion_tokens = seq.generated;
      continue;  // more of the prompt to read; nothing to report yet
    }
    const auto row = logits_.last_row(i);
    token_id token = seq.pick.sample(row);
    if (seq.constraint && !seq.constraint->allows(token)) {
      masked_.assign(row.begin(), row.end());
      seq.constraint->mask(masked_);
      token = seq.pick.sample(masked_);
    }
    seq.pick.accept(token);
    seq.outputs.push_back(token);
    bool grammar_done = false;
    if (seq.constraint) {
      if (!seq.constraint->accept(token)) {
        grammar_done = true;  // nothing was allowed: the grammar cannot go on
      } else {
        grammar_done = seq.constraint->complete() && !seq.constraint->can_continue();
      }
    }
    ++seq.generated;
    generated_token gen;
    gen.token = token;
    if (seq.request.top_logprobs >= 0) {
      gen.chosen = sampler::logprob_of(row, token);
      if (seq.request.top_logprobs > 0) gen.top = sampler::top_logprobs(row, static_cast<std::size_t>(seq.request.top_logprobs));
    }
    ev.tokens.push_back(std::move(gen));

    const bool end_token = !seq.request.ignore_eos && vocab_.is_end_of_generation(token);
    bool string_stopped = false;
    if (end_token) {
      ev.finished = finish_reason::stop;
    } else {
      auto st = seq.stops.push(seq.decoder.push(token));
      ev.text = std::move(st.emit);
      string_stopped = st.stopped;
      if (st.stopped || grammar_done) ev.finished = finish_reason::stop;
    }
    const auto length = backend_.sequence_length(seq.cache);
    const bool context_full = length && *length + 1 >= context_;
    if (ev.finished == finish_reason::none && (seq.generated >= seq.request.max_tokens || context_full))
      ev.finished = finish_reason::length;
    if (ev.finished != finish_reason::none) {
      // Unless a stop string ended it, what the decoder and the matcher hold back goes out now.
      if (!string_stopped) {
        auto tail = seq.stops.push(seq.decoder.finish());
        ev.text += tail.emit;
        if (!tail.stopped) ev.text += seq.stops.flush();
      }
      finished.push_back(ev.id);
    } else {
      seq.next_input = token;
    }
    ev.completion_tokens = seq.generated;
    events.push_back(std::move(ev));
  }
  for (const auto id : finished) (void)remove(id);
  return events;
}

}  // namespace chatai::engine
