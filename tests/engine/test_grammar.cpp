// Tests of grammar-constrained decoding with the real model's vocabulary: the rule builder, each
// JSON Schema feature on valid and invalid texts, masks against allows(), end tokens, and random
// walks whose output is parsed and checked against its schema.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/grammar.hpp"
#include "chatai/engine/vocabulary.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

const vocabulary& model_vocabulary() {
  static const vocabulary vocab = [] {
    REQUIRE_MESSAGE(std::string_view(CHATAI_TEST_MODEL) != "", "the test model was not found at configure time");
    auto file = gguf_file::open(CHATAI_TEST_MODEL);
    REQUIRE(file.ok());
    auto v = vocabulary::from_gguf(*file);
    REQUIRE(v.ok());
    return std::move(v).value();
  }();
  return vocab;
}

std::shared_ptr<const token_table> tokens() {
  static const auto table = std::make_shared<const token_table>(model_vocabulary());
  return table;
}

// The single-byte token of each byte (the vocabulary has all 256).
token_id byte_token(unsigned char byte) {
  static const std::vector<token_id> by_byte = [] {
    std::vector<token_id> out(256, -1);
    const auto& t = *tokens();
    for (token_id id = 0; id < t.size(); ++id) {
      if (t.bytes(id).size() == 1 && out[static_cast<unsigned char>(t.bytes(id)[0])] < 0)
        out[static_cast<unsigned char>(t.bytes(id)[0])] = id;
    }
    return out;
  }();
  return by_byte[byte];
}

// Feeds `text` token by token: as the tokenizer splits it, and byte by byte. Both must agree.
bool accepts(const std::shared_ptr<const grammar>& g, std::string_view text) {
  // The tokenizer reads malformed UTF-8 as U+FFFD: such texts go byte by byte only.
  const auto ids = model_vocabulary().encode(text);
  const auto decoded = model_vocabulary().decode(ids);
  const bool tokenizable = decoded.ok() && *decoded == text;
  grammar_matcher by_tokens(g, tokens());
  bool ok = true;
  for (const token_id id : ids) {
    if (!by_tokens.allows(id) || !by_tokens.accept(id).ok()) {
      ok = false;
      break;
    }
  }
  ok = ok && by_tokens.complete();

  grammar_matcher by_bytes(g, tokens());
  bool ok_bytes = true;
  for (const char c : text) {
    const token_id id = byte_token(static_cast<unsigned char>(c));
    REQUIRE(id >= 0);
    if (!by_bytes.allows(id)) {
      ok_bytes = false;
      break;
    }
    REQUIRE(by_bytes.accept(id).ok());
  }
  ok_bytes = ok_bytes && by_bytes.complete();
  if (!tokenizable) return ok_bytes;
  CHECK_MESSAGE(ok == ok_bytes, "token-wise and byte-wise disagree on: " << text);
  return ok;
}

std::shared_ptr<const grammar> schema_grammar(std::string_view schema_text) {
  auto doc = json::parse(schema_text);
  REQUIRE_MESSAGE(doc.ok(), schema_text);
  grammar_builder b;
  auto root = b.json_schema(*doc);
  REQUIRE_MESSAGE(root.ok(), schema_text << ": " << root.err().message());
  return b.build(*root);
}

error schema_error(std::string_view schema_text) {
  auto doc = json::parse(schema_text);
  REQUIRE_MESSAGE(doc.ok(), schema_text);
  grammar_builder b;
  auto root = b.json_schema(*doc);
  REQUIRE_MESSAGE(!root.ok(), schema_text);
  return root.err();
}

std::vector<token_id> allowed_by_mask(grammar_matcher& m) {
  std::vector<float> logits(static_cast<std::size_t>(tokens()->size()), 0.0f);
  m.mask(logits);
  std::vector<token_id> out;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == 0.0f) out.push_back(static_cast<token_id>(i));
  }
  return out;
}

void check_mask_matches_allows(grammar_matcher& m) {
  const auto allowed = allowed_by_mask(m);
  std::vector<bool> in_mask(static_cast<std::size_t>(tokens()->size()), false);
  for (const token_id t : allowed) in_mask[static_cast<std::size_t>(t)] = true;
  std::size_t mismatches = 0;
  for (token_id t = 0; t < tokens()->size(); ++t) {
    if (in_mask[static_cast<std::size_t>(t)] != m.allows(t)) ++mismatches;
  }
  CHECK(mismatches == 0);
}

// Picks random allowed tokens until the grammar must end or `limit` tokens; an end token is
// taken half the time it is allowed, and a third of the picks are among the tokens that hold a
// quote, a comma or a closing bracket, so that walks end. Returns the text, or nothing when the
// limit was reached.
std::optional<std::string> random_walk(const std::shared_ptr<const grammar>& g, std::uint64_t seed, int limit = 1000) {
  grammar_matcher m(g, tokens());
  std::mt19937_64 rng(seed);
  std::string text;
  for (int step = 0; step < limit; ++step) {
    if (m.complete() && (!m.can_continue() || rng() % 2 == 0)) return text;
    auto allowed = allowed_by_mask(m);
    std::erase_if(allowed, [](token_id t) { return tokens()->is_end(t); });
    REQUIRE_MESSAGE(!allowed.empty(), "no token allowed after: " << text);
    if (rng() % 3 == 0) {
      std::vector<token_id> closing;
      for (const token_id t : allowed) {
        if (tokens()->bytes(t).find_first_of("\"]},") != std::string_view::npos) closing.push_back(t);
      }
      if (!closing.empty()) allowed = std::move(closing);
    }
    const token_id t = allowed[rng() % allowed.size()];
    REQUIRE(m.allows(t));
    REQUIRE(m.accept(t).ok());
    text += tokens()->bytes(t);
  }
  return std::nullopt;
}

