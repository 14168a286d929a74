// The vocabulary: building the indexes, splitting out special tokens, encoding and decoding.
#include "chatai/engine/vocabulary.hpp"

#include <algorithm>
#include <array>

#include "unicode.hpp"
#include "unicode_split.hpp"
#include "vocabulary_internal.hpp"

namespace chatai::engine {

namespace {

// SentencePiece's stand-in for a space: U+2581 LOWER ONE EIGHTH BLOCK.
constexpr std::string_view spm_space = "\xE2\x96\x81";

struct pre_tokenizer_name {
  std::string_view name;
  pre_tokenizer kind;
};

constexpr pre_tokenizer_name pre_tokenizer_names[] = {
    {"default", pre_tokenizer::standard},
    {"gpt-2", pre_tokenizer::gpt2},
    {"phi-2", pre_tokenizer::gpt2},
    {"mpt", pre_tokenizer::gpt2},
    {"olmo", pre_tokenizer::gpt2},
    {"jais", pre_tokenizer::gpt2},
    {"roberta-bpe", pre_tokenizer::gpt2},
    {"gigachat", pre_tokenizer::gpt2},
    {"jina-es", pre_tokenizer::gpt2},
    {"jina-de", pre_tokenizer::gpt2},
    {"jina-v1-en", pre_tokenizer::gpt2},
    {"jina-v2-es", pre_tokenizer::gpt2},
    {"jina-v2-de", pre_tokenizer::gpt2},
    {"jina-v2-code", pre_tokenizer::gpt2},
    {"llama3", pre_tokenizer::llama3},
    {"llama-v3", pre_tokenizer::llama3},
    {"llama-bpe", pre_tokenizer::llama3},
    {"falcon3", pre_tokenizer::llama3},
    {"dbrx", pre_tokenizer::llama3},
    {"smaug-bpe", pre_tokenizer::llama3},
    {"qwen2", pre_tokenizer::qwen2},
    {"deepseek-r1-qwen", pre_tokenizer::qwen2},
    {"stablelm2", pre_tokenizer::qwen2},
    {"megrez", pre_tokenizer::qwen2},
    {"deepseek-llm", pre_tokenizer::deepseek_llm},
    {"deepseek-coder", pre_tokenizer::deepseek_coder},
    {"falcon", pre_tokenizer::falcon},
    {"starcoder", pre_tokenizer::starcoder},
    {"refact", pre_tokenizer::starcoder},
    {"smollm", pre_tokenizer::starcoder},
    {"command-r", pre_tokenizer::starcoder},
    {"codeshell", pre_tokenizer::starcoder},
    {"exaone", pre_tokenizer::starcoder},
    {"minerva-7b", pre_tokenizer::starcoder},
};

// The byte a SentencePiece byte token stands for ("<0x0A>" is 10), or -1.
int byte_of_token_text(std::string_view text) {
  const auto digit = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>') return -1;
  const int high = digit(text[3]), low = digit(text[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

bool is_special_type(token_type type) {
  return type == token_type::control || type == token_type::user_defined || type == token_type::unknown;
}

// Text or a special token, as the special-token split leaves the input.
struct fragment {
  token_id token;  // no_token for text
  std::size_t begin;
  std::size_t end;
};

}  // namespace

result<pre_tokenizer> pre_tokenizer_from_name(std::string_view name) {
  if (name.empty()) return pre_tokenizer::standard;
  for (const auto& entry : pre_tokenizer_names) {
    if (entry.name == name) return entry.kind;
  }
  return error(errc::unsupported, "unknown pre-tokenizer \"" + std::string(name) + "\"");
}

std::vector<std::string> pre_tokenize(pre_tokenizer pre, std::string_view text) {
  const std::string sanitized = unicode::sanitize_utf8(text);
  unicode::split_scratch buffers;
  std::vector<unicode::byte_range> ranges;
  unicode::split_words(sanitized, pre, buffers, ranges);
  std::vector<std::string> words;
  words.reserve(ranges.size());
  for (const auto& [begin, end] : ranges) words.emplace_back(sanitized, begin, end - begin);
  return words;
}

struct vocabulary::impl {
  tokenizer_model model = tokenizer_model::bpe;
  pre_tokenizer pre = pre_tokenizer::standard;
  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<token_type> types;
  detail::token_index index;  // views into `texts`
  token_id bos = no_token, eos = no_token, eot = no_token, unknown = no_token, padding = no_token;
  bool add_bos = false, add_eos = false, add_space_prefix = false;
  // User-defined, control and unknown tokens, longest text first: the order they split the
  // input in.
  std::vector<token_id> special_tokens;
  // What each token decodes to: pieces[piece_offsets[id], piece_offsets[id + 1]).
  std::string pieces;
  std::vector<std::size_t> piece_offsets;
  detail::bpe_tokenizer bpe;
  detail::spm_tokenizer spm;

  bool valid(token_id id) const noexcept { return id >= 0 && static_cast<std::size_t>(id) < texts.size(); }
  std::string_view piece(token_id id) const noexcept {
    const auto i = static_cast<std::size_t>(id);
    return std::string_view(pieces).substr(piece_offsets[i], piece_offsets[i + 1] - piece_offsets[i]);
  }
  token_id find(std::string_view text) const noexcept {
    const auto it = index.find(text);
    return it == index.end() ? no_token : it->second;
  }

  std::vector<fragment> split_special(std::string_view text, bool parse_special) const;
  void encode_bpe(std::string_view text, std::vector<token_id>& out) const;
  void build_pieces();
};

std::vector<fragment> vocabulary::impl::split_special(std::string_view text, bool parse_special) const {
  std::vector<fragment> fragments;
  if (!text.empty()) fragments.push_back({no_token, 0, text.size()});
  std::vector<fragment> next;
  for (const token_id id : special_tokens) {
    if (!parse_special && types[static_cast<std::size_t>(id)] != token_type::user_defined) continue;
    const std::string_view special = texts[static_cast<std::size_t>(id)];
    if (text.find(special) == std::string_view::npos) continue;
    next.clear();
    for (const fragment& f : fragments) {
      if (f.token != no_token) {
        next.push_back(f);
        continue;
      }
      const std::string_view stretch = text.substr(0, f.end);
      std::size_t pos = f.begin;
      for (std::size_t found; (found = stretch.find(special, pos)) != std::string_view::npos;) {
        if (found > pos) next.push_back({no_token, pos, found});
        next.push_back({id, found, found + special.size()});
        pos = found + special.size();
      }
      if (pos < f.end) next.push_back({no_token, pos, f.end});
    }
    fragments.swap(next);
  }
  return fragments;
}

void vocabulary::impl::encode_bpe(std::string_view text, std::vector<token_id>& out) const {
  std::string sanitized;
  if (!unicode::is_valid_utf8(text)) {
    sanitized = unicode::sanitize_utf8(text);
    text = sanitized;
  }
  unicode::split_scratch split_buffers;
  std::vector<unicode::byte_range> words;
  unicode::split_words(text, pre, split_buffers, words);
  detail::bpe_tokenizer::scratch merge_buffers;
  // Words repeat: a short word seen before copies the tokens it gave then, which `out` holds.
  constexpr std::size_t cached_word_size = 32, cached_word_count = 1 << 16;
  std::unordered_map<std::string_view, std::pair<std::size_t, std::size_t>> seen;
  for (const auto& [begin, end] : words) {
    const std::string_view word = text.substr(begin, end - begin);
    const bool cacheable = word.size() <= cached_word_size;
    if (cacheable) {
      if (const auto it = seen.find(word); it != seen.end()) {
        const auto [first, count] = it->second;
        for (std::size_t i = 0; i < count; ++i) out.push_back(out[first + i]);
        continue;
      }
    }
    const std::size_t first = out.size();
    bpe.encode_word(word, merge_buffers, out);
    if (cacheable && seen.size() < cached_word_count) seen.emplace(word, std::pair(first, out.size() - first));
  }
}

void vocabulary::impl::build_pieces() {
  piece_offsets.reserve(texts.size() + 1);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    piece_offsets.push_back(pieces.size());
    const std::string_view text = texts[i];
    const token_type type = types[i];
    if (type == token_type::unused || type == token_type::undefined) continue;
    if (is_special_type(type)) {
      pieces += text;
    } else if (model == tokenizer_model::spm && type == token_type::byte) {
      if (const int byte = byte_of_token_text(text); byte >= 0) pieces += static_cast<char>(byte);
    } else if (model == tokenizer_model::spm) {
      for (std::size_t pos = 0; pos < text.size();) {
        if (text.substr(pos).starts_with(spm_space)) {
          pieces += ' ';
          pos += spm_space.size();
        } else {
          pieces += text[pos++];
        }
      }
    } else {
      // BPE texts are spelt in GPT-2's byte characters; anything else passes through.
      for (std::size_t pos = 0; pos < text.size();) {
        const int length = unicode::sequence_length(text.substr(pos));
        if (length <= 0) {
          pieces += text[pos++];
          continue;
        }
        const int byte = unicode::char_byte(unicode::decode_sequence(text.substr(pos), length));
        if (byte >= 0) {
          pieces += static_cast<char>(byte);
        } else {
          pieces += text.substr(pos, static_cast<std::size_t>(length));
        }
        pos += static_cast<std::size_t>(length);
      }
    }
  }
  piece_offsets.push_back(pieces.size());
}

vocabulary::vocabulary(std::shared_ptr<const impl> state) : impl_(std::move(state)) {}

result<vocabulary> vocabulary::create(vocabulary_spec spec) {
  const std::size_t n = spec.tokens.size();
  if (n == 0) return error(errc::invalid_argument, "the vocabulary has no tokens");
  if (n > static_cast<std::size_t>(INT32_MAX)) return error(errc::out_of_range, "too many tokens");
  if (!spec.scores.empty() && spec.scores.size() != n)
    return error(errc::invalid_argument, std::to_string(spec.scores.size()) + " scores for " + std::to_string(n) + " tokens");
  if (!spec.types.empty() && spec.types.size() != n)
    return error(errc::invalid_argument,
                 std::to_string(spec.types.size()) + " token types for " + std::to_string(n) + " tokens");

  auto state = std::make_shared<impl>();
  impl& v = *state;
  v.model = spec.model;
  v.pre = spec.pre;
  v.texts = std::move(spec.tokens);
  v.scores = spec.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(spec.scores);
  v.types = spec.types.empty() ? std::vector<token_type>(n, token_type::normal) : std::move(spec.types);
  v.add_bos = spec.add_bos;
  v.add_eos = spec.add_eos;
  v.add_space_prefix = spec.add_space_prefix;
  const auto special_id = [&](token_id id) { return v.valid(id) ? id : no_token; };
  v.bos = special_id(spec.bos);
  v.eos = special_id(spec.eos);
  v.eot = special_id(spec.eot);
  v.unknown = special_id(spec.unknown);
  v.padding = special_id(spec.padding);

  // A text that appears twice names its last token, as in llama.cpp.
  v.index.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!v.texts[i].empty()) v.index[v.texts[i]] = static_cast<token_id>(i);
  }

