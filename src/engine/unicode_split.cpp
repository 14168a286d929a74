// Pre-tokenizers as scanners. A family's pre-tokenizer is a list of steps; each step splits
// every chunk the previous steps left into the pieces its regular expression matches and the
// gaps between them, which stay chunks too (llama.cpp's unicode_regex_split). Where llama.cpp
// matches on a copy of the text in which non-ASCII whitespace reads as '\v', the character
// classes below leave that whitespace out.
#include "unicode_split.hpp"

#include <algorithm>
#include <iterator>

#include "unicode.hpp"

namespace chatai::engine::unicode {

namespace {

using chunk = std::pair<std::uint32_t, std::uint32_t>;  // code points [first, second)
using chunk_list = std::vector<chunk>;

struct cpt_range {
  std::uint32_t first, last;
};

template <std::size_t N>
bool in_ranges(const cpt_range (&ranges)[N], std::uint32_t cpt) {
  return std::any_of(std::begin(ranges), std::end(ranges),
                     [cpt](const cpt_range& r) { return r.first <= cpt && cpt <= r.last; });
}

std::uint32_t ascii_lower(std::uint32_t cpt) { return cpt >= 'A' && cpt <= 'Z' ? cpt + 0x20 : cpt; }

// The letters of deepseek-llm's second expression: Latin, Greek, Cyrillic, Armenian and other
// cased letters.
constexpr cpt_range deepseek_letters[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xB5, 0xB5},       {0xC0, 0xD6},       {0xD8, 0xF6},
    {0xF8, 0x1BA},      {0x1BC, 0x1BF},     {0x1C4, 0x293},     {0x295, 0x2AF},     {0x370, 0x373},
    {0x376, 0x377},     {0x37B, 0x37D},     {0x37F, 0x37F},     {0x386, 0x386},     {0x388, 0x38A},
    {0x38C, 0x38C},     {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},
    {0x531, 0x556},     {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},   {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},   {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},   {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B},   {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},   {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2102, 0x2102},   {0x2107, 0x2107},
    {0x210A, 0x2113},   {0x2115, 0x2115},   {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},
    {0x2128, 0x2128},   {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},   {0x2C7E, 0x2CE4},
    {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},   {0xA680, 0xA69B},   {0xA722, 0xA76F},
    {0xA771, 0xA787},   {0xA78B, 0xA78E},   {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},
    {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

// deepseek-llm's third expression: ASCII punctuation, symbols and letters, their full-width
// forms, curly quotes and CJK punctuation.
constexpr cpt_range deepseek_punctuation[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}, {0x2018, 0x201F}, {0x3000, 0x3002},
};

// The deepseek families' CJK expression, which also spans most scripts from U+0800 up.
constexpr cpt_range deepseek_cjk[] = {{0x4E00, 0x9FA5}, {0x800, 0x4E00}, {0xAC00, 0xD7FF}};

bool is_non_ascii_space(std::uint32_t cpt, std::uint8_t classes) { return cpt > 0x7F && (classes & whitespace); }

using predicate = bool (*)(std::uint32_t cpt, std::uint8_t classes);

bool is_line_break(std::uint32_t cpt, std::uint8_t) { return cpt == '\r' || cpt == '\n'; }
bool is_letter_class(std::uint32_t, std::uint8_t classes) { return classes & letter; }
bool is_number_class(std::uint32_t, std::uint8_t classes) { return classes & number; }
bool is_punctuation_class(std::uint32_t, std::uint8_t classes) { return classes & punctuation; }
bool is_ascii_digit(std::uint32_t cpt, std::uint8_t) { return cpt >= '0' && cpt <= '9'; }
bool is_deepseek_letter(std::uint32_t cpt, std::uint8_t classes) {
  return !is_non_ascii_space(cpt, classes) && in_ranges(deepseek_letters, cpt);
}
bool is_deepseek_punctuation(std::uint32_t cpt, std::uint8_t classes) {
  return !is_non_ascii_space(cpt, classes) && in_ranges(deepseek_punctuation, cpt);
}
bool is_deepseek_cjk(std::uint32_t cpt, std::uint8_t classes) {
  return !is_non_ascii_space(cpt, classes) && in_ranges(deepseek_cjk, cpt);
}
// [\p{P}\$\+<=>\^~\|`] and the same without the backquote.
bool is_falcon_punctuation(std::uint32_t cpt, std::uint8_t classes) {
  return (classes & punctuation) ||
         (cpt < 0x80 && std::string_view("$+<=>^~|`").find(static_cast<char>(cpt)) != std::string_view::npos);
}
bool is_standard_punctuation(std::uint32_t cpt, std::uint8_t classes) {
  return cpt != '`' && is_falcon_punctuation(cpt, classes);
}

// How many characters a match of a class takes: `one` (C), `run` (C+), `space_run` (\s?C+)
// or `three` (CCC).
enum class repeat { one, run, space_run, three };

// The text one step works on.
struct step_input {
  const std::vector<std::uint32_t>& cpts;
  const std::vector<std::uint8_t>& classes;
};

// Appends the pieces of one chunk to `out`: the caller gives each piece's end in order.
// Thread safety: not thread-safe; local to one call.
class piece_writer {
 public:
  piece_writer(chunk_list& out, std::uint32_t first) : out_(out), end_(first) {}
  void end_at(std::uint32_t end) {
    if (end > end_) out_.emplace_back(end_, end);
    end_ = end;
  }
  std::uint32_t length_to(std::uint32_t end) const { return end - end_; }