// ---- a small validator for the schema subset, to check what the walks produce ----

std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

const rapidjson::Value& resolve(const rapidjson::Value& root, std::string_view ref) {
  if (ref == "#") return root;
  for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
    if (ref.starts_with(prefix)) {
      const std::string_view section = std::string_view(prefix).substr(2, std::string_view(prefix).size() - 3);
      const auto& defs = root[std::string(section).c_str()];
      return defs[std::string(ref.substr(std::string_view(prefix).size())).c_str()];
    }
  }
  FAIL("unexpected $ref " << ref);
  return root;
}

bool has_type(const rapidjson::Value& v, std::string_view type) {
  if (type == "null") return v.IsNull();
  if (type == "boolean") return v.IsBool();
  if (type == "string") return v.IsString();
  if (type == "object") return v.IsObject();
  if (type == "array") return v.IsArray();
  if (type == "number") return v.IsNumber();
  return v.IsInt64() || v.IsUint64();
}

bool valid(const rapidjson::Value& v, const rapidjson::Value& s, const rapidjson::Value& root) {
  if (s.IsBool()) return s.GetBool();
  if (s.HasMember("$ref")) return valid(v, resolve(root, s["$ref"].GetString()), root);
  if (s.HasMember("nullable") && s["nullable"].GetBool() && v.IsNull()) return true;
  for (const char* key : {"anyOf", "oneOf"}) {
    if (s.HasMember(key)) {
      for (const auto& alternative : s[key].GetArray()) {
        if (valid(v, alternative, root)) return true;
      }
      return false;
    }
  }
  if (s.HasMember("allOf")) return valid(v, s["allOf"][0], root);
  if (s.HasMember("const")) return v == s["const"];
  if (s.HasMember("enum")) {
    const auto& values = s["enum"].GetArray();
    return std::any_of(values.begin(), values.end(), [&](const rapidjson::Value& e) { return v == e; });
  }
  if (s.HasMember("type")) {
    bool typed = false;
    if (s["type"].IsString()) {
      typed = has_type(v, s["type"].GetString());
    } else {
      for (const auto& t : s["type"].GetArray()) typed = typed || has_type(v, t.GetString());
    }
    if (!typed) return false;
  }
  if (v.IsString()) {
    const std::string_view text(v.GetString(), v.GetStringLength());
    if (s.HasMember("minLength") && code_points(text) < s["minLength"].GetUint()) return false;
    if (s.HasMember("maxLength") && code_points(text) > s["maxLength"].GetUint()) return false;
    if (s.HasMember("pattern") && !std::regex_match(std::string(text), std::regex(s["pattern"].GetString()))) return false;
    if (s.HasMember("format")) {
      const std::string format = s["format"].GetString();
      const std::string date = R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))";
      const std::string time = R"(([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))";
      std::string re;
      if (format == "date") re = date;
      if (format == "time") re = time;
      if (format == "date-time") re = date + "T" + time;
      if (format == "uuid") re = "[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}";
      if (format == "email") re = R"([^@\s"\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)";
      REQUIRE(!re.empty());
      if (!std::regex_match(std::string(text), std::regex(re))) return false;
    }
  }
  if (v.IsNumber()) {
    const double x = v.GetDouble();
    if (s.HasMember("minimum") && x < s["minimum"].GetDouble()) return false;
    if (s.HasMember("maximum") && x > s["maximum"].GetDouble()) return false;
    if (s.HasMember("exclusiveMinimum") && x <= s["exclusiveMinimum"].GetDouble()) return false;
    if (s.HasMember("exclusiveMaximum") && x >= s["exclusiveMaximum"].GetDouble()) return false;
  }
  if (v.IsObject()) {
    if (s.HasMember("required")) {
      for (const auto& name : s["required"].GetArray()) {
        if (!v.HasMember(name)) return false;
      }
    }
    const bool closed = s.HasMember("properties") && !(s.HasMember("additionalProperties") && !s["additionalProperties"].IsFalse());
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
      if (s.HasMember("properties") && s["properties"].HasMember(it->name)) {
        if (!valid(it->value, s["properties"][it->name], root)) return false;
      } else if (closed) {
        return false;
      } else if (s.HasMember("additionalProperties") && !valid(it->value, s["additionalProperties"], root)) {
        return false;
      }
    }
  }
  if (v.IsArray()) {
    const auto size = v.Size();
    if (s.HasMember("minItems") && size < s["minItems"].GetUint()) return false;
    if (s.HasMember("maxItems") && size > s["maxItems"].GetUint()) return false;
    rapidjson::SizeType first_rest = 0;
    if (s.HasMember("prefixItems")) {
      const auto& prefix = s["prefixItems"];
      for (rapidjson::SizeType i = 0; i < prefix.Size() && i < size; ++i) {
        if (!valid(v[i], prefix[i], root)) return false;
      }
      first_rest = prefix.Size();
    }
    if (s.HasMember("items")) {
      for (rapidjson::SizeType i = first_rest; i < size; ++i) {
        if (!valid(v[i], s["items"], root)) return false;
      }
    }
  }
  return true;
}

