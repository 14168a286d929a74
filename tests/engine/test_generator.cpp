// The continuous-batching generator on the real model (SmolLM2-135M-Instruct).
#include <doctest/doctest.h>

#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/generator.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/vocabulary.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

struct real_model {
  std::shared_ptr<const model> weights;
  std::unique_ptr<backend> compute;
  std::optional<vocabulary> vocab;

  real_model() {
    auto m = model::load(CHATAI_TEST_MODEL);
    REQUIRE_MESSAGE(m, (m ? "" : m.err().message()));
    weights = *m;
    auto v = vocabulary::from_gguf(weights->file());
    REQUIRE(v);
    vocab.emplace(std::move(*v));
    cpu_backend_options o;
    o.n_threads = 2;
    auto b = create_cpu_backend(weights, o);
    REQUIRE(b);
    compute = std::move(*b);
  }
};

real_model& shared_model() {
  static real_model m;
  return m;
}

generation_request greedy(const vocabulary& v, std::string_view text, std::int64_t max_tokens) {
  generation_request r;
  r.prompt = v.encode(text);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  return r;
}

struct outcome {
  std::string text;
  std::vector<token_id> tokens;
  finish_reason reason = finish_reason::none;
  std::int64_t completion_tokens = 0;
};

// Steps until every listed sequence has finished; collects each one's output.
std::map<std::uint64_t, outcome> run_all(generator& g, std::map<std::uint64_t, outcome> out = {}) {
  for (int guard = 0; g.active() > 0 && guard < 10000; ++guard) {
    auto events = g.step();
    REQUIRE(events);
    for (auto& ev : *events) {
      auto& o = out[ev.id];
      o.text += ev.text;
      for (const auto& t : ev.tokens) o.tokens.push_back(t.token);
      o.completion_tokens = ev.completion_tokens;
      if (ev.finished != finish_reason::none) o.reason = ev.finished;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("greedy generation answers on the real model") {
  auto& m = shared_model();
  generator g(*m.compute, *m.vocab, {});
  auto id = g.add(greedy(*m.vocab, "The capital of France is", 4));
  REQUIRE(id);
  auto out = run_all(g);
  CHECK(out[*id].text.rfind(" Paris", 0) == 0);
  CHECK(out[*id].reason == finish_reason::length);
  CHECK(out[*id].completion_tokens == 4);
  CHECK(g.active() == 0);
}

TEST_CASE("sequences joining later decode exactly as they would alone") {
  auto& m = shared_model();
  const char* texts[] = {"Once upon a time", "The quick brown fox", "In 1969, the first"};
  std::vector<std::vector<token_id>> alone;
  for (const char* t : texts) {
    generator g(*m.compute, *m.vocab, {});
    auto id = g.add(greedy(*m.vocab, t, 12));
    REQUIRE(id);
    alone.push_back(run_all(g)[*id].tokens);
  }
  // Small prefill chunks and budgets force interleaving of prompt chunks and decodes.
  generator_options o;
  o.prefill_chunk = 2;
  o.max_batch_tokens = 4;
  generator g(*m.compute, *m.vocab, o);
  auto a = g.add(greedy(*m.vocab, texts[0], 12));
  REQUIRE(a);
  std::map<std::uint64_t, outcome> out;
  for (int i = 0; i < 5; ++i) {
    auto events = g.step();
    REQUIRE(events);
    for (auto& ev : *events)
      for (const auto& t : ev.tokens) out[ev.id].tokens.push_back(t.token);
  }
  auto b = g.add(greedy(*m.vocab, texts[1], 12));
  auto c = g.add(greedy(*m.vocab, texts[2], 12));
  REQUIRE(b);
  REQUIRE(c);
  out = run_all(g, out);
  CHECK(out[*a].tokens == alone[0]);
  CHECK(out[*b].tokens == alone[1]);
  CHECK(out[*c].tokens == alone[2]);
}

TEST_CASE("stop strings end generation and are not emitted") {
  auto& m = shared_model();
  generator g(*m.compute, *m.vocab, {});
  auto free_run = g.add(greedy(*m.vocab, "The capital of France is", 6));
  REQUIRE(free_run);
  const std::string full = run_all(g)[*free_run].text;
  REQUIRE(full.size() > 8);
  // Stop on a piece of what greedy decoding produces anyway.
  const std::string stop = full.substr(3, 4);
  auto req = greedy(*m.vocab, "The capital of France is", 6);
  req.stop = {stop};
  auto id = g.add(req);
  REQUIRE(id);
  auto out = run_all(g)[*id];
  CHECK(out.reason == finish_reason::stop);
  CHECK(out.text == full.substr(0, full.find(stop)));
}

TEST_CASE("the same seed gives the same text") {
  auto& m = shared_model();
  auto sampled = [&](std::uint64_t seed) {
    generator g(*m.compute, *m.vocab, {});
    auto r = greedy(*m.vocab, "Tell me a story about", 16);
    r.sampling.temperature = 0.9f;
    r.sampling.seed = seed;
    auto id = g.add(r);
    REQUIRE(id);
    return run_all(g)[*id].tokens;
  };
  CHECK(sampled(11) == sampled(11));
  CHECK(sampled(11) != sampled(12));
}

TEST_CASE("limits and removal") {
  auto& m = shared_model();
  generator_options o;
  o.context = 16;
  generator g(*m.compute, *m.vocab, o);
  auto too_long = g.add(greedy(*m.vocab, std::string(200, 'a'), 4));
  REQUIRE_FALSE(too_long);
  CHECK(too_long.err().code() == errc::out_of_range);
  CHECK(too_long.err().message().find("context holds 16 tokens") != std::string::npos);
  CHECK_FALSE(g.add(generation_request{}));

  auto id = g.add(greedy(*m.vocab, "Hello", 1000));
  REQUIRE(id);
  auto out = run_all(g)[*id];
  CHECK(out.reason == finish_reason::length);  // the context filled up first

  auto kept = g.add(greedy(*m.vocab, "Hello there", 100));
  REQUIRE(kept);
  REQUIRE(g.step());
  CHECK(g.cached_tokens() > 0);
  CHECK(g.remove(*kept));
  CHECK(g.cached_tokens() == 0);
  CHECK(g.remove(*kept).err().code() == errc::not_found);
}

TEST_CASE("the prefix cache reuses earlier turns and changes no output") {
  auto& m = shared_model();
  const std::string system =
      "<|im_start|>system\nYou are a helpful assistant who answers in one short sentence.<|im_end|>\n";
  const std::string turn1 = system + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
  // The outputs with no cache at all, to compare against.
  const auto uncached = [&](const std::string& text, std::int64_t n) {
    generator g(*m.compute, *m.vocab, {});
    auto id = g.add(greedy(*m.vocab, text, n));
    REQUIRE(id);
    return run_all(g)[*id].tokens;
  };
  generator_options o;
  o.prefix_cache_tokens = 4096;
  o.prefill_chunk = 32;  // the first turn's prompt in several chunks
  generator g(*m.compute, *m.vocab, o);
  const auto first = g.add(greedy(*m.vocab, turn1, 12));
  REQUIRE(first);
  auto out = run_all(g);
  CHECK(out[*first].tokens == uncached(turn1, 12));
  CHECK(g.prefix_stats().kept == 1);
  CHECK(g.prefix_stats().hits == 0);

  // The second turn resends the first with the answer: all of it but a partial page is reused.
  const std::string answer = out[*first].text;
  const std::string turn2 = turn1 + answer + "<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n";
  auto second = g.add(greedy(*m.vocab, turn2, 12));
  REQUIRE(second);
  std::int64_t reported = -1;
  std::map<std::uint64_t, outcome> second_out;
  while (g.active() > 0) {
    auto events = g.step();
    REQUIRE(events);
    for (auto& ev : *events) {
      reported = ev.cached_tokens;
      for (const auto& t : ev.tokens) second_out[ev.id].tokens.push_back(t.token);
    }
  }
  // All that both share, to the token (the answer's tokens at the seam may differ): the first
  // turn's prompt and outputs as its cache holds them, against the second turn's prompt.
  std::vector<token_id> kept = m.vocab->encode(turn1);
  kept.insert(kept.end(), out[*first].tokens.begin(), out[*first].tokens.end() - 1);
  const auto prompt2 = m.vocab->encode(turn2);
  const auto common = static_cast<std::int64_t>(std::mismatch(kept.begin(), kept.end(), prompt2.begin(), prompt2.end()).first - kept.begin());
  CHECK(common > static_cast<std::int64_t>(kept.size()) / 16 * 16);  // part of a page is reused here
  CHECK(reported == common);
  CHECK(second_out[*second].tokens == uncached(turn2, 12));
  CHECK(g.prefix_stats().hits == 1);
  CHECK(g.prefix_stats().reused_tokens == reported);
  CHECK(g.prefix_stats().kept == 1);  // the second turn's cache holds all of the first's

  SUBCASE("several sequences of one prompt at once, one cancelled, each as if alone") {
    const std::string question = system + "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n";
    const auto alone = uncached(question, 8);
    std::vector<std::uint64_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(g.add(greedy(*m.vocab, question, 8)).value());
    std::map<std::uint64_t, outcome> all;
    auto events = g.step();
    REQUIRE(events);
    for (auto& ev : *events)
      for (const auto& t : ev.tokens) all[ev.id].tokens.push_back(t.token);
    REQUIRE(g.remove(ids[2]));  // cancelled: what it computed is kept as well
    all = run_all(g, all);
    CHECK(all[ids[0]].tokens == alone);
    CHECK(all[ids[1]].tokens == alone);
    CHECK(g.prefix_stats().hits >= 4);  // the system prompt's pages, for each of the three
    // The same prompt again: all of it but its last token comes from the cache.
    const auto again = g.add(greedy(*m.vocab, question, 8));
    REQUIRE(again);
    std::int64_t cached = -1;
    auto first_events = g.step();
    REQUIRE(first_events);
    for (auto& ev : *first_events)
      if (ev.id == *again) cached = ev.cached_tokens;
    CHECK(cached == static_cast<std::int64_t>(m.vocab->encode(question).size()) - 1);
    run_all(g);
  }

  SUBCASE("the budget evicts the least recently used") {
    generator_options tight = o;
    tight.prefix_cache_tokens = 64;
    generator small(*m.compute, *m.vocab, tight);
    for (const char* q : {"Tell me about cats.", "Tell me about dogs and their long history with people."}) {
      const std::string prompt = "<|im_start|>user\n" + std::string(q) + "<|im_end|>\n<|im_start|>assistant\n";
      REQUIRE(small.add(greedy(*m.vocab, prompt, 40)));
      run_all(small);
      CHECK(small.prefix_stats().held_tokens <= 64);
    }
    CHECK(small.prefix_stats().evicted >= 1);
  }
}
