// Grammar-constrained decoding: grammars built from rules or compiled from JSON Schema, and a
// byte-level matcher that says which tokens may come next and masks the others out of the logits.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>

#include "chatai/core/status.hpp"
#include "chatai/engine/token.hpp"
#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine {

namespace detail {
class json_schema_compiler;
class matcher_state;

// One rule of a grammar.
struct grammar_node {
  enum class kind : std::uint8_t { bytes, literal, sequence, choice, repeat };
  kind type = kind::sequence;
  std::int32_t item = 0;    // bytes: index into the byte sets; repeat: the repeated rule
  std::uint32_t first = 0;  // literal: offset into the text; sequence, choice: offset into the children
  std::uint32_t count = 0;  // literal: bytes; sequence, choice: children
  std::int32_t min = 0;     // repeat
  std::int32_t max = 0;     // repeat; -1: unbounded
};
}  // namespace detail

// Every token's bytes, and a byte trie over them, for one vocabulary. Built once per vocabulary
// (it costs milliseconds) and shared read-only by every matcher. Control/special tokens (vocab.type(id)
// not normal/byte/user-defined text) have no bytes and are never allowed by a grammar, except the
// end-of-generation tokens (vocab.is_end_of_generation), which are allowed exactly when the grammar is complete.
// Thread safety: immutable after construction; every member is safe from any thread.
class token_table {
 public:
  explicit token_table(const vocabulary& vocab);

  std::int32_t size() const noexcept;
  // The token's text as it decodes (byte tokens <0xNN> as that byte, SPM ▁ as space); empty for
  // control, unknown and unused tokens and for ids outside the table.
  std::string_view bytes(token_id id) const noexcept;
  bool is_end(token_id id) const noexcept;
  // The end-of-generation tokens, in increasing order.
  std::span<const token_id> end_tokens() const noexcept { return end_tokens_; }
  // The longest token, in bytes.
  std::size_t max_token_bytes() const noexcept { return max_token_bytes_; }

 private:
  friend class detail::matcher_state;

  // The trie in pre-order: a node's subtree is the nodes up to `subtree_end`; its parent is the
  // nearest earlier node of depth - 1. Tokens whose bytes end at a node are
  // trie_tokens_[token_begin, token_end).
  struct trie_node {
    std::int32_t subtree_end;
    std::int32_t token_begin;
    std::int32_t token_end;
    std::uint16_t depth;    // 1 for the first byte
    std::uint16_t longest;  // the longest token in the subtree, in bytes
    std::uint8_t byte;
  };

  std::vector<std::uint32_t> offsets_;  // [size + 1] into bytes_
  std::string bytes_;
  std::vector<bool> end_;
  std::vector<token_id> end_tokens_;
  std::vector<trie_node> trie_;
  std::vector<token_id> trie_tokens_;
  std::vector<std::vector<std::uint64_t>> at_most_bytes_;  // [max_token_bytes + 1]: a bit per token of at most that many bytes
  std::size_t max_token_bytes_ = 0;
};

// A set of byte strings as a graph of rules: byte sets, literals, sequences, choices and bounded
// repetitions. Built by grammar_builder; immutable once built, shared by std::shared_ptr<const grammar>.
// Thread safety: immutable; every member is safe from any thread.
class grammar {
 public:
  // The number of rules, for diagnostics.
  std::size_t size() const noexcept { return nodes_.size(); }

 private:
  friend class grammar_builder;
  friend class detail::matcher_state;

  std::vector<detail::grammar_node> nodes_;
  std::vector<std::int32_t> children_;
  std::vector<std::bitset<256>> byte_sets_;
  std::string text_;
  std::vector<bool> nullable_;  // [nodes]: the rule matches the empty string
  std::int32_t root_ = 0;
};

// Builds grammars. Rules are handles into this builder; a rule may be used in any number of
// places, and forward()/define() make recursive rules. JSON text built here has no whitespace
// before or after the value; inside it, at most one run of whitespace between tokens (a space,
// or a newline and up to 32 spaces or tabs), so that a model cannot loop on whitespace forever.
// Thread safety: not thread-safe; build() copies, so the grammars it returns are independent.
class grammar_builder {
 public:
  using rule = std::int32_t;  // a handle inside this builder

  grammar_builder();
  ~grammar_builder();
  grammar_builder(grammar_builder&&) noexcept;
  grammar_builder& operator=(grammar_builder&&) noexcept;

  rule literal(std::string_view text);
  rule sequence(std::vector<rule> parts);
  rule choice(std::vector<rule> alternatives);
  // `item` between min and max times; max -1: unbounded. Counts above 2^31 - 1 read as unbounded.
  rule repeat(rule item, std::int64_t min, std::int64_t max);
  rule optional(rule item) { return repeat(item, 0, 1); }
  // One byte out of a set.
  rule byte_set(const std::bitset<256>& bytes);
  // One byte within [first, last].
  rule byte_range(std::uint8_t first, std::uint8_t last);
  // A rule whose body is given later by define(): for recursion.
  rule forward();
  void define(rule forward_rule, rule body);

