// Grammars and their matcher: the rule builder, the token trie, and a byte-level pushdown
// recognizer whose parse states are interned so that byte transitions and token masks are cached.
#include "chatai/engine/grammar.hpp"

#include <algorithm>
#include <bit>
#include <limits>
#include <stdexcept>
#include <unordered_map>

#include "grammar_internal.hpp"

namespace chatai::engine {

using node_kind = detail::grammar_node::kind;

// ---- token_table ----

token_table::token_table(const vocabulary& vocab) {
  const std::int32_t n = vocab.size();
  offsets_.reserve(static_cast<std::size_t>(n) + 1);
  end_.assign(static_cast<std::size_t>(n), false);
  offsets_.push_back(0);
  for (token_id id = 0; id < n; ++id) {
    const token_type type = vocab.type(id);
    if (vocab.is_end_of_generation(id)) {
      end_[static_cast<std::size_t>(id)] = true;
      end_tokens_.push_back(id);
    } else if (type == token_type::normal || type == token_type::byte || type == token_type::user_defined) {
      bytes_ += vocab.token_to_piece(id);
    }
    offsets_.push_back(static_cast<std::uint32_t>(bytes_.size()));
  }

  std::vector<token_id> sorted;
  for (token_id id = 0; id < n; ++id) {
    if (!bytes(id).empty()) sorted.push_back(id);
  }
  std::sort(sorted.begin(), sorted.end(), [this](token_id a, token_id b) {
    const std::string_view x = bytes(a), y = bytes(b);
    return x != y ? x < y : a < b;
  });

  // Sorted texts visit the trie in pre-order: each token adds the nodes past its common prefix
  // with the one before, and a node's own tokens come right when it is made.
  std::vector<std::int32_t> path;  // path[d]: the open node of depth d + 1
  std::vector<std::int32_t> parents;
  std::string_view previous;
  for (const token_id id : sorted) {
    const std::string_view text = bytes(id);
    std::size_t common = 0;
    while (common < previous.size() && common < text.size() && previous[common] == text[common]) ++common;
    while (path.size() > common) {
      trie_[static_cast<std::size_t>(path.back())].subtree_end = static_cast<std::int32_t>(trie_.size());
      path.pop_back();
    }
    for (std::size_t k = common; k < text.size(); ++k) {
      parents.push_back(path.empty() ? -1 : path.back());
      path.push_back(static_cast<std::int32_t>(trie_.size()));
      const auto tokens_so_far = static_cast<std::int32_t>(trie_tokens_.size());
      trie_.push_back({0, tokens_so_far, tokens_so_far, static_cast<std::uint16_t>(k + 1), static_cast<std::uint16_t>(k + 1),
                       static_cast<std::uint8_t>(text[k])});
    }
    trie_node& node = trie_[static_cast<std::size_t>(path.back())];
    trie_tokens_.push_back(id);
    node.token_end = static_cast<std::int32_t>(trie_tokens_.size());
    max_token_bytes_ = std::max(max_token_bytes_, text.size());
    previous = text;
  }
  for (const std::int32_t open : path) trie_[static_cast<std::size_t>(open)].subtree_end = static_cast<std::int32_t>(trie_.size());
  // A node's children come after it, so one backward pass carries the longest lengths up.
  for (std::size_t i = trie_.size(); i-- > 0;) {
    if (trie_[i].token_begin == trie_[i].token_end) trie_[i].longest = 0;
  }
  for (std::size_t i = trie_.size(); i-- > 0;) {
    if (parents[i] >= 0) {
      auto& parent = trie_[static_cast<std::size_t>(parents[i])];
      parent.longest = std::max(parent.longest, trie_[i].longest);
    }
  }

  const std::size_t words = (static_cast<std::size_t>(n) + 63) / 64;
  at_most_bytes_.assign(max_token_bytes_ + 1, std::vector<std::uint64_t>(words, 0));
  for (token_id id = 0; id < n; ++id) {
    for (std::size_t length = bytes(id).size(); length <= max_token_bytes_; ++length)
      at_most_bytes_[length][static_cast<std::size_t>(id) / 64] |= std::uint64_t{1} << (id % 64);
  }
}

std::int32_t token_table::size() const noexcept { return static_cast<std::int32_t>(end_.size()); }

std::string_view token_table::bytes(token_id id) const noexcept {
  if (id < 0 || id >= size()) return {};
  const auto i = static_cast<std::size_t>(id);
  return std::string_view(bytes_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
}

bool token_table::is_end(token_id id) const noexcept { return id >= 0 && id < size() && end_[static_cast<std::size_t>(id)]; }

// ---- grammar_builder ----

namespace {

std::int32_t clamp_count(std::int64_t count) {
  constexpr std::int64_t largest = std::numeric_limits<std::int32_t>::max();
  return count < 0 || count >= largest ? -1 : static_cast<std::int32_t>(count);
}

}  // namespace

grammar_builder::grammar_builder() : state_(std::make_unique<state>()) {}
grammar_builder::~grammar_builder() = default;
grammar_builder::grammar_builder(grammar_builder&&) noexcept = default;
grammar_builder& grammar_builder::operator=(grammar_builder&&) noexcept = default;

grammar_builder::rule grammar_builder::literal(std::string_view text) {
  detail::grammar_node node;
  node.type = node_kind::literal;
  node.first = static_cast<std::uint32_t>(state_->text.size());
  node.count = static_cast<std::uint32_t>(text.size());
  state_->text += text;
  state_->nodes.push_back(node);
  state_->undefined_forward.push_back(false);
  return static_cast<rule>(state_->nodes.size() - 1);
}

namespace {

grammar_builder::rule add_list(grammar_builder::state& s, node_kind type, const std::vector<grammar_builder::rule>& items) {
  detail::grammar_node node;
  node.type = type;
  node.first = static_cast<std::uint32_t>(s.children.size());
  node.count = static_cast<std::uint32_t>(items.size());
  for (const auto item : items) {
    if (item < 0 || static_cast<std::size_t>(item) >= s.nodes.size()) throw std::invalid_argument("grammar_builder: unknown rule");
  }
  s.children.insert(s.children.end(), items.begin(), items.end());
  s.nodes.push_back(node);
  s.undefined_forward.push_back(false);
  return static_cast<grammar_builder::rule>(s.nodes.size() - 1);
}

}  // namespace

grammar_builder::rule grammar_builder::sequence(std::vector<rule> parts) {
  if (parts.size() == 1) return parts[0];
  return add_list(*state_, node_kind::sequence, parts);
}

grammar_builder::rule grammar_builder::choice(std::vector<rule> alternatives) {
  if (alternatives.size() == 1) return alternatives[0];
  return add_list(*state_, node_kind::choice, alternatives);
}

grammar_builder::rule grammar_builder::repeat(rule item, std::int64_t min, std::int64_t max) {
  if (item < 0 || static_cast<std::size_t>(item) >= state_->nodes.size()) throw std::invalid_argument("grammar_builder: unknown rule");
  if (min < 0 || (max >= 0 && max < min)) throw std::invalid_argument("grammar_builder: repeat needs 0 <= min <= max");
  detail::grammar_node node;
  node.type = node_kind::repeat;
  node.item = item;
  node.min = clamp_count(min);
  node.max = clamp_count(max);
  if (node.min < 0) node.min = std::numeric_limits<std::int32_t>::max() - 1;
  state_->nodes.push_back(node);
  state_->undefined_forward.push_back(false);
  return static_cast<rule>(state_->nodes.size() - 1);
}

grammar_builder::rule grammar_builder::byte_set(const std::bitset<256>& bytes) {
  detail::grammar_node node;
  node.type = node_kind::bytes;
  const auto found = std::find(state_->byte_sets.begin(), state_->byte_sets.end(), bytes);
  node.item = static_cast<std::int32_t>(found - state_->byte_sets.begin());
  if (found == state_->byte_sets.end()) state_->byte_sets.push_back(bytes);
  state_->nodes.push_back(node);
  state_->undefined_forward.push_back(false);
  return static_cast<rule>(state_->nodes.size() - 1);
}

grammar_builder::rule grammar_builder::byte_range(std::uint8_t first, std::uint8_t last) {
  std::bitset<256> bytes;
  for (unsigned b = first; b <= last; ++b) bytes.set(b);
  return byte_set(bytes);
}

grammar_builder::rule grammar_builder::forward() {
  const rule r = add_list(*state_, node_kind::sequence, {});
  state_->undefined_forward[static_cast<std::size_t>(r)] = true;
  return r;
}

void grammar_builder::define(rule forward_rule, rule body) {
  const auto i = static_cast<std::size_t>(forward_rule);
  if (forward_rule < 0 || i >= state_->nodes.size() || !state_->undefined_forward[i])
    throw std::invalid_argument("grammar_builder: define() needs a forward rule not yet defined");
  if (body < 0 || static_cast<std::size_t>(body) >= state_->nodes.size()) throw std::invalid_argument("grammar_builder: unknown rule");
  state_->undefined_forward[i] = false;
  state_->nodes[i].first = static_cast<std::uint32_t>(state_->children.size());
  state_->nodes[i].count = 1;
  state_->children.push_back(body);
}

namespace {

// Whether each rule can match the empty string, by fixpoint.
std::vector<bool> nullable_rules(const grammar_builder::state& s, const std::vector<std::int32_t>& order) {
  std::vector<bool> nullable(s.nodes.size(), false);
  for (bool changed = true; changed;) {
    changed = false;
    for (const std::int32_t id : order) {
      const auto& node = s.nodes[static_cast<std::size_t>(id)];
      bool value = false;
      switch (node.type) {
        case node_kind::bytes: value = false; break;
        case node_kind::literal: value = node.count == 0; break;
        case node_kind::sequence:
          value = true;
          for (std::uint32_t k = 0; k < node.count; ++k) value = value && nullable[static_cast<std::size_t>(s.children[node.first + k])];
          break;
        case node_kind::choice:
          for (std::uint32_t k = 0; k < node.count; ++k) value = value || nullable[static_cast<std::size_t>(s.children[node.first + k])];
          break;
        case node_kind::repeat: value = node.min == 0 || node.max == 0 || nullable[static_cast<std::size_t>(node.item)]; break;
      }
      if (value && !nullable[static_cast<std::size_t>(id)]) {
        nullable[static_cast<std::size_t>(id)] = true;
        changed = true;
      }
    }
  }
  return nullable;
}

// The rules a rule may begin with before consuming a byte.
std::vector<std::int32_t> leading_rules(const grammar_builder::state& s, const std::vector<bool>& nullable, std::int32_t id) {
  const auto& node = s.nodes[static_cast<std::size_t>(id)];
  std::vector<std::int32_t> out;
  switch (node.type) {
    case node_kind::bytes:
    case node_kind::literal: break;
    case node_kind::sequence:
      for (std::uint32_t k = 0; k < node.count; ++k) {
        const std::int32_t child = s.children[node.first + k];
        out.push_back(child);
        if (!nullable[static_cast<std::size_t>(child)]) break;
      }
      break;
    case node_kind::choice:
      for (std::uint32_t k = 0; k < node.count; ++k) out.push_back(s.children[node.first + k]);
      break;
    case node_kind::repeat:
      if (node.max != 0) out.push_back(node.item);
      break;
  }
  return out;
}

}  // namespace

std::shared_ptr<const grammar> grammar_builder::build(rule root) {
  const state& s = *state_;
  if (root < 0 || static_cast<std::size_t>(root) >= s.nodes.size()) throw std::invalid_argument("grammar_builder: unknown rule");

  // The rules reachable from the root, in the order they are found.
  std::vector<std::int32_t> remap(s.nodes.size(), -1);
  std::vector<std::int32_t> order{root};
  remap[static_cast<std::size_t>(root)] = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto id = static_cast<std::size_t>(order[i]);
    if (s.undefined_forward[id]) throw std::invalid_argument("grammar_builder: a forward rule was never defined");
    const auto& node = s.nodes[id];
    auto visit = [&](std::int32_t child) {
      if (remap[static_cast<std::size_t>(child)] < 0) {
        remap[static_cast<std::size_t>(child)] = static_cast<std::int32_t>(order.size());
        order.push_back(child);
      }
    };
    if (node.type == node_kind::sequence || node.type == node_kind::choice) {
      for (std::uint32_t k = 0; k < node.count; ++k) visit(s.children[node.first + k]);
    } else if (node.type == node_kind::repeat) {
      visit(node.item);
    }
  }

  // Left recursion: a cycle among "may begin with" edges (depth-first, without recursion).
  const std::vector<bool> nullable = nullable_rules(s, order);
  std::vector<std::uint8_t> mark(s.nodes.size(), 0);  // 1: on the path, 2: done
  for (const std::int32_t start : order) {
    if (mark[static_cast<std::size_t>(start)] != 0) continue;
    std::vector<std::pair<std::int32_t, std::vector<std::int32_t>>> path;
    path.emplace_back(start, leading_rules(s, nullable, start));
    mark[static_cast<std::size_t>(start)] = 1;
    while (!path.empty()) {
      auto& [id, next] = path.back();
      if (next.empty()) {
        mark[static_cast<std::size_t>(id)] = 2;
        path.pop_back();
        continue;
      }
      const std::int32_t child = next.back();
      next.pop_back();
      if (mark[static_cast<std::size_t>(child)] == 1) throw std::invalid_argument("grammar_builder: the grammar is left-recursive");
      if (mark[static_cast<std::size_t>(child)] == 0) {
        mark[static_cast<std::size_t>(child)] = 1;
        path.emplace_back(child, leading_rules(s, nullable, child));
      }
    }
  }

  auto g = std::make_shared<grammar>();
  std::vector<std::int32_t> set_remap(s.byte_sets.size(), -1);
  for (const std::int32_t id : order) {
    detail::grammar_node node = s.nodes[static_cast<std::size_t>(id)];
    switch (node.type) {
      case node_kind::bytes: {
        auto& mapped = set_remap[static_cast<std::size_t>(node.item)];
        if (mapped < 0) {
          mapped = static_cast<std::int32_t>(g->byte_sets_.size());
          g->byte_sets_.push_back(s.byte_sets[static_cast<std::size_t>(node.item)]);
        }
        node.item = mapped;
        break;
      }
      case node_kind::literal: {
        const std::string_view text = std::string_view(s.text).substr(node.first, node.count);
        node.first = static_cast<std::uint32_t>(g->text_.size());
        g->text_ += text;
        break;
      }
      case node_kind::sequence:
      case node_kind::choice: {
        const std::uint32_t first = static_cast<std::uint32_t>(g->children_.size());
        for (std::uint32_t k = 0; k < node.count; ++k) g->children_.push_back(remap[static_cast<std::size_t>(s.children[node.first + k])]);
        node.first = first;
        break;
      }
      case node_kind::repeat: node.item = remap[static_cast<std::size_t>(node.item)]; break;
    }
    g->nodes_.push_back(node);
    g->nullable_.push_back(nullable[static_cast<std::size_t>(id)]);
  }
  g->root_ = 0;
  return g;
}

// ---- grammar_matcher ----

namespace detail {

namespace {

constexpr std::int32_t dead_state = 0;      // no stack: nothing can follow
constexpr std::int32_t overflow_state = 1;  // more stacks than allowed
constexpr std::int32_t empty_stack = 0;     // the stack of a finished sentence

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// (state, byte) -> state, open addressing with linear probing.
class transition_map {
 public:
  transition_map() { slots_.assign(1024, {empty_key, 0}); }

