// Tokenizer throughput: encoding and decoding 1 MB of English text with a model's vocabulary
// (the test model's by default), in MB/s, best of five runs.
//
// Usage: tokenizer_bench [--model PATH] [--text FILE]
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/engine/gguf.hpp"
#include "chatai/engine/vocabulary.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

constexpr std::string_view common_words[] = {
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "his", "on", "be",
    "at", "by", "had", "are", "but", "from", "or", "have", "an", "they", "which", "one", "were", "her",
    "all", "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "more",
    "no", "if", "out", "so", "said", "what", "up", "its", "about", "into", "than", "them", "can", "only",
    "other", "new", "some", "could", "time", "these", "two", "may", "then", "do", "first", "any", "my",
    "now", "such", "like", "our", "over", "man", "me", "even", "most", "made", "after", "also", "did",
    "many", "before", "must", "through", "back", "years", "where", "much", "your", "way", "well", "down",
    "should", "because", "each", "just", "those", "people", "how", "too", "little", "state", "good",
    "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here", "between",
    "both", "life", "being", "under", "never", "day", "same", "another", "know", "while", "last",
    "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right",
    "used", "take", "three", "himself", "few", "house", "use", "during", "without", "again", "place",
    "American", "around", "however", "home", "small", "found", "thought", "went", "say", "part",
    "once", "general", "high", "upon", "school", "every", "don't", "does", "got", "united", "left",
    "number", "course", "war", "until", "always", "away", "something", "fact", "though", "water",
    "less", "public", "put", "think", "almost", "hand", "enough", "far", "took", "head", "yet",
    "government", "system", "better", "set", "told", "nothing", "night", "end", "why", "called",
    "didn't", "eyes", "find", "going", "look", "asked", "later", "knew", "point", "next", "program",
    "city", "business", "give", "group", "toward", "young", "let", "room", "president", "side",
    "social", "given", "present", "several", "order", "national", "possible", "rather", "second",
    "face", "per", "among", "form", "important", "often", "things", "looked", "early", "white", "case",
    "John", "become", "large", "big", "need", "four", "within", "felt", "along", "children", "saw",
    "best", "church", "ever", "least", "power", "development", "light", "thing", "seemed", "family",
    "interest", "want", "members", "mind", "country", "area", "others", "done", "turned", "although",
};

// Sentences of common English words with capitals, punctuation, numbers and paragraphs.
std::string english_text(std::size_t size) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::size_t> word(0, std::size(common_words) - 1);
  std::uniform_int_distribution<int> percent(0, 99);
  std::string text;
  text.reserve(size + 256);
  while (text.size() < size) {
    const int length = 6 + percent(rng) % 18;
    for (int i = 0; i < length; ++i) {
      std::string w(common_words[word(rng)]);
      if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
      if (percent(rng) < 3) w = std::to_string(percent(rng) * 37 + 1900);
      text += w;
      if (i + 1 < length) text += percent(rng) < 8 ? ", " : " ";
    }
    text += percent(rng) < 10 ? "?" : ".";
    text += percent(rng) < 15 ? "\n\n" : " ";
  }
  text.resize(size);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = CHATAI_BENCH_MODEL;
  std::string text_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--model") {
      model_path = argv[i + 1];
    } else if (flag == "--text") {
      text_path = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: tokenizer_bench [--model PATH] [--text FILE]\n");
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "tokenizer_bench: no model; pass --model PATH\n");
    return 2;
  }

  auto start = clock_type::now();
  auto file = gguf_file::open(model_path);
  if (!file) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", file.err().message().c_str());
    return 1;
  }
  auto vocab = vocabulary::from_gguf(*file);
  if (!vocab) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", vocab.err().message().c_str());
    return 1;
  }
  const double load_seconds = seconds_since(start);

  std::string text;
  if (text_path.empty()) {
    text = english_text(1 << 20);
  } else {
    std::ifstream in(text_path, std::ios::binary);
    std::ostringstream all;
    all << in.rdbuf();
    text = all.str();
  }
  const double megabytes = static_cast<double>(text.size()) / (1 << 20);

  double best_encode = 0, best_decode = 0;
  std::vector<token_id> ids;
  for (int run = 0; run < 5; ++run) {
    start = clock_type::now();
    ids = vocab->encode(text);
    best_encode = std::max(best_encode, megabytes / seconds_since(start));
    start = clock_type::now();
    auto decoded = vocab->decode(ids);
    best_decode = std::max(best_decode, megabytes / seconds_since(start));
    if (!decoded || *decoded != text) {
      std::fprintf(stderr, "tokenizer_bench: decoding did not give the text back\n");
      return 1;
    }
  }
  std::printf("vocabulary: %s (%d tokens), loaded in %.0f ms\n", model_path.c_str(), vocab->size(),
              load_seconds * 1000);
  std::printf("text: %.2f MB, %zu tokens (%.2f bytes per token)\n", megabytes, ids.size(),
              static_cast<double>(text.size()) / static_cast<double>(ids.size()));
  std::printf("encode: %.1f MB/s\ndecode: %.1f MB/s\n", best_encode, best_decode);
  return 0;
}