// Random walks over a schema: every finished text parses and is valid. Returns the texts.
std::vector<std::string> check_walks(std::string_view schema_text, int seeds, int must_finish_percent = 80) {
  auto doc = json::parse(schema_text);
  REQUIRE(doc.ok());
  const auto g = schema_grammar(schema_text);
  std::vector<std::string> texts;
  for (int seed = 0; seed < seeds; ++seed) {
    const auto text = random_walk(g, static_cast<std::uint64_t>(seed) * 7919 + 1);
    if (!text) continue;
    auto parsed = json::parse(*text);
    REQUIRE_MESSAGE(parsed.ok(), schema_text << " gave unparsable " << *text << ": " << parsed.err().message());
    CHECK_MESSAGE(valid(*parsed, *doc, *doc), schema_text << " gave invalid " << *text);
    texts.push_back(*text);
  }
  CHECK_MESSAGE(static_cast<int>(texts.size()) * 100 >= seeds * must_finish_percent, schema_text << ": few walks finished");
  return texts;
}

}  // namespace

TEST_CASE("the token table holds each token's decoded bytes and a trie over them") {
  const auto& vocab = model_vocabulary();
  const auto& t = *tokens();
  CHECK(t.size() == vocab.size());
  CHECK(t.is_end(vocab.eos()));
  CHECK(t.bytes(vocab.eos()).empty());
  CHECK(t.bytes(vocab.bos()).empty());  // a control token
  const auto ids = vocab.encode(" hello world");
  std::string joined;
  for (const token_id id : ids) joined += t.bytes(id);
  CHECK(joined == " hello world");
  CHECK(t.bytes(-1).empty());
  CHECK(t.bytes(t.size()).empty());
  for (int b = 0x20; b < 0x7F; ++b) CHECK(byte_token(static_cast<unsigned char>(b)) >= 0);
  CHECK(byte_token('\n') >= 0);
  CHECK(t.max_token_bytes() > 8);
}

TEST_CASE("literal, sequence, choice and repeat") {
  grammar_builder b;
  const auto ab = b.literal("ab");
  const auto cd = b.literal("cd");
  const auto g = b.build(b.sequence({b.literal("<"), b.choice({ab, cd}), b.repeat(b.literal("x"), 1, 3), b.literal(">")}));
  CHECK(accepts(g, "<abx>"));
  CHECK(accepts(g, "<cdxxx>"));
  CHECK_FALSE(accepts(g, "<ab>"));
  CHECK_FALSE(accepts(g, "<abxxxx>"));
  CHECK_FALSE(accepts(g, "<ef x>"));
  CHECK_FALSE(accepts(g, "<abx"));

  grammar_builder unbounded;
  const auto g2 = unbounded.build(unbounded.sequence({unbounded.repeat(unbounded.byte_range('a', 'c'), 2, -1), unbounded.literal(".")}));
  CHECK(accepts(g2, "ab."));
  CHECK(accepts(g2, std::string(500, 'c') + "."));
  CHECK_FALSE(accepts(g2, "a."));
  CHECK_FALSE(accepts(g2, "abd."));

  grammar_builder empty_items;  // a repeat of something that may be empty still terminates
  const auto g3 = empty_items.build(empty_items.repeat(empty_items.optional(empty_items.literal("z")), 0, -1));
  CHECK(accepts(g3, ""));
  CHECK(accepts(g3, "zzz"));
  CHECK_FALSE(accepts(g3, "zy"));
}

TEST_CASE("forward rules make recursive grammars; left recursion is refused") {
  grammar_builder b;
  const auto nested = b.forward();
  b.define(nested, b.choice({b.literal("x"), b.sequence({b.literal("("), nested, b.literal(")")})}));
  const auto g = b.build(nested);
  CHECK(accepts(g, "x"));
  CHECK(accepts(g, "(((x)))"));
  CHECK_FALSE(accepts(g, "((x)"));
  CHECK_FALSE(accepts(g, "()"));

  grammar_builder left;
  const auto list = left.forward();
  left.define(list, left.choice({left.literal("a"), left.sequence({list, left.literal("a")})}));
  CHECK_THROWS_AS(left.build(list), std::invalid_argument);

  grammar_builder undefined;
  CHECK_THROWS_AS(undefined.build(undefined.sequence({undefined.literal("a"), undefined.forward()})), std::invalid_argument);
}

TEST_CASE("end tokens are allowed exactly when the grammar is complete") {
  grammar_builder b;
  const auto g = b.build(b.sequence({b.literal("yes"), b.optional(b.literal("!"))}));
  grammar_matcher m(g, tokens());
  const token_id eos = model_vocabulary().eos();
  const token_id bos = model_vocabulary().bos();
  CHECK_FALSE(m.complete());
  CHECK(m.can_continue());
  CHECK_FALSE(m.allows(eos));
  CHECK_FALSE(m.allows(bos));
  CHECK(m.accept(eos).err().code() == errc::invalid_argument);
  REQUIRE(m.accept_bytes("yes").ok());
  CHECK(m.complete());
  CHECK(m.can_continue());
  CHECK(m.allows(eos));
  CHECK_FALSE(m.allows(bos));
  auto allowed = allowed_by_mask(m);
  CHECK(std::find(allowed.begin(), allowed.end(), eos) != allowed.end());
  REQUIRE(m.accept_bytes("!").ok());
  CHECK(m.complete());
  CHECK_FALSE(m.can_continue());
  allowed = allowed_by_mask(m);
  CHECK(allowed == std::vector<token_id>(tokens()->end_tokens().begin(), tokens()->end_tokens().end()));
  CHECK(m.accept(eos).ok());
  CHECK_FALSE(m.can_continue());
}