  const std::int32_t* find(std::uint64_t key) const {
    for (std::size_t i = mix(key) & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == empty_key) return nullptr;
    }
  }

  void insert(std::uint64_t key, std::int32_t value) {
    if ((used_ + 1) * 2 > slots_.size()) grow();
    place(key, value);
    ++used_;
  }

  void clear() {
    slots_.assign(1024, {empty_key, 0});
    used_ = 0;
  }

 private:
  static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
  struct slot {
    std::uint64_t key;
    std::int32_t value;
  };

  void place(std::uint64_t key, std::int32_t value) {
    std::size_t i = mix(key) & (slots_.size() - 1);
    while (slots_[i].key != empty_key) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = {key, value};
  }

  void grow() {
    std::vector<slot> old(slots_.size() * 2, {empty_key, 0});
    old.swap(slots_);
    for (const slot& s : old) {
      if (s.key != empty_key) place(s.key, s.value);
    }
  }

  std::vector<slot> slots_;
  std::size_t used_ = 0;
};

struct stack_key {
  std::int32_t node, index, parent;
  bool operator==(const stack_key&) const = default;
};

struct stack_key_hash {
  std::size_t operator()(const stack_key& k) const noexcept {
    return static_cast<std::size_t>(mix((static_cast<std::uint64_t>(static_cast<std::uint32_t>(k.node)) << 32 |
                                         static_cast<std::uint32_t>(k.index)) ^
                                        mix(static_cast<std::uint32_t>(k.parent))));
  }
};

struct stack_set_hash {
  std::size_t operator()(const std::vector<std::int32_t>& v) const noexcept {
    std::uint64_t h = v.size();
    for (const std::int32_t x : v) h = mix(h ^ static_cast<std::uint32_t>(x));
    return static_cast<std::size_t>(h);
  }
};

}  // namespace

// The matcher's machinery. A parse stack is a chain of frames (rule, position), interned so
// that equal stacks share one id; a parse state is the sorted set of its stacks' ids, interned
// too. Every stack of a state has a byte rule or an unfinished literal on top, or is empty
// (the sentence is complete). Transitions between states by one byte are remembered, so a
// byte the matcher has seen in a state costs one hash lookup, and masks are remembered per state.
class matcher_state {
 public:
  matcher_state(std::shared_ptr<const grammar> g, std::shared_ptr<const token_table> tokens,
                const grammar_matcher_options& options)
      : grammar_(std::move(g)), tokens_(std::move(tokens)), options_(options) {
    if (!grammar_ || !tokens_) throw std::invalid_argument("grammar_matcher: needs a grammar and a token table");
    words_ = (static_cast<std::size_t>(tokens_->size()) + 63) / 64;
    depth_states_.resize(tokens_->max_token_bytes() + 1);
    cache_.reserve(std::max<std::size_t>(options_.mask_cache_entries, 1));
    start_fresh();
  }

