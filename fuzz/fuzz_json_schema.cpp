// libFuzzer target: JSON schemas from arbitrary bytes (a request's response_format or tool
// parameters), compiled to grammars; what compiles is walked with the bytes after the first
// NUL, a mask computed at each step over a small byte-level vocabulary. Seeds: fuzz/corpus/schema.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/engine/grammar.hpp"

namespace {

// GPT-2's byte-to-character map, for BPE token texts.
std::string byte_token(unsigned char b) {
  unsigned cp = b;
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
  if (!printable) {
    unsigned n = 0;
    for (unsigned x = 0; x < b; ++x) {
      const bool p = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

std::shared_ptr<const chatai::engine::token_table> make_tokens() {
  chatai::engine::vocabulary_spec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(byte_token(static_cast<unsigned char>(b)));
  for (const char* t : {"{\"", "\":", "\",", "\"}", "true", "false", "null", "Ġ\"", "12", "ab"}) spec.tokens.emplace_back(t);
  spec.tokens.emplace_back("<|end|>");
  spec.types.assign(spec.tokens.size(), chatai::engine::token_type::normal);
  spec.types.back() = chatai::engine::token_type::control;
  spec.eos = static_cast<chatai::engine::token_id>(spec.tokens.size() - 1);
  auto vocab = chatai::engine::vocabulary::create(std::move(spec));
  if (!vocab) std::abort();
  return std::make_shared<const chatai::engine::token_table>(*vocab);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto tokens = make_tokens();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto split = input.find('\0');
  const auto schema_text = input.substr(0, split);
  const auto walk = split == std::string_view::npos ? std::string_view{} : input.substr(split + 1);
  auto doc = chatai::json::parse(schema_text);
  if (!doc) return 0;
  chatai::engine::grammar_builder builder;
  auto rule = builder.json_schema(*doc);
  if (!rule) {
    if (rule.err().message().rfind("schema", 0) != 0) std::abort();  // errors name the schema path
    return 0;
  }
  auto g = builder.build(*rule);
  chatai::engine::grammar_matcher m(g, tokens);
  std::vector<float> logits(static_cast<std::size_t>(tokens->size()), 0.0f);
  for (std::size_t i = 0; i < walk.size() && i < 512; ++i) {
    m.mask(logits);
    const auto byte = static_cast<unsigned char>(walk[i]);
    // The mask and allows() agree on the byte's own token.
    if ((logits[byte] == 0.0f) != m.allows(static_cast<chatai::engine::token_id>(byte))) std::abort();
    if (!m.accept(static_cast<chatai::engine::token_id>(byte))) break;
    std::fill(logits.begin(), logits.end(), 0.0f);
  }
  return 0;
}