TEST_CASE("a refused token changes nothing") {
  const auto g = schema_grammar(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]})");
  grammar_matcher m(g, tokens());
  REQUIRE(m.accept_bytes("{\"a\":").ok());
  const auto before = allowed_by_mask(m);
  const auto bad = model_vocabulary().encode("\"x\"");
  CHECK_FALSE(m.allows(bad[0]));
  const auto s = m.accept(bad[0]);
  CHECK(s.err().code() == errc::invalid_argument);
  CHECK(allowed_by_mask(m) == before);
  CHECK(m.accept_bytes("12}").ok());
  CHECK(m.complete());
  m.reset();
  CHECK_FALSE(m.complete());
  CHECK(m.accept_bytes("{ \"a\": -3 }").ok());
  CHECK(m.complete());
}

TEST_CASE("mask() allows exactly the tokens allows() does") {
  const auto g = schema_grammar(R"({"type":"object","properties":{
      "name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":150},
      "tags":{"type":"array","items":{"enum":["a","b","long tag"]}},"ok":{"type":"boolean"},
      "when":{"type":"string","format":"date-time"}},"required":["name","age"]})");
  grammar_matcher m(g, tokens());
  const std::string_view prefixes[] = {"", "{", "{\"name\"", "{\"name\": \"Jo", "{\"name\": \"Jo\\", "{\"name\": \"J\xC3",
                                       "{\"name\": \"Jo\", \"age\": 1", "{\"name\": \"Jo\", \"age\": 15,\n  \"tags\": [\"lo",
                                       "{\"name\":\"Jo\",\"age\":0,\"when\":\"2024-02-0"};
  for (const std::string_view prefix : prefixes) {
    CAPTURE(prefix);
    m.reset();
    REQUIRE(m.accept_bytes(prefix).ok());
    check_mask_matches_allows(m);
    check_mask_matches_allows(m);  // from the cache
  }
  CHECK(m.stats().cache_hits >= std::size(prefixes));
}

TEST_CASE("mask() matches allows() along random walks") {
  // Strings in different places share their masks; the tokens that close them are checked
  // against the whole state. Both must agree with allows() everywhere.
  const auto g = schema_grammar(R"({"type":"object","properties":{
      "a":{"type":"string"},"b":{"type":"array","items":{"type":"object","properties":{"c":{"type":"string"},
      "d":{"type":"string","maxLength":30},"e":{"type":"number"}},"required":["c","d"]}},"f":{"type":"string"}},
      "required":["a","b","f"]})");
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    grammar_matcher m(g, tokens());
    std::mt19937_64 rng(seed);
    for (int step = 0; step < 120 && m.can_continue(); ++step) {
      auto allowed = allowed_by_mask(m);
      std::erase_if(allowed, [](token_id t) { return tokens()->is_end(t); });
      REQUIRE(!allowed.empty());
      if (step % 2 == 0) check_mask_matches_allows(m);
      if (rng() % 3 == 0) {
        std::vector<token_id> closing;
        for (const token_id t : allowed) {
          if (tokens()->bytes(t).find_first_of("\"]},") != std::string_view::npos) closing.push_back(t);
        }
        if (!closing.empty()) allowed = std::move(closing);
      }
      REQUIRE(m.accept(allowed[rng() % allowed.size()]).ok());
    }
  }
}

TEST_CASE("masks inside bounded repeats match allows() at every count") {
  // Masks of states that differ only in a count are shared for the shorter tokens.
  const auto g = schema_grammar(R"({"type":"array","items":{"type":"string","minLength":20,"maxLength":45},"minItems":2,"maxItems":30})");
  grammar_matcher m(g, tokens());
  REQUIRE(m.accept_bytes("[").ok());
  for (int item = 0; item < 2; ++item) {
    REQUIRE(m.accept_bytes(item == 0 ? "\"" : ",\"").ok());
    for (int length = 0; length <= 45; ++length) {
      CAPTURE(item);
      CAPTURE(length);
      check_mask_matches_allows(m);
      if (length < 45) REQUIRE(m.accept_bytes(length % 7 == 3 ? "\xC3\xA9" : "q").ok());
    }
    REQUIRE(m.accept_bytes("\"").ok());
  }
  const auto texts = check_walks(R"({"type":"array","items":{"type":"string","minLength":10,"maxLength":30},"maxItems":3})", 30);
  CHECK(!texts.empty());
}