  bool allows(token_id t) {
    if (tokens_->is_end(t)) return complete();
    const std::string_view bytes = tokens_->bytes(t);
    if (bytes.empty()) return false;
    return walk(current_, bytes) > overflow_state;
  }

  status accept(token_id t) {
    if (tokens_->is_end(t)) {
      if (!complete()) return error(errc::invalid_argument, "token " + std::to_string(t) + " ends the text before the grammar is complete");
      std::vector<std::int32_t> finished{empty_stack};
      current_ = intern_state(finished);
      return {};
    }
    const std::string_view bytes = tokens_->bytes(t);
    if (bytes.empty()) return error(errc::invalid_argument, "token " + std::to_string(t) + " has no text the grammar could match");
    return advance(bytes, "token " + std::to_string(t));
  }

  status accept_bytes(std::string_view bytes) { return advance(bytes, "the text"); }

  bool complete() const noexcept {
    const auto& set = *states_[static_cast<std::size_t>(current_)];
    return !set.empty() && set.front() == empty_stack;
  }

  bool can_continue() const noexcept {
    const auto& set = *states_[static_cast<std::size_t>(current_)];
    return !set.empty() && set.back() != empty_stack;
  }

  void reset() { current_ = initial_; }

  void mask(std::span<float> logits) {
    ++stats_.masks;
    const std::vector<std::uint64_t>& bits = mask_bits();
    constexpr float blocked = -std::numeric_limits<float>::infinity();
    const std::size_t n = logits.size();
    const std::size_t known = std::min(n, static_cast<std::size_t>(tokens_->size()));
    for (std::size_t w = 0; w * 64 < known; ++w) {
      const std::uint64_t word = bits[w];
      if (word == ~std::uint64_t{0}) continue;
      const std::size_t base = w * 64;
      const std::size_t end = std::min(known, base + 64);
      if (word == 0) {
        std::fill(logits.begin() + static_cast<std::ptrdiff_t>(base), logits.begin() + static_cast<std::ptrdiff_t>(end), blocked);
        continue;
      }
      for (std::uint64_t refused = ~word; refused != 0; refused &= refused - 1) {
        const std::size_t i = base + static_cast<std::size_t>(std::countr_zero(refused));
        if (i < end) logits[i] = blocked;
      }
    }
    for (std::size_t i = known; i < n; ++i) logits[i] = blocked;
  }

