// Tests of the sampler and the stop-string matcher.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "chatai/engine/sampler.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {
std::vector<float> ramp(std::size_t n) {
  std::vector<float> logits(n);
  for (std::size_t i = 0; i < n; ++i) logits[i] = static_cast<float>(i) * 0.01f;
  return logits;
}
}  // namespace

TEST_CASE("greedy picks the largest logit, after the bias") {
  std::vector<float> logits = {0.1f, 2.0f, 1.5f, -1.0f};
  sampling_params p;
  p.temperature = 0.0f;
  sampler greedy(p, 4);
  CHECK(greedy.sample(logits) == 1);
  p.logit_bias = {{2, 1.0f}};
  sampler biased(p, 4);
  CHECK(biased.sample(logits) == 2);
  p.logit_bias = {{1, -100.0f}};
  sampler banned(p, 4);
  CHECK(banned.sample(logits) == 2);
}

TEST_CASE("the same seed gives the same tokens; another seed other tokens") {
  const auto logits = std::vector<float>(1000, 0.0f);
  sampling_params p;
  p.seed = 42;
  sampler a(p, 1000), b(p, 1000);
  p.seed = 43;
  sampler c(p, 1000);
  std::vector<token_id> sa, sb, sc;
  for (int i = 0; i < 20; ++i) {
    sa.push_back(a.sample(logits));
    sb.push_back(b.sample(logits));
    sc.push_back(c.sample(logits));
  }
  CHECK(sa == sb);
  CHECK(sa != sc);
}

TEST_CASE("temperature 1 follows the softmax distribution") {
  std::vector<float> logits = {0.0f, std::log(3.0f)};
  sampling_params p;
  p.seed = 7;
  sampler s(p, 2);
  int ones = 0;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ones += s.sample(logits) == 1;
  CHECK(static_cast<double>(ones) / draws == doctest::Approx(0.75).epsilon(0.03));
}

TEST_CASE("temperature sampling over a large vocabulary follows the tempered softmax") {
  // 1,003 tokens (several blocks and a ragged end): five likely ones spread over the
  // vocabulary, the rest far less likely, one masked with -inf.
  const std::size_t n = 1003;
  std::vector<float> logits(n, -4.0f);
  const std::vector<std::size_t> likely = {0, 255, 256, 700, 1002};
  for (std::size_t i = 0; i < likely.size(); ++i) logits[likely[i]] = static_cast<float>(i) * 0.5f;
  logits[500] = -INFINITY;
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    CAPTURE(temperature);
    sampling_params p;
    p.seed = 11;
    p.temperature = temperature;
    sampler s(p, static_cast<std::int32_t>(n));
    std::vector<double> want(n);
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) total += want[i] = std::exp(static_cast<double>(logits[i]) / temperature);
    std::vector<int> counts(n, 0);
    const int draws = 40000;
    for (int d = 0; d < draws; ++d) ++counts[static_cast<std::size_t>(s.sample(logits))];
    CHECK(counts[500] == 0);
    for (const std::size_t i : likely) {
      CAPTURE(i);
      const double expected = want[i] / total;
      // Within four standard deviations of the binomial count.
      CHECK(std::abs(counts[i] / double(draws) - expected) <= 4 * std::sqrt(expected * (1 - expected) / draws));
    }
    double rest = 0;
    int rest_count = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (std::find(likely.begin(), likely.end(), i) != likely.end()) continue;
      rest += want[i] / total;
      rest_count += counts[i];
    }
    CHECK(std::abs(rest_count / double(draws) - rest) <= 4 * std::sqrt(rest * (1 - rest) / draws) + 1e-4);
  }
}