 private:
  chunk_list& out_;
  std::uint32_t end_;
};

// The matches of one class expression, found leftmost first as a regular expression search does.
void split_class(const step_input& in, chunk c, predicate matches, repeat how, chunk_list& out) {
  piece_writer pieces(out, c.first);
  const auto is = [&](std::uint32_t i) { return i < c.second && matches(in.cpts[i], in.classes[i]); };
  std::uint32_t i = c.first;
  while (i < c.second) {
    std::uint32_t body = i;  // after the optional leading space
    if (how == repeat::space_run && (in.classes[i] & whitespace) && is(i + 1)) {
      body = i + 1;
    } else if (!is(i)) {
      ++i;
      continue;
    }
    std::uint32_t end = body + 1;
    if (how == repeat::three) {
      if (!is(body + 1) || !is(body + 2)) {
        ++i;
        continue;
      }
      end = body + 3;
    } else if (how != repeat::one) {
      while (is(end)) ++end;
    }
    pieces.end_at(i);
    pieces.end_at(end);
    i = end;
  }
  pieces.end_at(c.second);
}

// \s+$: the whitespace at the end of the chunk.
void split_trailing_whitespace(const step_input& in, chunk c, chunk_list& out) {
  std::uint32_t start = c.second;
  while (start > c.first && (in.classes[start - 1] & whitespace)) --start;
  piece_writer pieces(out, c.first);
  pieces.end_at(start);
  pieces.end_at(c.second);
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (with `any_case`, the contractions in either case).
std::uint32_t contraction_length(const step_input& in, chunk c, std::uint32_t pos, bool any_case) {
  if (in.cpts[pos] != '\'' || pos + 1 >= c.second) return 0;
  const auto lower = [&](std::uint32_t i) { return any_case ? ascii_lower(in.cpts[i]) : in.cpts[i]; };
  const std::uint32_t next = lower(pos + 1);
  if (next == 's' || next == 't' || next == 'm' || next == 'd') return 2;
  if (pos + 2 >= c.second) return 0;
  const std::uint32_t after = lower(pos + 2);
  if ((next == 'r' && after == 'e') || (next == 'v' && after == 'e') || (next == 'l' && after == 'l')) return 3;
  return 0;
}

void split_gpt2(const step_input& in, chunk c, chunk_list& out) {
  piece_writer pieces(out, c.first);
  const auto classes = [&](std::uint32_t i) -> std::uint8_t { return i < c.second ? in.classes[i] : 0; };
  const auto is_other = [](std::uint8_t k) { return k != 0 && !(k & (whitespace | letter | number)); };
  std::uint32_t pos = c.first;
  while (pos < c.second) {
    if (const std::uint32_t n = contraction_length(in, c, pos, false); n > 0) {
      pos += n;
      pieces.end_at(pos);
      continue;
    }
    const bool space = in.cpts[pos] == ' ';
    const std::uint8_t lead = space ? classes(pos + 1) : classes(pos);
    if (lead & (letter | number)) {
      const std::uint8_t kind = lead & letter ? letter : number;
      pos += space;
      while (classes(pos) & kind) ++pos;
      pieces.end_at(pos);
      continue;
    }
    if (is_other(lead)) {
      pos += space;
      while (is_other(classes(pos))) ++pos;
      pieces.end_at(pos);
      continue;
    }
    std::uint32_t spaces = 0;
    while (classes(pos + spaces) & whitespace) ++spaces;
    if (spaces > 1 && pos + spaces < c.second) {
      pos += spaces - 1;  // \s+(?!\S) leaves the last space to the word that follows
    } else {
      pos += std::max<std::uint32_t>(spaces, 1);
    }
    pieces.end_at(pos);
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+ with D = max_digits (3 for Llama 3, 1 for Qwen2).
void split_llama3(const step_input& in, chunk c, std::uint32_t max_digits, chunk_list& out) {
  piece_writer pieces(out, c.first);
  const auto classes = [&](std::uint32_t i) -> std::uint8_t { return i < c.second ? in.classes[i] : 0; };
  const auto is_line_end = [&](std::uint32_t i) { return i < c.second && (in.cpts[i] == '\r' || in.cpts[i] == '\n'); };
  const auto is_other = [](std::uint8_t k) { return k != 0 && !(k & (whitespace | letter | number)); };
  std::uint32_t pos = c.first;
  while (pos < c.second) {
    const std::uint32_t cpt = in.cpts[pos];
    const std::uint8_t here = in.classes[pos];
    if (const std::uint32_t n = contraction_length(in, c, pos, true); n > 0) {
      pos += n;
      pieces.end_at(pos);
      continue;
    }
    if (!is_line_end(pos) && !(here & number) && ((here & letter) || (classes(pos + 1) & letter))) {
      ++pos;
      while (classes(pos) & letter) ++pos;
      pieces.end_at(pos);
      continue;
    }
    if (here & number) {
      while (classes(pos) & number) {
        ++pos;
        if (pieces.length_to(pos) == max_digits) pieces.end_at(pos);
      }
      pieces.end_at(pos);
      continue;
    }
    const bool space = cpt == ' ';
    if (is_other(space ? classes(pos + 1) : here) || (space && pos + 1 == c.second)) {
      pos += space;
      while (is_other(classes(pos))) ++pos;
      while (is_line_end(pos)) ++pos;
      pieces.end_at(pos);
      continue;
    }
    std::uint32_t spaces = 0;
    std::uint32_t after_line_end = 0;
    for (; classes(pos + spaces) & whitespace; ++spaces) {
      if (is_line_end(pos + spaces)) after_line_end = pos + spaces + 1;
    }
    if (after_line_end != 0) {
      pos = after_line_end;
    } else if (spaces > 1 && pos + spaces < c.second) {
      pos += spaces - 1;
    } else {
      pos += std::max<std::uint32_t>(spaces, 1);
    }
    pieces.end_at(pos);
  }
}

enum class step_kind { gpt2, llama3, qwen2, trailing_whitespace, split_class };

struct step {
  step_kind kind;
  predicate matches = nullptr;
  repeat how = repeat::one;
};

struct step_list {
  const step* steps;
  std::size_t count;
};

constexpr step gpt2_steps[] = {{step_kind::gpt2}};
constexpr step llama3_steps[] = {{step_kind::llama3}};
constexpr step qwen2_steps[] = {{step_kind::qwen2}};
constexpr step standard_steps[] = {
    {step_kind::split_class, is_standard_punctuation, repeat::run},
    {step_kind::gpt2},
    {step_kind::split_class, is_number_class, repeat::run},
    {step_kind::split_class, is_ascii_digit, repeat::three},
};
constexpr step deepseek_llm_steps[] = {
    {step_kind::split_class, is_line_break, repeat::one},
    {step_kind::split_class, is_deepseek_letter, repeat::space_run},
    {step_kind::split_class, is_deepseek_punctuation, repeat::space_run},
    {step_kind::trailing_whitespace},
    {step_kind::split_class, is_deepseek_cjk, repeat::run},
    {step_kind::split_class, is_number_class, repeat::run},
};
constexpr step deepseek_coder_steps[] = {
    {step_kind::split_class, is_line_break, repeat::one},
    {step_kind::split_class, is_letter_class, repeat::space_run},
    {step_kind::split_class, is_punctuation_class, repeat::space_run},
    {step_kind::split_class, is_deepseek_cjk, repeat::run},
    {step_kind::split_class, is_number_class, repeat::one},
};
constexpr step falcon_steps[] = {
    {step_kind::split_class, is_falcon_punctuation, repeat::run},
    {step_kind::gpt2},
    {step_kind::split_class, is_ascii_digit, repeat::three},
};
constexpr step starcoder_steps[] = {
    {step_kind::split_class, is_number_class, repeat::one},
    {step_kind::gpt2},
};

template <std::size_t N>
constexpr step_list list_of(const step (&steps)[N]) {
  return {steps, N};
}

step_list steps_of(pre_tokenizer kind) {
  switch (kind) {
    case pre_tokenizer::gpt2: return list_of(gpt2_steps);
    case pre_tokenizer::llama3: return list_of(llama3_steps);
    case pre_tokenizer::qwen2: return list_of(qwen2_steps);
    case pre_tokenizer::deepseek_llm: return list_of(deepseek_llm_steps);
    case pre_tokenizer::deepseek_coder: return list_of(deepseek_coder_steps);
    case pre_tokenizer::falcon: return list_of(falcon_steps);
    case pre_tokenizer::starcoder: return list_of(starcoder_steps);
    case pre_tokenizer::standard: break;
  }
  return list_of(standard_steps);
}

void run_step(const step_input& in, const step& s, chunk c, chunk_list& out) {
  switch (s.kind) {
    case step_kind::gpt2: split_gpt2(in, c, out); return;
    case step_kind::llama3: split_llama3(in, c, 3, out); return;
    case step_kind::qwen2: split_llama3(in, c, 1, out); return;
    case step_kind::trailing_whitespace: split_trailing_whitespace(in, c, out); return;
    case step_kind::split_class: split_class(in, c, s.matches, s.how, out); return;
  }
}

}  // namespace

void split_words(std::string_view text, pre_tokenizer kind, split_scratch& scratch, std::vector<byte_range>& words) {
  words.clear();
  scratch.cpts.clear();
  scratch.classes.clear();
  scratch.offsets.clear();
  scratch.cpts.reserve(text.size());
  scratch.classes.reserve(text.size());
  scratch.offsets.reserve(text.size() + 1);
  for (std::size_t pos = 0; pos < text.size();) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    const std::size_t length = lead < 0x80 ? 1 : static_cast<std::size_t>(sequence_length(text.substr(pos)));
    const std::uint32_t cpt = lead < 0x80 ? lead : decode_sequence(text.substr(pos), static_cast<int>(length));
    scratch.cpts.push_back(cpt);
    scratch.classes.push_back(classes_of(cpt));
    scratch.offsets.push_back(pos);
    pos += length;
  }
  scratch.offsets.push_back(text.size());
  if (scratch.cpts.empty()) return;

  const step_input in{scratch.cpts, scratch.classes};
  scratch.chunks.assign(1, {0, static_cast<std::uint32_t>(scratch.cpts.size())});
  scratch.chunks.reserve(scratch.cpts.size() / 2);
  scratch.next_chunks.reserve(scratch.cpts.size() / 2);
  const step_list steps = steps_of(kind);
  for (std::size_t s = 0; s < steps.count; ++s) {
    scratch.next_chunks.clear();
    for (const chunk& c : scratch.chunks) run_step(in, steps.steps[s], c, scratch.next_chunks);
    std::swap(scratch.chunks, scratch.next_chunks);
  }
  words.reserve(scratch.chunks.size());
  for (const chunk& c : scratch.chunks) words.emplace_back(scratch.offsets[c.first], scratch.offsets[c.second]);
}

}  // namespace chatai::engine::unicode