  grammar_matcher::statistics stats() const noexcept { return stats_; }

 private:
  struct stack_entry {
    std::int32_t node, index, parent, depth;
  };
  // A mask, or for a truncated state (see truncated_state()) the tokens it allows whatever the
  // context below, and those whose verdict depends on that context.
  struct cache_entry {
    std::int64_t key = -1;
    std::uint64_t last_used = 0;
    std::vector<std::uint64_t> bits;
    std::vector<token_id> dependent;
    bool too_many_dependent = false;
  };
  struct walk_result {
    std::vector<std::uint64_t> bits;
    std::vector<token_id> dependent;
    bool too_many_dependent = false;
  };

  // Forgets every stack and state, keeping only the current state's stacks.
  void start_fresh() {
    std::vector<std::vector<std::pair<std::int32_t, std::int32_t>>> keep;  // frames, bottom first
    if (!states_.empty()) {
      for (const std::int32_t s : *states_[static_cast<std::size_t>(current_)]) {
        std::vector<std::pair<std::int32_t, std::int32_t>> frames;
        for (std::int32_t at = s; at != empty_stack; at = stacks_[static_cast<std::size_t>(at)].parent)
          frames.emplace_back(stacks_[static_cast<std::size_t>(at)].node, stacks_[static_cast<std::size_t>(at)].index);
        std::reverse(frames.begin(), frames.end());
        keep.push_back(std::move(frames));
      }
    }
    const bool had_state = !states_.empty();
    stacks_.assign(1, {-1, 0, -1, 0});
    stack_ids_.clear();
    state_ids_.clear();
    states_.clear();
    transitions_.clear();
    cache_.clear();
    cache_slots_.clear();
    canonical_stacks_.clear();
    canonical_states_.clear();
    truncated_stacks_.clear();
    truncated_states_.clear();
    states_.push_back(&state_ids_.emplace(std::vector<std::int32_t>{}, dead_state).first->first);
    states_.push_back(states_.front());  // the overflow state has no stacks either

    std::vector<std::int32_t> out;
    visited_.clear();
    expand(grammar_->root_, 0, empty_stack, out);
    initial_ = intern_state(out);
    if (!had_state) {
      current_ = initial_;
      return;
    }
    std::vector<std::int32_t> stacks;
    for (const auto& frames : keep) {
      std::int32_t at = empty_stack;
      for (const auto& [node, index] : frames) at = intern_stack(node, index, at);
      stacks.push_back(at);
    }
    current_ = intern_state(stacks);
  }