TEST_CASE("any JSON value and any JSON object") {
  grammar_builder builder;
  const auto value = builder.build(builder.any_json_value());
  const auto object = builder.build(builder.any_json_object());
  for (const char* text : {"1", "-0.5e+10", "\"a\\u00e9\\ud83d\\ude00\"", "null", "[1, [2, {}], \"x\"]", "{\"a\": {\"b\": [true, false]}}",
                           "{\n  \"k\": \"v\",\n  \"n\": 12\n}", "\"caf\xC3\xA9\""}) {
    CAPTURE(text);
    CHECK(accepts(value, text));
  }
  for (const char* text : {"01", "1.", "\"\\x\"", "[1,]", "{\"a\" 1}", "\"\xC3\"", "\"\xED\xA0\x80\"", "\"\\ud800\"", "tru", "{  \"a\":1}",
                           "\"a\nb\""}) {
    CAPTURE(text);
    CHECK_FALSE(accepts(value, text));
  }
  CHECK(accepts(object, "{}"));
  CHECK(accepts(object, "{\"a\": [1]}"));
  CHECK_FALSE(accepts(object, "[1]"));
  CHECK_FALSE(accepts(object, "\"a\""));
  CHECK(accepts(value, "[" + std::string(16, '1') + "]"));
  CHECK_FALSE(accepts(value, "[" + std::string(17, '1') + "]"));
}

TEST_CASE("schema: types, type arrays and nullable") {
  const auto g = schema_grammar(R"({"type":["string","null"]})");
  CHECK(accepts(g, "\"x\""));
  CHECK(accepts(g, "null"));
  CHECK_FALSE(accepts(g, "1"));
  const auto n = schema_grammar(R"({"type":"number"})");
  CHECK(accepts(n, "3"));
  CHECK(accepts(n, "-3.25E-7"));
  CHECK_FALSE(accepts(n, "\"3\""));
  const auto i = schema_grammar(R"({"type":"integer"})");
  CHECK(accepts(i, "-42"));
  CHECK_FALSE(accepts(i, "4.2"));
  const auto o = schema_grammar(R"({"type":"boolean","nullable":true})");
  CHECK(accepts(o, "true"));
  CHECK(accepts(o, "null"));
  CHECK_FALSE(accepts(o, "0"));
  const auto any = schema_grammar(R"({"description":"anything","title":"x","$schema":"https://json-schema.org/draft/2020-12/schema"})");
  CHECK(accepts(any, "[1,{\"a\":null}]"));
  const auto t = schema_grammar("true");
  CHECK(accepts(t, "{}"));
}

TEST_CASE("schema: objects keep the properties' order; required ones always") {
  const auto g = schema_grammar(R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"},"c":{"type":"boolean"}},
                                   "required":["a","c"]})");
  CHECK(accepts(g, R"({"a":1,"c":true})"));
  CHECK(accepts(g, R"({"a": 1, "b": "x", "c": false})"));
  CHECK(accepts(g, "{\n  \"a\": 1,\n  \"c\": true\n}"));
  CHECK_FALSE(accepts(g, R"({"c":true,"a":1})"));   // order
  CHECK_FALSE(accepts(g, R"({"a":1})"));            // c is required
  CHECK_FALSE(accepts(g, R"({"a":1,"c":true,"d":1})"));  // no other keys
  CHECK_FALSE(accepts(g, R"({"a":"1","c":true})"));
  CHECK_FALSE(accepts(g, R"({"a":1,,"c":true})"));

  const auto optional_only = schema_grammar(R"({"type":"object","properties":{"x":{"type":"null"},"y":{"type":"null"}}})");
  CHECK(accepts(optional_only, "{}"));
  CHECK(accepts(optional_only, R"({"y":null})"));
  CHECK(accepts(optional_only, R"({"x":null,"y":null})"));
  CHECK_FALSE(accepts(optional_only, R"({"x":null,})"));
  CHECK_FALSE(accepts(optional_only, R"({,"y":null})"));

  const auto extra = schema_grammar(R"({"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],
                                       "additionalProperties":{"type":"string"}})");
  CHECK(accepts(extra, R"({"id":1})"));
  CHECK(accepts(extra, R"({"id":1,"x":"y","z":"w"})"));
  CHECK_FALSE(accepts(extra, R"({"id":1,"x":2})"));
  const auto open = schema_grammar(R"({"type":"object","properties":{"id":{"type":"integer"}},"additionalProperties":true})");
  CHECK(accepts(open, R"({"q":[1,2]})"));
  const auto closed = schema_grammar(R"({"type":"object","additionalProperties":false})");
  CHECK(accepts(closed, "{}"));
  CHECK_FALSE(accepts(closed, R"({"a":1})"));
  const auto implied = schema_grammar(R"({"required":["k"]})");
  CHECK(accepts(implied, R"({"k":[true]})"));
  CHECK_FALSE(accepts(implied, R"({})"));
}

TEST_CASE("schema: enum and const") {
  const auto g = schema_grammar(R"({"enum":["red","green",3,null,{"a":[1]}]})");
  CHECK(accepts(g, "\"red\""));
  CHECK(accepts(g, "3"));
  CHECK(accepts(g, "null"));
  CHECK(accepts(g, "{\"a\":[1]}"));
  CHECK_FALSE(accepts(g, "\"blue\""));
  CHECK_FALSE(accepts(g, "\"re\""));
  const auto typed = schema_grammar(R"({"type":"string","enum":["x",1]})");
  CHECK(accepts(typed, "\"x\""));
  CHECK_FALSE(accepts(typed, "1"));
  const auto c = schema_grammar(R"({"const":"caf\u00e9 \"q\""})");
  CHECK(accepts(c, "\"caf\xC3\xA9 \\\"q\\\"\""));
  CHECK_FALSE(accepts(c, "\"cafe\""));
}