  for (std::size_t i = 0; i < n; ++i) {
    if (is_special_type(v.types[i]) && !v.texts[i].empty()) v.special_tokens.push_back(static_cast<token_id>(i));
  }
  std::stable_sort(v.special_tokens.begin(), v.special_tokens.end(), [&](token_id a, token_id b) {
    return v.texts[static_cast<std::size_t>(a)].size() > v.texts[static_cast<std::size_t>(b)].size();
  });

  std::array<token_id, 256> byte_tokens{};
  if (v.model == tokenizer_model::bpe) {
    std::string character;
    for (unsigned b = 0; b < 256; ++b) {
      character.clear();
      unicode::append_utf8(character, unicode::byte_char(static_cast<std::uint8_t>(b)));
      byte_tokens[b] = v.find(character);
    }
    detail::bpe_merge_table merges(spec.merges.size());
    std::string joined;
    for (std::size_t rank = 0; rank < spec.merges.size(); ++rank) {
      const std::string_view merge = spec.merges[rank];
      const std::size_t space = merge.find(' ', 1);
      if (space == std::string_view::npos) continue;
      const std::string_view left = merge.substr(0, space), right = merge.substr(space + 1);
      joined.assign(left).append(right);
      const token_id left_id = v.find(left), right_id = v.find(right), merged = v.find(joined);
      if (left_id == no_token || right_id == no_token || merged == no_token) continue;
      merges.insert(left_id, right_id, {static_cast<std::int32_t>(rank), merged});
    }
    v.bpe = detail::bpe_tokenizer(byte_tokens, std::move(merges), spec.ignore_merges ? &v.index : nullptr);
  } else {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (unsigned b = 0; b < 256; ++b) {
      const std::string name{'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      token_id id = v.find(name);
      if (id == no_token) id = v.find(std::string(1, static_cast<char>(b)));
      byte_tokens[b] = id == no_token ? v.unknown : id;
    }
    v.spm = detail::spm_tokenizer(&v.index, &v.scores, byte_tokens);
  }
  v.build_pieces();
  return vocabulary(std::move(state));
}

tokenizer_model vocabulary::model() const noexcept { return impl_->model; }
pre_tokenizer vocabulary::pre() const noexcept { return impl_->pre; }
std::int32_t vocabulary::size() const noexcept { return static_cast<std::int32_t>(impl_->texts.size()); }
token_id vocabulary::bos() const noexcept { return impl_->bos; }
token_id vocabulary::eos() const noexcept { return impl_->eos; }
token_id vocabulary::eot() const noexcept { return impl_->eot; }
token_id vocabulary::unknown() const noexcept { return impl_->unknown; }
token_id vocabulary::padding() const noexcept { return impl_->padding; }
bool vocabulary::add_bos() const noexcept { return impl_->add_bos; }
bool vocabulary::add_eos() const noexcept { return impl_->add_eos; }
bool vocabulary::add_space_prefix() const noexcept { return impl_->add_space_prefix; }

bool vocabulary::is_end_of_generation(token_id id) const noexcept {
  return id != no_token && (id == impl_->eos || id == impl_->eot);
}

std::string_view vocabulary::text(token_id id) const noexcept {
  return impl_->valid(id) ? std::string_view(impl_->texts[static_cast<std::size_t>(id)]) : std::string_view();
}

float vocabulary::score(token_id id) const noexcept {
  return impl_->valid(id) ? impl_->scores[static_cast<std::size_t>(id)] : 0.0f;
}

token_type vocabulary::type(token_id id) const noexcept {
  return impl_->valid(id) ? impl_->types[static_cast<std::size_t>(id)] : token_type::undefined;
}

token_id vocabulary::find(std::string_view text) const noexcept { return impl_->find(text); }

std::vector<token_id> vocabulary::encode(std::string_view text, const encode_options& options) const {
  const impl& v = *impl_;
  std::vector<token_id> out;
  out.reserve(text.size() / 3 + 2);
  if (options.add_bos && v.bos != no_token) out.push_back(v.bos);
  bool after_special = true;  // SPM puts a space before text that starts the input
  std::string escaped;
  for (const fragment& f : v.split_special(text, options.parse_special)) {
    if (f.token != no_token) {
      out.push_back(f.token);
      after_special = true;
      continue;
    }
    const std::string_view stretch = text.substr(f.begin, f.end - f.begin);
    if (v.model == tokenizer_model::bpe) {
      v.encode_bpe(stretch, out);
      continue;
    }
    escaped.clear();
    if (v.add_space_prefix && after_special) escaped += spm_space;
    for (const char c : stretch) {
      if (c == ' ') {
        escaped += spm_space;
      } else {
        escaped += c;
      }
    }
    v.spm.encode(escaped, out);
    after_special = false;
  }
  if (options.add_eos && v.eos != no_token) out.push_back(v.eos);
  return out;
}

std::string_view vocabulary::token_to_piece(token_id id, bool render_special) const noexcept {
  const impl& v = *impl_;
  if (!v.valid(id)) return {};
  const token_type type = v.types[static_cast<std::size_t>(id)];
  if (!render_special && (type == token_type::control || type == token_type::unknown)) return {};
  return v.piece(id);
}

result<std::string> vocabulary::decode(std::span<const token_id> ids, bool render_special) const {
  const impl& v = *impl_;
  std::string out;
  bool drop_space = v.model == tokenizer_model::spm && v.add_space_prefix;
  for (const token_id id : ids) {
    if (!v.valid(id))
      return error(errc::out_of_range, "token " + std::to_string(id) + " is outside the vocabulary of " +
                                           std::to_string(v.texts.size()));
    std::string_view piece = token_to_piece(id, render_special);
    if (is_special_type(v.types[static_cast<std::size_t>(id)])) {
      out += piece;
      drop_space = v.model == tokenizer_model::spm && v.add_space_prefix;
      continue;
    }
    if (drop_space && !piece.empty()) {
      if (piece.starts_with(' ')) piece.remove_prefix(1);
      drop_space = false;
    }
    out += piece;
  }
  return out;
}

streaming_decoder::streaming_decoder(vocabulary vocab, bool render_special)
    : vocab_(std::move(vocab)), render_special_(render_special) {}

std::string streaming_decoder::push(token_id id) {
  pending_ += vocab_.token_to_piece(id, render_special_);
  std::string out;
  std::size_t pos = 0;
  while (pos < pending_.size()) {
    const int length = unicode::sequence_length(std::string_view(pending_).substr(pos));
    if (length == 0) break;  // a later token may complete it
    if (length < 0) {
      unicode::append_utf8(out, unicode::replacement_character);
      ++pos;
      continue;
    }
    out.append(pending_, pos, static_cast<std::size_t>(length));
    pos += static_cast<std::size_t>(length);
  }
  pending_.erase(0, pos);
  return out;
}

std::string streaming_decoder::finish() {
  std::string out;
  if (!pending_.empty()) unicode::append_utf8(out, unicode::replacement_character);
  pending_.clear();
  return out;
}

}  // namespace chatai::engine