  void reclaim_if_needed() {
    if (states_.size() > options_.max_states || stacks_.size() > options_.max_states * 4) start_fresh();
  }

  std::int32_t intern_stack(std::int32_t node, std::int32_t index, std::int32_t parent) {
    const stack_key key{node, index, parent};
    if (const auto found = stack_ids_.find(key); found != stack_ids_.end()) return found->second;
    const std::int32_t depth = stacks_[static_cast<std::size_t>(parent)].depth + 1;
    if (static_cast<std::size_t>(depth) > options_.max_stack_depth) return -1;
    const auto id = static_cast<std::int32_t>(stacks_.size());
    stacks_.push_back({node, index, parent, depth});
    stack_ids_.emplace(key, id);
    return id;
  }

  // The state of `stacks` (sorted and deduplicated in place; copied only when the state is new).
  std::int32_t intern_state(std::vector<std::int32_t>& stacks) {
    std::sort(stacks.begin(), stacks.end());
    stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
    if (stacks.empty()) return dead_state;
    if (stacks.size() > options_.max_stacks) return overflow_state;
    if (const auto found = state_ids_.find(stacks); found != state_ids_.end()) return found->second;
    const auto it = state_ids_.emplace(stacks, static_cast<std::int32_t>(states_.size())).first;
    states_.push_back(&it->first);
    return it->second;
  }

  // Adds the stacks that begin (node at index) above `parent`, with a byte rule on top.
  void expand(std::int32_t node_id, std::int32_t index, std::int32_t parent, std::vector<std::int32_t>& out) {
    const grammar& g = *grammar_;
    const detail::grammar_node& node = g.nodes_[static_cast<std::size_t>(node_id)];
    switch (node.type) {
      case node_kind::bytes: {
        const std::int32_t s = intern_stack(node_id, 0, parent);
        if (s >= 0) out.push_back(s);
        return;
      }
      case node_kind::literal: {
        if (static_cast<std::uint32_t>(index) >= node.count) return finish(parent, out);
        const std::int32_t s = intern_stack(node_id, index, parent);
        if (s >= 0) out.push_back(s);
        return;
      }
      case node_kind::sequence: {
        if (static_cast<std::uint32_t>(index) >= node.count) return finish(parent, out);
        std::int32_t next = parent;
        if (static_cast<std::uint32_t>(index) + 1 < node.count) {
          next = intern_stack(node_id, index + 1, parent);
          if (next < 0) return;
        }
        return expand(g.children_[node.first + static_cast<std::uint32_t>(index)], 0, next, out);
      }
      case node_kind::choice:
        for (std::uint32_t k = 0; k < node.count; ++k) expand(g.children_[node.first + k], 0, parent, out);
        return;
      case node_kind::repeat: {
        if (index >= node.min) finish(parent, out);
        if (node.max >= 0 && index >= node.max) return;
        // Past the minimum of an unbounded repeat the count no longer matters: keep it at the
        // minimum so that the states inside the repeat stay the same from item to item.
        const std::int32_t done = node.max < 0 ? std::min(index + 1, node.min) : index + 1;
        std::int32_t next = parent;
        if (node.max < 0 || done < node.max) {
          next = intern_stack(node_id, done, parent);
          if (next < 0) return;
        }
        return expand(node.item, 0, next, out);
      }
    }
  }

  // The rule on top of `parent`'s chain has just finished its child: go on with it.
  void finish(std::int32_t parent, std::vector<std::int32_t>& out) {
    if (parent == empty_stack) {
      out.push_back(empty_stack);
      return;
    }
    // Rules that match the empty string can finish the same frame more than once.
    if (std::find(visited_.begin(), visited_.end(), parent) != visited_.end()) return;
    visited_.push_back(parent);
    const stack_entry e = stacks_[static_cast<std::size_t>(parent)];
    expand(e.node, e.index, e.parent, out);
  }

  std::int32_t compute_transition(std::int32_t state, std::uint8_t byte) {
    std::vector<std::int32_t>& out = transition_out_;
    out.clear();
    visited_.clear();
    const std::vector<std::int32_t>& stacks = *states_[static_cast<std::size_t>(state)];
    const grammar& g = *grammar_;
    for (const std::int32_t s : stacks) {
      if (s == empty_stack) continue;
      const stack_entry e = stacks_[static_cast<std::size_t>(s)];
      const detail::grammar_node& node = g.nodes_[static_cast<std::size_t>(e.node)];
      if (node.type == node_kind::bytes) {
        if (g.byte_sets_[static_cast<std::size_t>(node.item)].test(byte)) finish(e.parent, out);
      } else if (static_cast<std::uint8_t>(g.text_[node.first + static_cast<std::uint32_t>(e.index)]) == byte) {
        if (static_cast<std::uint32_t>(e.index) + 1 == node.count) {
          finish(e.parent, out);
        } else {
          const std::int32_t next = intern_stack(e.node, e.index + 1, e.parent);
          if (next >= 0) out.push_back(next);
        }
      }
    }
    return intern_state(out);
  }