TEST_CASE("schema: anyOf, oneOf and allOf of one schema") {
  const auto g = schema_grammar(R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":2}]})");
  CHECK(accepts(g, "5"));
  CHECK(accepts(g, "\"ab\""));
  CHECK_FALSE(accepts(g, "\"abc\""));
  const auto one = schema_grammar(R"({"oneOf":[{"const":1},{"const":2}],"description":"d"})");
  CHECK(accepts(one, "2"));
  CHECK_FALSE(accepts(one, "3"));
  const auto all = schema_grammar(R"({"allOf":[{"type":"boolean"}]})");
  CHECK(accepts(all, "false"));
  CHECK_FALSE(accepts(all, "0"));
}

TEST_CASE("schema: $ref to $defs and definitions, recursion included") {
  const auto g = schema_grammar(R"({"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},
      "children":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["value"]}},"$ref":"#/$defs/node"})");
  CHECK(accepts(g, R"({"value":1})"));
  CHECK(accepts(g, R"({"value":1,"children":[{"value":2},{"value":3,"children":[{"value":4,"children":[]}]}]})"));
  CHECK_FALSE(accepts(g, R"({"value":1,"children":[{"children":[]}]})"));
  const auto root = schema_grammar(R"({"type":"array","items":{"anyOf":[{"type":"integer"},{"$ref":"#"}]}})");
  CHECK(accepts(root, "[1,[2,[[]]],3]"));
  CHECK_FALSE(accepts(root, "[1,[\"x\"]]"));
  const auto old = schema_grammar(R"({"definitions":{"p":{"type":"string","format":"uuid"}},"type":"object",
      "properties":{"id":{"$ref":"#/definitions/p"}},"required":["id"]})");
  CHECK(accepts(old, R"({"id":"123e4567-e89b-12d3-a456-426614174000"})"));
  CHECK_FALSE(accepts(old, R"({"id":"123e4567-e89b-12d3-a456-42661417400"})"));
  check_walks(R"({"$defs":{"node":{"type":"object","properties":{"v":{"enum":[1,2]},
      "kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/node"})", 40);
}

TEST_CASE("schema: arrays with items, prefixItems and counts") {
  const auto g = schema_grammar(R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":3})");
  CHECK(accepts(g, "[1,2]"));
  CHECK(accepts(g, "[1, 2, 3]"));
  CHECK_FALSE(accepts(g, "[1]"));
  CHECK_FALSE(accepts(g, "[1,2,3,4]"));
  CHECK_FALSE(accepts(g, "[1,\"2\"]"));
  const auto tuple = schema_grammar(R"({"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false})");
  CHECK(accepts(tuple, "[]"));
  CHECK(accepts(tuple, "[\"a\"]"));
  CHECK(accepts(tuple, "[\"a\",1]"));
  CHECK_FALSE(accepts(tuple, "[\"a\",1,2]"));
  CHECK_FALSE(accepts(tuple, "[1]"));
  const auto tail = schema_grammar(R"({"type":"array","prefixItems":[{"const":"head"}],"items":{"type":"boolean"},"minItems":2})");
  CHECK(accepts(tail, "[\"head\",true,false]"));
  CHECK_FALSE(accepts(tail, "[\"head\"]"));
  CHECK_FALSE(accepts(tail, "[true,true]"));
  const auto none = schema_grammar(R"({"type":"array","maxItems":0})");
  CHECK(accepts(none, "[]"));
  CHECK(accepts(none, "[ ]"));
  CHECK_FALSE(accepts(none, "[1]"));
}

TEST_CASE("schema: string lengths count code points") {
  const auto g = schema_grammar(R"({"type":"string","minLength":2,"maxLength":3})");
  CHECK(accepts(g, "\"ab\""));
  CHECK(accepts(g, "\"\xC3\xA9\xC3\xA9\xC3\xA9\""));
  CHECK(accepts(g, "\"a\\nb\""));
  CHECK(accepts(g, "\"\\ud83d\\ude00x\""));
  CHECK_FALSE(accepts(g, "\"a\""));
  CHECK_FALSE(accepts(g, "\"abcd\""));
}

TEST_CASE("schema: formats") {
  const auto date = schema_grammar(R"({"type":"string","format":"date"})");
  CHECK(accepts(date, "\"2024-02-29\""));
  CHECK_FALSE(accepts(date, "\"2024-13-01\""));
  CHECK_FALSE(accepts(date, "\"2024-1-01\""));
  const auto time = schema_grammar(R"({"type":"string","format":"time"})");
  CHECK(accepts(time, "\"23:59:59Z\""));
  CHECK(accepts(time, "\"08:00:00.123+02:00\""));
  CHECK_FALSE(accepts(time, "\"24:00:00Z\""));
  const auto date_time = schema_grammar(R"({"type":"string","format":"date-time"})");
  CHECK(accepts(date_time, "\"2024-05-01T12:30:00Z\""));
  CHECK_FALSE(accepts(date_time, "\"2024-05-01 12:30:00Z\""));
  const auto email = schema_grammar(R"({"type":"string","format":"email"})");
  CHECK(accepts(email, "\"first.last+tag@example.co.uk\""));
  CHECK_FALSE(accepts(email, "\"no-at-sign.example.com\""));
  CHECK_FALSE(accepts(email, "\"a@localhost\""));
  const auto uuid = schema_grammar(R"({"type":"string","format":"uuid"})");
  CHECK(accepts(uuid, "\"00000000-0000-0000-0000-00000000000A\""));
  CHECK_FALSE(accepts(uuid, "\"00000000-0000-0000-0000-00000000000G\""));
  check_walks(R"({"type":"array","items":{"type":"string","format":"date-time"},"minItems":1,"maxItems":2})", 20);
  check_walks(R"({"type":"string","format":"email"})", 20);
}