  // A JSON value valid against `schema` (JSON Schema draft 2020-12 subset below). Errors: invalid_argument or
  // unsupported whose message names the schema path, e.g. "schema.properties.age.minimum: ..." (prefix the
  // path with `where`).
  //
  // Supported: type (one or an array; a missing type is inferred from the keywords, and a schema
  // without any reads as any JSON value), enum, const, nullable (OpenAPI), anyOf and oneOf (both as a
  // choice: oneOf's exclusiveness is not enforced), allOf of one schema, $ref to "#", "#/$defs/..."
  // and "#/definitions/..." (recursion included; a reference back to itself that consumes nothing
  // is refused), boolean schemas.
  // - object: properties in the schema's order, the required ones always and the others optional;
  //   required names that are not in properties take any value. additionalProperties false or
  //   absent: only the listed properties (absent is read as false, as most engines do, unless the
  //   schema has neither properties nor required: then any keys); true or a schema: further keys,
  //   with any value or that schema, after the listed ones (a further key may repeat a listed one).
  // - array: items (a schema or false; also draft 7's array form with additionalItems),
  //   prefixItems, minItems, maxItems.
  // - string: minLength, maxLength (in code points), format date, time, date-time, uuid, email,
  //   pattern (a regular-expression subset: literals, escapes \d \w \s \D \W \S \n \t \uXXXX and
  //   escaped punctuation, classes [...] and [^...], ., groups (...) and (?:...), alternation |,
  //   quantifiers ? * + {n} {n,} {n,m}, ^ at the start and $ at the end). The strings produced
  //   match the pattern as a whole, as if it were anchored: a subset of what JSON Schema's
  //   unanchored search accepts.
  // - integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (exact).
  // - number: the same bounds when they are whole numbers (then no exponent is produced).
  // Integers have at most 16 digits; fractions at most 16; exponents at most 3.
  // Refused (unsupported): keywords that constrain and are not implemented (not, if/then/else,
  // multipleOf, patternProperties, propertyNames, minProperties, maxProperties, dependentRequired,
  // dependentSchemas, unevaluatedProperties, unevaluatedItems, contains, minContains, maxContains,
  // uniqueItems true, $dynamicRef, other formats, format or pattern beside minLength/maxLength,
  // allOf of several schemas, $ref outside the document, number bounds that are not whole),
  // and enum/const, anyOf/oneOf, allOf or $ref beside other constraining keywords (except type
  // beside enum/const, which keeps the values of those types). Keywords that do not
  // constrain (title, description, default, examples, $schema, $id, $comment, ...) are ignored.
  result<rule> json_schema(const rapidjson::Value& schema, std::string_view where = "schema");
  rule any_json_value();
  rule any_json_object();  // response_format {"type":"json_object"}

  // A copy of the rules reachable from `root`. A rule that can reach itself without consuming a
  // byte (left recursion), or a forward rule never defined, is a programming error:
  // std::invalid_argument is thrown. json_schema() never builds one.
  std::shared_ptr<const grammar> build(rule root);

  struct state;  // the rules so far; defined inside the library

 private:
  friend class detail::json_schema_compiler;
  std::unique_ptr<state> state_;
};

// Limits that keep one matcher's memory bounded.
struct grammar_matcher_options {
  std::size_t max_stacks = 1024;        // parallel parse stacks; more is an error (resource_exhausted)
  std::size_t max_stack_depth = 1024;   // nesting; deeper text is not allowed
  std::size_t mask_cache_entries = 64;  // masks kept (a bit per token each), least recently used evicted
  std::size_t max_states = 50000;       // parse states remembered (about 150 bytes each) before the memory is reclaimed
};

// One sequence's position in a grammar. Works on bytes: a token is allowed when its bytes can
// extend the text so far, whether or not they end inside a UTF-8 sequence. Parse states, their
// byte transitions and their masks are remembered, so a mask costs a trie walk (about a
// millisecond for 49k tokens when nothing is pruned) only the first time a kind of place is
// reached: plain strings share one walk wherever they are, and strings with a maxLength share
// theirs across counts for the tokens too short to reach the bound.
// Thread safety: not thread-safe; one per sequence.
class grammar_matcher {
 public:
  // Both must be non-null (std::invalid_argument otherwise: a programming error).
  grammar_matcher(std::shared_ptr<const grammar> g, std::shared_ptr<const token_table> tokens);
  grammar_matcher(std::shared_ptr<const grammar> g, std::shared_ptr<const token_table> tokens,
                  const grammar_matcher_options& options);
  ~grammar_matcher();
  grammar_matcher(grammar_matcher&&) noexcept;
  grammar_matcher& operator=(grammar_matcher&&) noexcept;

  // Could t come next (cheap: walks only t's bytes).
  bool allows(token_id t) const;
  // Sets -infinity on every token that cannot come next, and on entries past the table (models
  // may pad their logits). Fast: a walk of the token trie that prunes dead subtrees, cached by
  // parse state.
  void mask(std::span<float> logits);
  // Advances. Errors: invalid_argument if !allows(t); resource_exhausted when the text would
  // need more than max_stacks parse stacks; nothing changes then. An end token is accepted
  // when complete(); after it, can_continue() is false.
  status accept(token_id t);
  // Advances by raw bytes (a forced prefix, tests). Errors as accept(); nothing changes then.
  status accept_bytes(std::string_view bytes);
  // The text so far is a whole sentence of the grammar (end tokens allowed).
  bool complete() const noexcept;
  // Some non-end token may still follow; false with complete(): generation must end now.
  // (Every byte the grammar needs is assumed to have a token, as byte-level vocabularies do.)
  bool can_continue() const noexcept;
  // Back to the start of the grammar; the caches are kept.
  void reset();

  struct statistics {
    std::uint64_t masks = 0;       // mask() calls
    std::uint64_t cache_hits = 0;  // of them, answered from the cache
    std::uint64_t trie_nodes = 0;  // trie nodes visited by the masks computed
  };
  statistics stats() const noexcept;

 private:
  std::unique_ptr<detail::matcher_state> state_;
};

}  // namespace chatai::engine