  std::int32_t transition(std::int32_t state, std::uint8_t byte) {
    if (state <= overflow_state) return state;
    const std::uint64_t key = static_cast<std::uint64_t>(state) << 8 | byte;
    if (const std::int32_t* found = transitions_.find(key)) return *found;
    const std::int32_t next = compute_transition(state, byte);
    transitions_.insert(key, next);
    return next;
  }

  std::int32_t walk(std::int32_t state, std::string_view bytes) {
    for (const char c : bytes) {
      state = transition(state, static_cast<std::uint8_t>(c));
      if (state <= overflow_state) return state;
    }
    return state;
  }

  status advance(std::string_view bytes, const std::string& what) {
    reclaim_if_needed();
    const std::int32_t next = walk(current_, bytes);
    if (next == overflow_state)
      return error(errc::resource_exhausted, what + " makes the grammar need more than " +
                                                 std::to_string(options_.max_stacks) + " parse stacks");
    if (next == dead_state) return error(errc::invalid_argument, what + " cannot come next in the grammar");
    current_ = next;
    return {};
  }

  // ---- masks ----
  //
  // A bounded repeat's count changes with every item, so inside a string with maxLength every
  // byte makes a new state. But a token of n bytes completes at most n items of a repeat whose
  // items are never empty, so for tokens of up to `reach` bytes the count only matters through
  // a few classes (below the minimum by more than reach, or at least the minimum with more than
  // reach to go). The canonical state puts one count for each such class; its mask holds for
  // every token of up to reach bytes, and only the longer tokens need a walk of their own.

  struct canonical_form {
    std::int32_t id;     // the canonical stack or state
    std::int32_t reach;  // the longest token (bytes) for which it behaves as the original
  };
  static constexpr std::int32_t unlimited = std::numeric_limits<std::int32_t>::max();
  static constexpr std::int32_t least_useful_reach = 8;  // below this a walk of the longer tokens costs as much as a full one

  canonical_form canonical_stack(std::int32_t stack) {
    std::vector<std::int32_t> chain;  // from `stack` down to the first one already known
    for (std::int32_t at = stack; at != empty_stack && !canonical_stacks_.contains(at); at = stacks_[static_cast<std::size_t>(at)].parent)
      chain.push_back(at);
    const grammar& g = *grammar_;
    for (std::size_t k = chain.size(); k-- > 0;) {
      const stack_entry e = stacks_[static_cast<std::size_t>(chain[k])];
      const canonical_form below = e.parent == empty_stack ? canonical_form{empty_stack, unlimited} : canonical_stacks_.at(e.parent);
      std::int32_t index = e.index;
      std::int32_t reach = below.reach;
      const detail::grammar_node& node = g.nodes_[static_cast<std::size_t>(e.node)];
      if (node.type == node_kind::repeat && !g.nullable_[static_cast<std::size_t>(node.item)]) {
        // index: the items done once the current one ends.
        const std::int64_t to_max = node.max < 0 ? unlimited : std::int64_t{node.max} - index - 1;
        const std::int64_t frame_reach = index >= node.min ? to_max : std::min<std::int64_t>(std::int64_t{node.min} - index - 1, to_max);
        if (frame_reach >= least_useful_reach) {
          index = index >= node.min ? node.min : 0;
          reach = static_cast<std::int32_t>(std::min<std::int64_t>(reach, frame_reach));
        }
      }
      std::int32_t id = chain[k];
      if (index != e.index || below.id != e.parent) id = intern_stack(e.node, index, below.id);
      canonical_stacks_.emplace(chain[k], canonical_form{id, reach});
    }
    return stack == empty_stack ? canonical_form{empty_stack, unlimited} : canonical_stacks_.at(stack);
  }

  canonical_form canonical_state(std::int32_t state) {
    if (const auto found = canonical_states_.find(state); found != canonical_states_.end()) return found->second;
    std::vector<std::int32_t> stacks;
    std::int32_t reach = unlimited;
    bool changed = false;
    for (const std::int32_t s : *states_[static_cast<std::size_t>(state)]) {
      const canonical_form c = canonical_stack(s);
      stacks.push_back(c.id);
      reach = std::min(reach, c.reach);
      changed = changed || c.id != s;
    }
    const canonical_form form = changed ? canonical_form{intern_state(stacks), reach} : canonical_form{state, unlimited};
    canonical_states_.emplace(state, form);
    return form;
  }

  // ---- context ----
  //
  // Inside a string the tokens allowed are the same whatever the string belongs to, except the
  // ones that close it. A truncated stack keeps a stack's frames down to the nearest sequence
  // that still needs a literal (the closing quote, bracket or brace), on the empty stack: its
  // walk tells the tokens that stay inside (allowed or not, whatever lies below) from those that
  // reach the end of the kept frames, which are then checked one by one against the whole
  // state. Truncated states repeat across contexts, so their walks are cached and shared.

  static constexpr std::size_t truncation_depth = 32;     // frames searched for the cut
  static constexpr std::size_t most_dependent = 4096;     // more and the whole state is walked instead