TEST_CASE("schema: patterns") {
  const auto g = schema_grammar(R"({"type":"string","pattern":"^[A-Z]{2}-\\d{3,4}(x|yz)?$"})");
  CHECK(accepts(g, "\"AB-123\""));
  CHECK(accepts(g, "\"AB-1234yz\""));
  CHECK_FALSE(accepts(g, "\"ab-123\""));
  CHECK_FALSE(accepts(g, "\"AB-12\""));
  CHECK_FALSE(accepts(g, "\"AB-123y\""));
  const auto quoted = schema_grammar(R"({"type":"string","pattern":"^a\"[^b]\\\\.$"})");
  CHECK(accepts(quoted, R"("a\"c\\x")"));
  CHECK_FALSE(accepts(quoted, R"("a\"b\\x")"));
  CHECK_FALSE(accepts(quoted, R"("a\"c\\\n")"));  // '.' is not a newline
  CHECK(accepts(quoted, "\"a\\\"\xC3\xA9\\\\x\""));
  check_walks(R"({"type":"string","pattern":"^[a-z]{2,8}(-[0-9]{1,3}){0,2}\\.\\w?$"})", 20);
}

TEST_CASE("schema: integer and number bounds") {
  const auto g = schema_grammar(R"({"type":"integer","minimum":-15,"maximum":230})");
  for (int v = -30; v <= 300; ++v) {
    CAPTURE(v);
    CHECK(accepts(g, std::to_string(v)) == (v >= -15 && v <= 230));
  }
  CHECK_FALSE(accepts(g, "-0"));
  CHECK_FALSE(accepts(g, "007"));
  const auto exclusive = schema_grammar(R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10})");
  CHECK_FALSE(accepts(exclusive, "0"));
  CHECK(accepts(exclusive, "1"));
  CHECK(accepts(exclusive, "9"));
  CHECK_FALSE(accepts(exclusive, "10"));
  const auto positive = schema_grammar(R"({"type":"integer","minimum":1})");
  CHECK(accepts(positive, "1"));
  CHECK(accepts(positive, "9999999999999999"));
  CHECK_FALSE(accepts(positive, "0"));
  CHECK_FALSE(accepts(positive, "-1"));
  const auto number = schema_grammar(R"({"type":"number","minimum":-1,"exclusiveMaximum":2})");
  CHECK(accepts(number, "-1"));
  CHECK(accepts(number, "-1.000"));
  CHECK_FALSE(accepts(number, "-1.001"));
  CHECK(accepts(number, "-0.5"));
  CHECK(accepts(number, "0"));
  CHECK(accepts(number, "1.999"));
  CHECK_FALSE(accepts(number, "2"));
  CHECK_FALSE(accepts(number, "2.0"));
  CHECK_FALSE(accepts(number, "1e1"));
  const auto above = schema_grammar(R"({"type":"number","exclusiveMinimum":3})");
  CHECK_FALSE(accepts(above, "3"));
  CHECK_FALSE(accepts(above, "3.00"));
  CHECK(accepts(above, "3.01"));
  CHECK(accepts(above, "4"));
  check_walks(R"({"type":"array","items":{"type":"number","minimum":-5,"maximum":5},"minItems":3,"maxItems":3})", 30);
  check_walks(R"({"type":"array","items":{"type":"integer","minimum":100,"maximum":12345},"minItems":3,"maxItems":3})", 30);
}

TEST_CASE("schema errors name the path") {
  struct bad_case {
    const char* schema;
    errc code;
    const char* message_start;
  };
  const bad_case cases[] = {
      {R"js({"type":"object","properties":{"age":{"type":"integer","minimum":"x"}}})js", errc::invalid_argument, "schema.properties.age.minimum: "},
      {R"js({"type":"object","properties":{"age":{"type":"integer","multipleOf":2}}})js", errc::unsupported, "schema.properties.age.multipleOf: "},
      {R"js({"type":"strin"})js", errc::invalid_argument, "schema.type: "},
      {R"js({"type":"string","format":"hostname"})js", errc::unsupported, "schema.format: "},
      {R"js({"type":"string","pattern":"(?=a)"})js", errc::unsupported, "schema.pattern: "},
      {R"js({"type":"string","pattern":"a\\b"})js", errc::unsupported, "schema.pattern: "},
      {R"js({"type":"string","pattern":"(a"})js", errc::invalid_argument, "schema.pattern: "},
      {R"js({"type":"string","minLength":5,"maxLength":2})js", errc::invalid_argument, "schema.maxLength: "},
      {R"js({"type":"array","items":{"not":{}}})js", errc::unsupported, "schema.items.not: "},
      {R"js({"anyOf":[{"type":"integer"},{"$ref":"#/$defs/missing"}]})js", errc::invalid_argument, "schema.anyOf[1].$ref: "},
      {R"js({"$ref":"https://example.com/schema"})js", errc::unsupported, "schema.$ref: "},
      {R"js({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"})js", errc::invalid_argument,
       "schema.$defs.a.anyOf[0].$ref: "},
      {R"js({"allOf":[{"type":"integer"},{"minimum":1}]})js", errc::unsupported, "schema.allOf: "},
      {R"js({"type":"integer","minimum":5,"maximum":4})js", errc::invalid_argument, "schema: "},
      {R"js({"type":"number","minimum":0.5})js", errc::unsupported, "schema.minimum: "},
      {R"js({"type":"array","uniqueItems":true})js", errc::unsupported, "schema.uniqueItems: "},
      {R"js({"type":"object","properties":{"a":false}})js", errc::invalid_argument, "schema.properties.a: "},
      {R"js({"type":"object","properties":{},"required":["x"],"additionalProperties":false})js", errc::invalid_argument, "schema.required: "},
      {R"js({"type":"string","enum":[1,2]})js", errc::invalid_argument, "schema.enum: "},
      {R"js({"enum":["a"],"maxLength":3})js", errc::unsupported, "schema.maxLength: "},
      {R"js([1])js", errc::invalid_argument, "schema: "},
  };
  for (const auto& c : cases) {
    CAPTURE(c.schema);
    const error e = schema_error(c.schema);
    CHECK(e.code() == c.code);
    CHECK_MESSAGE(e.message().starts_with(c.message_start), e.message());
  }
  auto doc = json::parse(R"({"type":"integer","maximum":true,"minimum":[]})");
  grammar_builder b;
  auto r = b.json_schema(*doc, "response_format.json_schema.schema");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().message().starts_with("response_format.json_schema.schema.minimum: "));
}

TEST_CASE("random walks give valid JSON for a realistic schema") {
  const auto texts = check_walks(R"({"type":"object","properties":{
      "name":{"type":"string","maxLength":40},
      "kind":{"enum":["person","company","other"]},
      "age":{"type":["integer","null"],"minimum":0,"maximum":130},
      "score":{"type":"number"},
      "tags":{"type":"array","items":{"type":"string","minLength":1,"maxLength":12},"maxItems":4},
      "address":{"type":"object","properties":{"city":{"type":"string","maxLength":20},"zip":{"type":"string","pattern":"^[0-9]{5}$"}},
                 "required":["city"]},
      "contacts":{"type":"array","minItems":1,"maxItems":3,"items":{"type":"object","properties":{
          "email":{"type":"string","format":"email"},"primary":{"type":"boolean"}},"required":["email","primary"]}},
      "created":{"type":"string","format":"date"}},
    "required":["name","kind","age","contacts"]})",
                                 30);
  CHECK(!texts.empty());
}

