// Cost of grammar-constrained decoding per token: random walks through a realistic JSON schema
// with the test model's vocabulary, timing mask() and allows(), with the mask cache's hit rate
// and the time to build the token table.
//
// Usage: grammar_bench [--model PATH] [--walks N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/grammar.hpp"
#include "chatai/engine/vocabulary.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

using clock_type = std::chrono::steady_clock;

double microseconds_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
}

// A nested object with strings, an enum, an array of objects and numbers.
constexpr std::string_view schema_text = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 60},
    "kind": {"enum": ["person", "company", "other"]},
    "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 130},
    "score": {"type": "number"},
    "summary": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 5},
    "address": {
      "type": "object",
      "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
      "required": ["city"]
    },
    "orders": {
      "type": "array", "minItems": 1, "maxItems": 4,
      "items": {
        "type": "object",
        "properties": {
          "id": {"type": "string", "format": "uuid"},
          "amount": {"type": "number", "minimum": 0},
          "status": {"enum": ["open", "paid", "shipped"]},
          "placed": {"type": "string", "format": "date-time"},
          "note": {"type": "string"}
        },
        "required": ["id", "amount", "status"]
      }
    }
  },
  "required": ["name", "kind", "age", "orders"]
})";

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  return values[i];
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (const double v : values) sum += v;
  return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = CHATAI_BENCH_MODEL;
  int walks = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--model") {
      model_path = argv[i + 1];
    } else if (flag == "--walks") {
      walks = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "usage: grammar_bench [--model PATH] [--walks N]\n");
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "grammar_bench: no model; pass --model PATH\n");
    return 2;
  }
  auto file = gguf_file::open(model_path);
  if (!file) {
    std::fprintf(stderr, "grammar_bench: %s\n", file.err().message().c_str());
    return 1;
  }
  auto vocab = vocabulary::from_gguf(*file);
  if (!vocab) {
    std::fprintf(stderr, "grammar_bench: %s\n", vocab.err().message().c_str());
    return 1;
  }

  auto start = clock_type::now();
  const auto table = std::make_shared<const token_table>(*vocab);
  const double table_us = microseconds_since(start);

  auto schema = json::parse(schema_text);
  if (!schema) {
    std::fprintf(stderr, "grammar_bench: %s\n", schema.err().message().c_str());
    return 1;
  }
  start = clock_type::now();
  grammar_builder builder;
  auto root = builder.json_schema(*schema);
  if (!root) {
    std::fprintf(stderr, "grammar_bench: %s\n", root.err().message().c_str());
    return 1;
  }
  const auto g = builder.build(*root);
  const double compile_us = microseconds_since(start);

  std::vector<double> mask_us, allows_us, first_mask_us;
  std::vector<float> logits(static_cast<std::size_t>(table->size()));
  std::vector<token_id> allowed;
  std::uint64_t masks = 0, hits = 0, trie_nodes = 0, tokens = 0, finished = 0;
  std::size_t text_bytes = 0;
  for (int walk = 0; walk < walks; ++walk) {
    grammar_matcher matcher(g, table);
    std::mt19937_64 rng(static_cast<std::uint64_t>(walk) + 1);
    for (int step = 0; step < 2000; ++step) {
      if (matcher.complete() && (!matcher.can_continue() || rng() % 2 == 0)) {
        ++finished;
        break;
      }
      std::fill(logits.begin(), logits.end(), 0.0f);
      start = clock_type::now();
      matcher.mask(logits);
      const double us = microseconds_since(start);
      mask_us.push_back(us);
      if (step == 0) first_mask_us.push_back(us);
      allowed.clear();
      for (std::size_t i = 0; i < logits.size(); ++i) {
        if (logits[i] == 0.0f && !table->is_end(static_cast<token_id>(i))) allowed.push_back(static_cast<token_id>(i));
      }
      if (allowed.empty()) {
        std::fprintf(stderr, "grammar_bench: no token allowed\n");
        return 1;
      }
      const token_id t = allowed[rng() % allowed.size()];
      // allows() as a sampler that checks its pick first would call it.
      const token_id probe = static_cast<token_id>(rng() % static_cast<std::uint64_t>(table->size()));
      start = clock_type::now();
      const bool ok = matcher.allows(t);
      const bool probe_ok = matcher.allows(probe);
      allows_us.push_back(microseconds_since(start) / 2);
      if (!ok || (probe_ok != (logits[static_cast<std::size_t>(probe)] == 0.0f))) {
        std::fprintf(stderr, "grammar_bench: allows() disagrees with mask()\n");
        return 1;
      }
      if (!matcher.accept(t)) {
        std::fprintf(stderr, "grammar_bench: accept() refused an allowed token\n");
        return 1;
      }
      text_bytes += table->bytes(t).size();
      ++tokens;
    }
    const auto stats = matcher.stats();
    masks += stats.masks;
    hits += stats.cache_hits;
    trie_nodes += stats.trie_nodes;
  }

  std::printf("vocabulary: %d tokens; token table built in %.2f ms\n", table->size(), table_us / 1000);
  std::printf("schema compiled and built in %.2f ms (%zu rules)\n", compile_us / 1000, g->size());
  std::printf("walks: %d (%llu finished), %llu tokens, %.1f bytes per token\n", walks, static_cast<unsigned long long>(finished),
              static_cast<unsigned long long>(tokens), static_cast<double>(text_bytes) / static_cast<double>(std::max<std::uint64_t>(tokens, 1)));
  std::printf("mask():   mean %.1f us, p50 %.1f us, p99 %.1f us, max %.1f us per token; first of a walk %.1f us\n", mean(mask_us),
              percentile(mask_us, 0.5), percentile(mask_us, 0.99), percentile(mask_us, 1.0), mean(first_mask_us));
  std::printf("allows(): mean %.2f us, p50 %.2f us, p99 %.2f us\n", mean(allows_us), percentile(allows_us, 0.5), percentile(allows_us, 0.99));
  std::printf("mask cache: %.1f%% hits; %.0f trie nodes visited per computed mask\n",
              100.0 * static_cast<double>(hits) / static_cast<double>(std::max<std::uint64_t>(masks, 1)),
              static_cast<double>(trie_nodes) / static_cast<double>(std::max<std::uint64_t>(masks - hits, 1)));
  return 0;
}