  std::int32_t truncated_stack(std::int32_t stack) {
    if (const auto found = truncated_stacks_.find(stack); found != truncated_stacks_.end()) return found->second;
    const grammar& g = *grammar_;
    std::vector<std::int32_t> kept;
    std::int32_t result = -1;
    for (std::int32_t at = stack; at != empty_stack && kept.size() < truncation_depth; at = stacks_[static_cast<std::size_t>(at)].parent) {
      kept.push_back(at);
      const stack_entry e = stacks_[static_cast<std::size_t>(at)];
      const detail::grammar_node& node = g.nodes_[static_cast<std::size_t>(e.node)];
      if (node.type != node_kind::sequence) continue;
      std::uint32_t k = static_cast<std::uint32_t>(e.index);
      while (k < node.count && g.nullable_[static_cast<std::size_t>(g.children_[node.first + k])]) ++k;
      if (k == node.count || g.nodes_[static_cast<std::size_t>(g.children_[node.first + k])].type != node_kind::literal) continue;
      if (e.parent == empty_stack) {
        result = stack;  // nothing below to cut
      } else {
        result = empty_stack;
        for (std::size_t j = kept.size(); j-- > 0;) {
          const stack_entry f = stacks_[static_cast<std::size_t>(kept[j])];
          result = intern_stack(f.node, f.index, result);
        }
      }
      break;
    }
    truncated_stacks_.emplace(stack, result);
    return result;
  }

  // The state of the truncated stacks, or `state` itself when some stack has no cut.
  std::int32_t truncated_state(std::int32_t state) {
    if (const auto found = truncated_states_.find(state); found != truncated_states_.end()) return found->second;
    std::vector<std::int32_t> stacks;
    std::int32_t result = state;
    for (const std::int32_t s : *states_[static_cast<std::size_t>(state)]) {
      const std::int32_t t = s == empty_stack ? -1 : truncated_stack(s);
      if (t < 0) {
        stacks.clear();
        break;
      }
      stacks.push_back(t);
    }
    if (!stacks.empty()) result = intern_state(stacks);
    if (result <= overflow_state) result = state;
    truncated_states_.emplace(state, result);
    return result;
  }

  // ---- the cache ----

  static std::int64_t cache_key(std::int32_t state, bool truncated) { return std::int64_t{state} * 2 + (truncated ? 1 : 0); }

  const cache_entry* cached(std::int64_t key) {
    const auto found = cache_slots_.find(key);
    if (found == cache_slots_.end()) return nullptr;
    cache_entry& entry = cache_[found->second];
    entry.last_used = ++tick_;
    return &entry;
  }

  // Moves `result` into the cache under `key`, evicting the least recently used entry.
  const cache_entry& store(std::int64_t key, walk_result& result) {
    std::size_t slot = cache_.size();
    if (cache_.size() < cache_.capacity()) {
      cache_.emplace_back();
    } else {
      slot = 0;
      for (std::size_t i = 1; i < cache_.size(); ++i) {
        if (cache_[i].last_used < cache_[slot].last_used) slot = i;
      }
      cache_slots_.erase(cache_[slot].key);
    }
    cache_entry& entry = cache_[slot];
    entry.key = key;
    entry.last_used = ++tick_;
    entry.bits.swap(result.bits);
    entry.dependent.swap(result.dependent);
    entry.too_many_dependent = result.too_many_dependent;
    cache_slots_[key] = slot;
    return entry;
  }

  // The walk of every token from `state` (truncated or not), cached.
  const cache_entry& full_walk(std::int32_t state, bool truncated) {
    const std::int64_t key = cache_key(state, truncated);
    if (const cache_entry* entry = cached(key)) return *entry;
    walk_result result;
    walk_trie(state, 0, truncated, result, true);
    return store(key, result);
  }

  const std::vector<std::uint64_t>& mask_bits() {
    reclaim_if_needed();
    const std::int64_t key = cache_key(current_, false);
    if (const cache_entry* entry = cached(key)) {
      ++stats_.cache_hits;
      return entry->bits;
    }
    const std::int32_t kept = truncated_state(current_);
    const bool truncated = kept != current_;
    const canonical_form canonical = canonical_state(kept);

    walk_result& result = scratch_;
    {
      const cache_entry& shared = full_walk(canonical.id, truncated);
      result.bits = shared.bits;
      result.dependent = shared.dependent;
      result.too_many_dependent = shared.too_many_dependent;
    }
    if (canonical.id != kept && static_cast<std::size_t>(canonical.reach) < tokens_->max_token_bytes()) {
      // The canonical walk holds for the tokens of up to `reach` bytes; walk the longer ones.
      const auto reach = static_cast<std::size_t>(canonical.reach);
      const auto& short_tokens = tokens_->at_most_bytes_[reach];
      for (std::size_t w = 0; w < words_; ++w) result.bits[w] &= short_tokens[w];
      std::erase_if(result.dependent, [&](token_id t) { return tokens_->bytes(t).size() > reach; });
      walk_trie(kept, canonical.reach, truncated, result, false);
    }
    if (truncated) {
      if (result.too_many_dependent || result.dependent.size() > most_dependent) {
        walk_trie(current_, 0, false, result, true);
      } else {
        for (const token_id t : result.dependent) {
          if (walk(current_, tokens_->bytes(t)) > overflow_state) result.bits[static_cast<std::size_t>(t) / 64] |= std::uint64_t{1} << (t % 64);
        }
      }
    }
    result.dependent.clear();
    return store(key, result).bits;
  }