TEST_CASE("random walks over any JSON object and unconstrained strings finish and parse") {
  grammar_builder b;
  const auto g = b.build(b.any_json_object());
  int finished = 0;
  for (std::uint64_t seed = 0; seed < 15; ++seed) {
    const auto text = random_walk(g, seed);
    if (!text) continue;
    ++finished;
    auto parsed = json::parse(*text);
    CHECK_MESSAGE(parsed.ok(), *text);
    CHECK((parsed.ok() && parsed->IsObject()));
  }
  CHECK(finished > 0);
  check_walks(R"({"type":"object","properties":{"s":{"type":"string"},"n":{"type":"number"},"i":{"type":"integer"}},
                   "required":["s","n","i"]})",
              40);
}

TEST_CASE("the stack limit is an error, not unbounded memory") {
  grammar_builder b;
  // (a|a)(a|a)... doubles its stacks with each byte unless they merge; they do, so use
  // distinct continuations to force growth.
  std::vector<grammar_builder::rule> alternatives;
  for (int i = 0; i < 600; ++i) alternatives.push_back(b.literal("x" + std::to_string(i) + "y"));
  const auto g = b.build(b.choice(alternatives));
  grammar_matcher_options options;
  options.max_stacks = 100;
  grammar_matcher limited(g, tokens(), options);
  CHECK_FALSE(limited.allows(byte_token('x')));
  CHECK(limited.accept(byte_token('x')).err().code() == errc::resource_exhausted);
  options.max_stacks = 1000;
  grammar_matcher enough(g, tokens(), options);
  CHECK(enough.accept_bytes("x599y").ok());
  CHECK(enough.complete());
}

TEST_CASE("memory is reclaimed when the states pass the limit, keeping the position") {
  const auto g = schema_grammar(R"({"type":"array","items":{"type":"string","maxLength":5000},"maxItems":20})");
  grammar_matcher_options options;
  options.max_states = 50;
  grammar_matcher m(g, tokens(), options);
  REQUIRE(m.accept_bytes("[\"").ok());
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    auto allowed = allowed_by_mask(m);
    std::erase_if(allowed, [](token_id t) {
      const auto text = tokens()->bytes(t);
      return text.find('"') != std::string_view::npos || text.find('\\') != std::string_view::npos;
    });
    REQUIRE(!allowed.empty());
    REQUIRE(m.accept(allowed[rng() % allowed.size()]).ok());
  }
  CHECK(m.accept_bytes("\"]").ok());
  CHECK(m.complete());
}