TEST_CASE("top_k, top_p and min_p keep only the head of the distribution") {
  // Probabilities about 0.6, 0.3, 0.1 and a long tail of tiny ones.
  std::vector<float> logits(500, -20.0f);
  logits[10] = std::log(0.6f);
  logits[20] = std::log(0.3f);
  logits[30] = std::log(0.1f);
  auto drawn = [&](sampling_params p) {
    p.seed = 1;
    sampler s(p, 500);
    std::set<token_id> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(s.sample(logits));
    return seen;
  };
  sampling_params k;
  k.top_k = 2;
  CHECK(drawn(k) == std::set<token_id>{10, 20});
  sampling_params p5;
  p5.top_p = 0.5f;
  CHECK(drawn(p5) == std::set<token_id>{10});
  sampling_params p8;
  p8.top_p = 0.8f;
  CHECK(drawn(p8) == std::set<token_id>{10, 20});
  sampling_params m;
  m.min_p = 0.4f;  // keeps tokens with at least 0.24 probability
  CHECK(drawn(m) == std::set<token_id>{10, 20});
  sampling_params hot;  // no truncation: a high temperature reaches the tail
  hot.temperature = 5.0f;
  CHECK(drawn(hot).size() > 100);
}

TEST_CASE("penalties lower tokens already seen") {
  std::vector<float> logits = {1.0f, 0.9f, 0.0f};
  sampling_params p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  sampler presence(p, 3);
  CHECK(presence.sample(logits) == 0);
  presence.accept(0);
  CHECK(presence.sample(logits) == 1);

  sampling_params f;
  f.temperature = 0.0f;
  f.frequency_penalty = 0.06f;
  sampler frequency(f, 3);
  frequency.accept(0);
  CHECK(frequency.sample(logits) == 0);  // 1.0 - 0.06 > 0.9
  frequency.accept(0);
  CHECK(frequency.sample(logits) == 1);  // 1.0 - 0.12 < 0.9

  sampling_params r;
  r.temperature = 0.0f;
  r.repetition_penalty = 1.5f;
  sampler repetition(r, 3);
  const token_id prompt[] = {0};
  repetition.set_prompt(prompt);
  CHECK(repetition.sample(logits) == 1);  // 1.0 / 1.5 < 0.9
}

TEST_CASE("parameter validation names the parameter") {
  sampling_params p;
  p.top_p = 0.0f;
  CHECK(p.validate(10).err().message().find("top_p") == 0);
  p = {};
  p.temperature = -1.0f;
  CHECK(p.validate(10).err().message().find("temperature") == 0);
  p = {};
  p.logit_bias = {{10, 1.0f}};
  CHECK(p.validate(10).err().message().find("logit_bias") == 0);
  p = {};
  CHECK(p.validate(10).ok());
}

TEST_CASE("log-probabilities are normalised and ordered") {
  const auto logits = ramp(100);
  const auto top = sampler::top_logprobs(logits, 100);
  REQUIRE(top.size() == 100);
  double total = 0.0;
  for (const auto& t : top) total += std::exp(static_cast<double>(t.logprob));
  CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(top[0].token == 99);
  CHECK(top[1].token == 98);
  CHECK(sampler::logprob_of(logits, 99).logprob == doctest::Approx(top[0].logprob));
}

TEST_CASE("stop strings are found across pieces and never emitted") {
  stop_matcher m({"</s>", "\nUser:"});
  std::string out;
  auto feed = [&](std::string_view piece) {
    auto st = m.push(piece);
    out += st.emit;
    return st.stopped;
  };
  CHECK_FALSE(feed("Hello"));
  CHECK_FALSE(feed(" world<"));
  CHECK(out == "Hello world");  // "<" may start "</s>": held back
  CHECK_FALSE(feed("/"));
  CHECK(feed("s> more"));
  CHECK(out == "Hello world");

  stop_matcher n({"\nUser:"});
  std::string text;
  for (std::string_view piece : {"a\n", "Us", "ed"}) text += n.push(piece).emit;
  text += n.flush();
  CHECK(text == "a\nUsed");

  stop_matcher none({});
  CHECK(none.push("abc").emit == "abc");
}