  // Sets the bits of the tokens longer than `shortest_excluded` bytes that `state` allows (all
  // tokens for 0), and of the end tokens when the state is complete; `fresh` clears `bits`
  // first. For a truncated state, tokens that reach the end of its frames go to `dependent`.
  void walk_trie(std::int32_t state, std::int32_t shortest_excluded, bool truncated, walk_result& out, bool fresh) {
    if (fresh) {
      out.bits.assign(words_, 0);
      out.dependent.clear();
      out.too_many_dependent = false;
    }
    const auto& trie = tokens_->trie_;
    const auto& trie_tokens = tokens_->trie_tokens_;
    const auto excluded = static_cast<std::uint16_t>(shortest_excluded);
    std::vector<std::uint64_t>& bits = out.bits;
    depth_states_[0] = state;
    std::uint64_t visited = 0;
    for (std::size_t i = 0; i < trie.size();) {
      const token_table::trie_node& n = trie[i];
      if (n.longest <= excluded) {
        i = static_cast<std::size_t>(n.subtree_end);
        continue;
      }
      ++visited;
      const std::int32_t next = transition(depth_states_[n.depth - 1u], n.byte);
      if (next <= overflow_state) {
        i = static_cast<std::size_t>(n.subtree_end);
        continue;
      }
      if (truncated && states_[static_cast<std::size_t>(next)]->front() == empty_stack) {
        const auto end = static_cast<std::size_t>(n.subtree_end);
        const std::int32_t last = end < trie.size() ? trie[end].token_begin : static_cast<std::int32_t>(trie_tokens.size());
        if (!out.too_many_dependent) {
          for (std::int32_t k = n.token_begin; k < last; ++k) {
            const token_id t = trie_tokens[static_cast<std::size_t>(k)];
            if (tokens_->bytes(t).size() > excluded) out.dependent.push_back(t);
          }
          if (out.dependent.size() > most_dependent) {
            out.too_many_dependent = true;
            out.dependent.clear();
          }
        }
        i = end;
        continue;
      }
      depth_states_[n.depth] = next;
      if (n.depth > excluded) {
        for (std::int32_t k = n.token_begin; k < n.token_end; ++k) {
          const auto t = static_cast<std::size_t>(trie_tokens[static_cast<std::size_t>(k)]);
          bits[t / 64] |= std::uint64_t{1} << (t % 64);
        }
      }
      ++i;
    }
    stats_.trie_nodes += visited;
    const auto& set = *states_[static_cast<std::size_t>(state)];
    if (fresh && !truncated && !set.empty() && set.front() == empty_stack) {
      for (const token_id t : tokens_->end_tokens()) bits[static_cast<std::size_t>(t) / 64] |= std::uint64_t{1} << (t % 64);
    }
  }

  std::shared_ptr<const grammar> grammar_;
  std::shared_ptr<const token_table> tokens_;
  grammar_matcher_options options_;
  std::size_t words_ = 0;

  std::vector<stack_entry> stacks_;  // [0]: the empty stack
  std::unordered_map<stack_key, std::int32_t, stack_key_hash> stack_ids_;
  std::unordered_map<std::vector<std::int32_t>, std::int32_t, stack_set_hash> state_ids_;
  std::vector<const std::vector<std::int32_t>*> states_;  // [0]: dead, [1]: overflow
  transition_map transitions_;
  std::vector<std::int32_t> visited_;         // frames finished during one transition
  std::vector<std::int32_t> transition_out_;  // the stacks a transition reaches
  std::int32_t initial_ = dead_state;
  std::int32_t current_ = dead_state;

  std::vector<cache_entry> cache_;
  std::unordered_map<std::int64_t, std::size_t> cache_slots_;
  std::uint64_t tick_ = 0;
  std::vector<std::int32_t> depth_states_;  // [max token bytes + 1]: the state at each trie depth
  walk_result scratch_;                     // the mask being computed
  std::unordered_map<std::int32_t, canonical_form> canonical_stacks_;
  std::unordered_map<std::int32_t, canonical_form> canonical_states_;
  std::unordered_map<std::int32_t, std::int32_t> truncated_stacks_;  // -1: no cut
  std::unordered_map<std::int32_t, std::int32_t> truncated_states_;
  grammar_matcher::statistics stats_;
};

}  // namespace detail

grammar_matcher::grammar_matcher(std::shared_ptr<const grammar> g, std::shared_ptr<const token_table> tokens)
    : grammar_matcher(std::move(g), std::move(tokens), grammar_matcher_options{}) {}

grammar_matcher::grammar_matcher(std::shared_ptr<const grammar> g, std::shared_ptr<const token_table> tokens,
                                 const grammar_matcher_options& options)
    : state_(std::make_unique<detail::matcher_state>(std::move(g), std::move(tokens), options)) {}

grammar_matcher::~grammar_matcher() = default;
grammar_matcher::grammar_matcher(grammar_matcher&&) noexcept = default;
grammar_matcher& grammar_matcher::operator=(grammar_matcher&&) noexcept = default;

bool grammar_matcher::allows(token_id t) const { return state_->allows(t); }
void grammar_matcher::mask(std::span<float> logits) { state_->mask(logits); }
status grammar_matcher::accept(token_id t) { return state_->accept(t); }
status grammar_matcher::accept_bytes(std::string_view bytes) { return state_->accept_bytes(bytes); }
bool grammar_matcher::complete() const noexcept { return state_->complete(); }
bool grammar_matcher::can_continue() const noexcept { return state_->can_continue(); }
void grammar_matcher::reset() { state_->reset(); }
grammar_matcher::statistics grammar_matcher::stats() const noexcept { return state_->stats(); }

}  // namespace chatai::engine
