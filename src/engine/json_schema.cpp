// JSON grammars: any JSON value or object, and the JSON Schema subset that grammar_builder::json_schema
// compiles (types, properties in order, arrays with counts, string lengths, formats, a
// regular-expression subset for patterns, integer ranges, enum/const, anyOf, $ref).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/engine/grammar.hpp"
#include "grammar_internal.hpp"

namespace chatai::engine {

using rule = grammar_builder::rule;

namespace {

constexpr std::int64_t largest_magnitude = 9'999'999'999'999'999;  // 16 digits
constexpr int max_schema_depth = 100;

std::bitset<256> bytes_of(std::string_view chars) {
  std::bitset<256> set;
  for (const char c : chars) set.set(static_cast<std::uint8_t>(c));
  return set;
}

std::bitset<256> byte_span(std::uint8_t first, std::uint8_t last) {
  std::bitset<256> set;
  for (unsigned b = first; b <= last; ++b) set.set(b);
  return set;
}

rule digit(grammar_builder& b) { return b.byte_range('0', '9'); }
rule hex_digit(grammar_builder& b) { return b.byte_set(byte_span('0', '9') | byte_span('a', 'f') | byte_span('A', 'F')); }
rule empty(grammar_builder& b) { return b.sequence({}); }

// One UTF-8 encoded code point from U+0080 up, well-formed (no surrogates, nothing past U+10FFFF).
rule utf8_multibyte(grammar_builder& b) {
  const rule tail = b.byte_range(0x80, 0xBF);
  return b.choice({
      b.sequence({b.byte_range(0xC2, 0xDF), tail}),
      b.sequence({b.literal("\xE0"), b.byte_range(0xA0, 0xBF), tail}),
      b.sequence({b.byte_set(byte_span(0xE1, 0xEC) | byte_span(0xEE, 0xEF)), tail, tail}),
      b.sequence({b.literal("\xED"), b.byte_range(0x80, 0x9F), tail}),
      b.sequence({b.literal("\xF0"), b.byte_range(0x90, 0xBF), tail, tail}),
      b.sequence({b.byte_range(0xF1, 0xF3), tail, tail, tail}),
      b.sequence({b.literal("\xF4"), b.byte_range(0x80, 0x8F), tail, tail}),
  });
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// How one character of a string's value is spelt inside a JSON string literal.
std::string json_spelling(std::uint32_t cp) {
  switch (cp) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default: break;
  }
  if (cp < 0x20) {
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("\\u00") + hex[cp >> 4] + hex[cp & 15];
  }
  std::string out;
  append_utf8(out, cp);
  return out;
}

}  // namespace

namespace detail {

// JSON Schema to rules. Paths in errors read like "schema.properties.age.minimum".
class json_schema_compiler {
 public:
  json_schema_compiler(grammar_builder& builder, const rapidjson::Value& root, std::string where)
      : b_(builder), root_(root), where_(std::move(where)) {}

  result<rule> compile_root() { return compile(root_, where_); }

  static rule whitespace(grammar_builder& b) {
    auto& cached = b.state_->whitespace;
    if (!cached) {
      cached = b.optional(b.choice({b.literal(" "), b.sequence({b.literal("\n"), b.repeat(b.byte_set(bytes_of(" \t")), 0, 32)})}));
    }
    return *cached;
  }

  // One character of a JSON string: unescaped UTF-8 or an escape (a surrogate pair as one).
  static rule string_char(grammar_builder& b) {
    auto& cached = b.state_->string_char;
    if (!cached) {
      std::bitset<256> plain = byte_span(0x20, 0x7F);
      plain.reset('"');
      plain.reset('\\');
      const rule hex = hex_digit(b);
      const rule non_surrogate = b.choice({
          b.sequence({b.byte_set(byte_span('0', '9') | byte_span('a', 'c') | byte_span('A', 'C') | byte_span('e', 'f') |
                                 byte_span('E', 'F')),
                      hex, hex, hex}),
          b.sequence({b.byte_set(bytes_of("dD")), b.byte_range('0', '7'), hex, hex}),
      });
      const rule pair = b.sequence({b.byte_set(bytes_of("dD")), b.byte_set(bytes_of("89abAB")), hex, hex, b.literal("\\u"),
                                    b.byte_set(bytes_of("dD")), b.byte_set(bytes_of("cdefCDEF")), hex, hex});
      const rule escape = b.sequence(
          {b.literal("\\"), b.choice({b.byte_set(bytes_of("\"\\/bfnrt")), b.sequence({b.literal("u"), b.choice({non_surrogate, pair})})})});
      cached = b.choice({b.byte_set(plain), utf8_multibyte(b), escape});
    }
    return *cached;
  }

  static rule json_string(grammar_builder& b) {
    auto& cached = b.state_->json_string;
    if (!cached) cached = b.sequence({b.literal("\""), b.repeat(string_char(b), 0, -1), b.literal("\"")});
    return *cached;
  }

  static rule json_integer(grammar_builder& b) {
    auto& cached = b.state_->json_integer;
    if (!cached) {
      // No "-0": it is a number but reads as a float.
      cached = b.choice({b.literal("0"), b.sequence({b.optional(b.literal("-")), b.byte_range('1', '9'), b.repeat(digit(b), 0, 15)})});
    }
    return *cached;
  }

  static rule json_number(grammar_builder& b) {
    auto& cached = b.state_->json_number;
    if (!cached) {
      const rule fraction = b.sequence({b.literal("."), b.repeat(digit(b), 1, 16)});
      const rule exponent =
          b.sequence({b.byte_set(bytes_of("eE")), b.optional(b.byte_set(bytes_of("+-"))), b.repeat(digit(b), 1, 3)});
      const rule integer_part = b.sequence(
          {b.optional(b.literal("-")), b.choice({b.literal("0"), b.sequence({b.byte_range('1', '9'), b.repeat(digit(b), 0, 15)})})});
      cached = b.sequence({integer_part, b.optional(fraction), b.optional(exponent)});
    }
    return *cached;
  }

  // Any value, and the object rule it uses (which any_json_object() returns).
  static rule any_value(grammar_builder& b) {
    auto& cached = b.state_->any_value;
    if (!cached) {
      const rule value = b.forward();
      const rule ws = whitespace(b);
      const rule member = b.sequence({json_string(b), ws, b.literal(":"), ws, value, ws});
      const rule object = b.sequence({b.literal("{"), ws,
                                      b.optional(b.sequence({member, b.repeat(b.sequence({b.literal(","), ws, member}), 0, -1)})),
                                      b.literal("}")});
      const rule element = b.sequence({value, ws});
      const rule array = b.sequence({b.literal("["), ws,
                                     b.optional(b.sequence({element, b.repeat(b.sequence({b.literal(","), ws, element}), 0, -1)})),
                                     b.literal("]")});
      b.define(value, b.choice({object, array, json_string(b), json_number(b), b.literal("true"), b.literal("false"),
                                b.literal("null")}));
      b.state_->any_object = object;
      cached = value;
    }
    return *cached;
  }

 private:
  using bound = std::optional<std::int64_t>;

  error invalid(const std::string& path, std::string_view what) const {
    return error(errc::invalid_argument, path + ": " + std::string(what));
  }
  error unsupported(const std::string& path, std::string_view what) const {
    return error(errc::unsupported, path + ": " + std::string(what));
  }

  static std::string member_path(const std::string& path, std::string_view key) { return path + "." + std::string(key); }
  static std::string index_path(const std::string& path, std::string_view key, std::size_t i) {
    return path + "." + std::string(key) + "[" + std::to_string(i) + "]";
  }

  static bool has(const rapidjson::Value& schema, const char* key) { return schema.HasMember(key); }

  result<rule> compile(const rapidjson::Value& schema, const std::string& path) {
    if (depth_ >= max_schema_depth) return invalid(path, "schemas nested more than " + std::to_string(max_schema_depth) + " levels deep");
    ++depth_;
    auto r = compile_schema(schema, path);
    --depth_;
    return r;
  }

  result<rule> compile_schema(const rapidjson::Value& schema, const std::string& path) {
    if (schema.IsBool()) {
      if (schema.GetBool()) return any_value(b_);
      return invalid(path, "the schema false accepts no value");
    }
    if (!schema.IsObject()) return invalid(path, "a schema must be an object or a boolean, not " + std::string(json::type_name(schema)));

    static constexpr std::string_view refused[] = {
        "not", "if", "then", "else", "multipleOf", "patternProperties", "propertyNames", "minProperties", "maxProperties",
        "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties", "unevaluatedItems", "contains",
        "minContains", "maxContains", "$dynamicRef", "$recursiveRef"};
    static constexpr std::string_view type_keywords[] = {
        "properties", "required", "additionalProperties", "items", "prefixItems", "additionalItems", "minItems",
        "maxItems", "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum"};
    static constexpr std::string_view combinators[] = {"enum", "const", "anyOf", "oneOf", "allOf", "$ref"};

    std::vector<std::string_view> present_type_keywords, present_combinators;
    for (auto it = schema.MemberBegin(); it != schema.MemberEnd(); ++it) {
      const std::string_view key(it->name.GetString(), it->name.GetStringLength());
      if (std::find(std::begin(refused), std::end(refused), key) != std::end(refused))
        return unsupported(member_path(path, key), "the keyword " + std::string(key) + " is not supported");
      if (key == "uniqueItems" && !(it->value.IsBool() && !it->value.GetBool()))
        return unsupported(member_path(path, key), "uniqueItems is not supported");
      if (std::find(std::begin(type_keywords), std::end(type_keywords), key) != std::end(type_keywords))
        present_type_keywords.push_back(key);
      if (std::find(std::begin(combinators), std::end(combinators), key) != std::end(combinators))
        present_combinators.push_back(key);
    }

    bool nullable = false;
    if (const auto it = schema.FindMember("nullable"); it != schema.MemberEnd()) {
      if (!it->value.IsBool()) return invalid(member_path(path, "nullable"), "must be a boolean");
      nullable = it->value.GetBool();
    }

    auto with_null = [&](result<rule> r) -> result<rule> {
      if (!r || !nullable) return r;
      return b_.choice({*r, b_.literal("null")});
    };

    if (!present_combinators.empty()) {
      const std::string_view combinator = present_combinators.front();
      if (present_combinators.size() > 1)
        return unsupported(member_path(path, present_combinators[1]),
                           std::string(present_combinators[1]) + " beside " + std::string(combinator) + " is not supported");
      const bool is_enum = combinator == "enum" || combinator == "const";
      if (!present_type_keywords.empty())
        return unsupported(member_path(path, present_type_keywords.front()),
                           std::string(present_type_keywords.front()) + " beside " + std::string(combinator) + " is not supported");
      if (!is_enum && has(schema, "type"))
        return unsupported(member_path(path, "type"), "type beside " + std::string(combinator) + " is not supported");
      if (is_enum) return with_null(compile_enum(schema, path, combinator));
      if (combinator == "$ref") return with_null(compile_ref(schema["$ref"], member_path(path, "$ref")));
      const rapidjson::Value& list = schema.FindMember(rapidjson::StringRef(combinator.data(), combinator.size()))->value;
      const std::string list_path = member_path(path, combinator);
      if (!list.IsArray() || list.Empty()) return invalid(list_path, "must be a non-empty array of schemas");
      if (combinator == "allOf") {
        if (list.Size() > 1) return unsupported(list_path, "allOf of more than one schema is not supported");
        return with_null(compile(list[0], index_path(path, combinator, 0)));
      }
      std::vector<rule> alternatives;
      for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
        auto r = compile(list[i], index_path(path, combinator, i));
        if (!r) return std::move(r).err();
        alternatives.push_back(*r);
      }
      return with_null(b_.choice(std::move(alternatives)));
    }

    auto types = read_types(schema, path, present_type_keywords);
    if (!types) return std::move(types).err();
    if (nullable && !types->empty() && std::find(types->begin(), types->end(), "null") == types->end()) types->push_back("null");
    if (types->empty()) return any_value(b_);
    std::vector<rule> alternatives;
    for (const std::string& type : *types) {
      result<rule> r = compile_type(type, schema, path);
      if (!r) return std::move(r).err();
      alternatives.push_back(*r);
    }
    return b_.choice(std::move(alternatives));
  }

  // The types a schema allows: its type keyword, or the types its keywords imply; none: any value.
  result<std::vector<std::string>> read_types(const rapidjson::Value& schema, const std::string& path,
                                              const std::vector<std::string_view>& keywords) {
    static constexpr std::string_view known[] = {"string", "number", "integer", "boolean", "null", "object", "array"};
    std::vector<std::string> types;
    const auto it = schema.FindMember("type");
    if (it == schema.MemberEnd()) {
      auto implies = [&](std::initializer_list<std::string_view> names) {
        return std::any_of(keywords.begin(), keywords.end(),
                           [&](std::string_view k) { return std::find(names.begin(), names.end(), k) != names.end(); });
      };
      if (implies({"properties", "required", "additionalProperties"})) types.emplace_back("object");
      if (implies({"items", "prefixItems", "additionalItems", "minItems", "maxItems"})) types.emplace_back("array");
      if (implies({"minLength", "maxLength", "pattern", "format"})) types.emplace_back("string");
      if (implies({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) types.emplace_back("number");
      return types;
    }
    const std::string type_path = member_path(path, "type");
    auto add = [&](const rapidjson::Value& v) -> status {
      if (!v.IsString()) return invalid(type_path, "must be a type name or an array of them");
      const std::string name(v.GetString(), v.GetStringLength());
      if (std::find(std::begin(known), std::end(known), name) == std::end(known))
        return invalid(type_path, "unknown type \"" + name + "\"");
      if (std::find(types.begin(), types.end(), name) == types.end()) types.push_back(name);
      return {};
    };
    if (it->value.IsArray()) {
      if (it->value.Empty()) return invalid(type_path, "must not be an empty array");
      for (const auto& v : it->value.GetArray()) CHATAI_RETURN_IF_ERROR(add(v));
    } else {
      CHATAI_RETURN_IF_ERROR(add(it->value));
    }
    // "number" includes the integers.
    if (std::find(types.begin(), types.end(), "number") != types.end())
      std::erase(types, std::string("integer"));
    return types;
  }

  result<rule> compile_type(const std::string& type, const rapidjson::Value& schema, const std::string& path) {
    if (type == "null") return b_.literal("null");
    if (type == "boolean") return b_.choice({b_.literal("true"), b_.literal("false")});
    if (type == "string") return compile_string(schema, path);
    if (type == "integer") return compile_integer(schema, path);
    if (type == "number") return compile_number(schema, path);
    if (type == "object") return compile_object(schema, path);
    return compile_array(schema, path);
  }

  static bool value_has_type(const rapidjson::Value& v, const std::string& type) {
    if (type == "null") return v.IsNull();
    if (type == "boolean") return v.IsBool();
    if (type == "string") return v.IsString();
    if (type == "object") return v.IsObject();
    if (type == "array") return v.IsArray();
    if (type == "number") return v.IsNumber();
    if (v.IsInt64() || v.IsUint64()) return true;
    return v.IsDouble() && std::isfinite(v.GetDouble()) && std::floor(v.GetDouble()) == v.GetDouble();
  }

  result<rule> compile_enum(const rapidjson::Value& schema, const std::string& path, std::string_view keyword) {
    auto types = read_types(schema, path, {});
    if (!types) return std::move(types).err();
    const std::string key_path = member_path(path, keyword);
    std::vector<const rapidjson::Value*> values;
    if (keyword == "const") {
      values.push_back(&schema["const"]);
    } else {
      const rapidjson::Value& list = schema["enum"];
      if (!list.IsArray() || list.Empty()) return invalid(key_path, "must be a non-empty array");
      for (const auto& v : list.GetArray()) values.push_back(&v);
    }
    std::vector<rule> alternatives;
    for (const rapidjson::Value* v : values) {
      const bool typed = types->empty() || std::any_of(types->begin(), types->end(), [&](const std::string& t) {
                           return value_has_type(*v, t);
                         });
      if (typed) alternatives.push_back(b_.literal(json::to_string(*v)));
    }
    if (alternatives.empty()) return invalid(key_path, "no value has the schema's type");
    return b_.choice(std::move(alternatives));
  }

  // "#", "#/$defs/name", "#/definitions/name" or any other JSON pointer into this document.
  result<rule> compile_ref(const rapidjson::Value& ref, const std::string& path) {
    if (!ref.IsString()) return invalid(path, "must be a string");
    const std::string target(ref.GetString(), ref.GetStringLength());
    if (target.empty() || target[0] != '#')
      return unsupported(path, "only references within the schema (\"#/$defs/...\") are supported, not \"" + target + "\"");
    if (const auto found = refs_.find(target); found != refs_.end()) {
      const auto active = std::find(context_.rbegin(), context_.rend(), target);
      if (active != context_.rend() && std::find(context_.rbegin(), active, std::string()) == active)
        return invalid(path, "\"" + target + "\" refers back to itself before any input is read");
      return found->second;
    }
    const rapidjson::Value* at = &root_;
    std::string target_path = where_;
    std::string_view pointer = std::string_view(target).substr(1);
    while (!pointer.empty()) {
      if (pointer[0] != '/') return invalid(path, "\"" + target + "\" is not a JSON pointer");
      pointer.remove_prefix(1);
      const std::size_t slash = pointer.find('/');
      std::string token(pointer.substr(0, slash));
      pointer = slash == std::string_view::npos ? std::string_view() : pointer.substr(slash);
      for (std::size_t i = 0; (i = token.find('~', i)) != std::string::npos; ++i) {
        if (i + 1 < token.size() && token[i + 1] == '0') token.replace(i, 2, "~");
        else if (i + 1 < token.size() && token[i + 1] == '1') token.replace(i, 2, "/");
        else return invalid(path, "\"" + target + "\" is not a JSON pointer");
      }
      if (at->IsObject()) {
        const auto member = at->FindMember(rapidjson::StringRef(token.data(), token.size()));
        if (member == at->MemberEnd()) return invalid(path, "\"" + target + "\" names nothing in the schema");
        at = &member->value;
      } else if (at->IsArray() && !token.empty() && std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                 token.size() < 10 && std::stoul(token) < at->Size()) {
        at = &(*at)[static_cast<rapidjson::SizeType>(std::stoul(token))];
      } else {
        return invalid(path, "\"" + target + "\" names nothing in the schema");
      }
      target_path += "." + token;
    }
    const rule forward = b_.forward();
    refs_.emplace(target, forward);
    context_.push_back(target);
    auto body = compile(*at, target_path);
    context_.pop_back();
    if (!body) return std::move(body).err();
    b_.define(forward, *body);
    return forward;
  }

  // A non-negative integer keyword, or `fallback` when absent.
  result<std::int64_t> count_keyword(const rapidjson::Value& schema, const std::string& path, const char* key, std::int64_t fallback) {
    const auto it = schema.FindMember(key);
    if (it == schema.MemberEnd()) return fallback;
    const rapidjson::Value& v = it->value;
    if (v.IsUint64()) return static_cast<std::int64_t>(std::min<std::uint64_t>(v.GetUint64(), std::numeric_limits<std::int32_t>::max()));
    if (v.IsDouble() && v.GetDouble() >= 0 && std::floor(v.GetDouble()) == v.GetDouble())
      return static_cast<std::int64_t>(std::min(v.GetDouble(), double(std::numeric_limits<std::int32_t>::max())));
    return invalid(member_path(path, key), "must be a non-negative integer");
  }

  // ---- strings ----

  result<rule> compile_string(const rapidjson::Value& schema, const std::string& path) {
    const rule quote = b_.literal("\"");
    auto min_length = count_keyword(schema, path, "minLength", 0);
    if (!min_length) return std::move(min_length).err();
    auto max_length = count_keyword(schema, path, "maxLength", -1);
    if (!max_length) return std::move(max_length).err();
    if (*max_length >= 0 && *max_length < *min_length) return invalid(member_path(path, "maxLength"), "is below minLength");
    const bool has_lengths = has(schema, "minLength") || has(schema, "maxLength");

    if (const auto it = schema.FindMember("format"); it != schema.MemberEnd()) {
      const std::string format_path = member_path(path, "format");
      if (!it->value.IsString()) return invalid(format_path, "must be a string");
      if (has_lengths || has(schema, "pattern"))
        return unsupported(format_path, "format beside minLength, maxLength or pattern is not supported");
      const std::string_view format(it->value.GetString(), it->value.GetStringLength());
      auto content = compile_format(format);
      if (!content) return unsupported(format_path, "the format \"" + std::string(format) + "\" is not supported");
      return b_.sequence({quote, *content, quote});
    }
    if (const auto it = schema.FindMember("pattern"); it != schema.MemberEnd()) {
      const std::string pattern_path = member_path(path, "pattern");
      if (!it->value.IsString()) return invalid(pattern_path, "must be a string");
      if (has_lengths) return unsupported(pattern_path, "pattern beside minLength or maxLength is not supported");
      auto content = compile_pattern(std::string_view(it->value.GetString(), it->value.GetStringLength()), pattern_path);
      if (!content) return std::move(content).err();
      return b_.sequence({quote, *content, quote});
    }
    if (!has_lengths) return json_string(b_);  // one rule for every plain string, so that their masks are shared
    return b_.sequence({quote, b_.repeat(string_char(b_), *min_length, *max_length), quote});
  }

  std::optional<rule> compile_format(std::string_view format) {
    grammar_builder& b = b_;
    const rule d = digit(b);
    auto two = [&](char first_low, char first_high, char second_high) {
      return b.sequence({b.byte_range(static_cast<std::uint8_t>(first_low), static_cast<std::uint8_t>(first_high)),
                         b.byte_range('0', static_cast<std::uint8_t>(second_high))});
    };
    auto date = [&] {
      const rule month = b.choice({b.sequence({b.literal("0"), b.byte_range('1', '9')}), b.sequence({b.literal("1"), b.byte_range('0', '2')})});
      const rule day = b.choice({b.sequence({b.literal("0"), b.byte_range('1', '9')}), two('1', '2', '9'),
                                 b.sequence({b.literal("3"), b.byte_range('0', '1')})});
      return b.sequence({b.repeat(d, 4, 4), b.literal("-"), month, b.literal("-"), day});
    };
    auto time = [&] {
      const rule hour = b.choice({two('0', '1', '9'), b.sequence({b.literal("2"), b.byte_range('0', '3')})});
      const rule minute = two('0', '5', '9');
      const rule second = b.choice({minute, b.literal("60")});
      const rule offset = b.choice({b.literal("Z"), b.sequence({b.byte_set(bytes_of("+-")), hour, b.literal(":"), minute})});
      return b.sequence({hour, b.literal(":"), minute, b.literal(":"), second,
                         b.optional(b.sequence({b.literal("."), b.repeat(d, 1, 9)})), offset});
    };
    if (format == "date") return date();
    if (format == "time") return time();
    if (format == "date-time") return b.sequence({date(), b.literal("T"), time()});
    if (format == "uuid") {
      const rule h = hex_digit(b);
      const rule dash = b.literal("-");
      return b.sequence({b.repeat(h, 8, 8), dash, b.repeat(h, 4, 4), dash, b.repeat(h, 4, 4), dash, b.repeat(h, 4, 4), dash,
                         b.repeat(h, 12, 12)});
    }
    if (format == "email") {
      const rule atom = b.repeat(b.byte_set(byte_span('a', 'z') | byte_span('A', 'Z') | byte_span('0', '9') | bytes_of("!#$%&'*+/=?^_`{|}~-")), 1, 64);
      const rule alnum = b.byte_set(byte_span('a', 'z') | byte_span('A', 'Z') | byte_span('0', '9'));
      const rule label = b.sequence({alnum, b.optional(b.sequence({b.repeat(b.byte_set(byte_span('a', 'z') | byte_span('A', 'Z') |
                                                                                            byte_span('0', '9') | bytes_of("-")),
                                                                               0, 61),
                                                                      alnum}))});
      const rule dot = b.literal(".");
      return b.sequence({atom, b.repeat(b.sequence({dot, atom}), 0, 8), b.literal("@"), label,
                         b.repeat(b.sequence({dot, label}), 1, 8)});
    }
    return std::nullopt;
  }

  // ---- patterns: a regular-expression subset ----

  // A set of code points: ASCII ones listed, and either all or none of the rest.
  struct char_class {
    std::bitset<128> ascii;
    std::vector<std::uint32_t> others;  // single non-ASCII code points (when !all_others)
    bool all_others = false;

    void negate() {
      ascii.flip();
      all_others = !all_others;
    }
  };

  class pattern_parser {
   public:
    pattern_parser(json_schema_compiler& c, std::string_view text, const std::string& path) : c_(c), text_(text), path_(path) {}

    result<rule> parse() {
      if (!text_.empty() && text_[0] == '^') ++pos_;
      auto r = alternation();
      if (!r) return r;
      if (pos_ < text_.size()) return c_.invalid(path_, "unbalanced ')' at offset " + std::to_string(pos_));
      return r;
    }

   private:
    bool at_end_anchor() const { return pos_ + 1 == text_.size() && text_[pos_] == '$'; }

    result<rule> alternation() {
      std::vector<rule> alternatives;
      for (;;) {
        auto r = concatenation();
        if (!r) return r;
        alternatives.push_back(*r);
        if (pos_ < text_.size() && text_[pos_] == '|') {
          ++pos_;
          continue;
        }
        return c_.b_.choice(std::move(alternatives));
      }
    }

    result<rule> concatenation() {
      std::vector<rule> parts;
      while (pos_ < text_.size() && text_[pos_] != '|' && text_[pos_] != ')') {
        if (at_end_anchor()) {
          ++pos_;
          break;
        }
        auto a = atom();
        if (!a) return a;
        auto q = quantified(*a);
        if (!q) return q;
        parts.push_back(*q);
      }
      return c_.b_.sequence(std::move(parts));
    }

    result<rule> quantified(rule item) {
      if (pos_ >= text_.size()) return item;
      std::int64_t min = 0, max = 0;
      const char c = text_[pos_];
      if (c == '?') {
        min = 0, max = 1;
      } else if (c == '*') {
        min = 0, max = -1;
      } else if (c == '+') {
        min = 1, max = -1;
      } else if (c == '{') {
        const std::size_t close = text_.find('}', pos_);
        if (close == std::string_view::npos) return c_.invalid(path_, "unclosed '{' at offset " + std::to_string(pos_));
        const std::string_view inside = text_.substr(pos_ + 1, close - pos_ - 1);
        const std::size_t comma = inside.find(',');
        auto number = [](std::string_view s) -> std::optional<std::int64_t> {
          if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char d) { return d >= '0' && d <= '9'; })) return std::nullopt;
          return std::stoll(std::string(s));
        };
        const auto low = number(inside.substr(0, comma));
        if (!low) return c_.invalid(path_, "bad repetition {" + std::string(inside) + "}");
        min = max = *low;
        if (comma != std::string_view::npos) {
          const std::string_view high_text = inside.substr(comma + 1);
          if (high_text.empty()) {
            max = -1;
          } else {
            const auto high = number(high_text);
            if (!high || *high < *low) return c_.invalid(path_, "bad repetition {" + std::string(inside) + "}");
            max = *high;
          }
        }
        pos_ = close;
      } else {
        return item;
      }
      ++pos_;
      if (pos_ < text_.size() && text_[pos_] == '?') ++pos_;  // lazy: the same strings
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '*' || text_[pos_] == '?' || text_[pos_] == '{'))
        return c_.unsupported(path_, "a quantifier after a quantifier is not supported");
      return c_.b_.repeat(item, min, max);
    }

    result<rule> atom() {
      const char c = text_[pos_];
      if (c == '(') {
        ++pos_;
        if (text_.substr(pos_, 2) == "?:") {
          pos_ += 2;
        } else if (pos_ < text_.size() && text_[pos_] == '?') {
          return c_.unsupported(path_, "lookaround and named groups are not supported");
        }
        auto inner = alternation();
        if (!inner) return inner;
        if (pos_ >= text_.size() || text_[pos_] != ')') return c_.invalid(path_, "unclosed '('");
        ++pos_;
        return inner;
      }
      if (c == '[') return bracket();
      if (c == '.') {
        ++pos_;
        char_class any;
        any.negate();
        any.ascii.reset('\n');
        return c_.class_rule(any);
      }
      if (c == '^' || c == '$') return c_.unsupported(path_, "anchors are only supported at the start and the end");
      if (c == '*' || c == '+' || c == '?' || c == '{') return c_.invalid(path_, "nothing to repeat at offset " + std::to_string(pos_));
      if (c == '\\') {
        auto cls = escape(false);
        if (!cls) return std::move(cls).err();
        return c_.class_rule(*cls);
      }
      auto cp = code_point();
      if (!cp) return std::move(cp).err();
      return c_.b_.literal(json_spelling(*cp));
    }

    // One UTF-8 code point of the pattern, as itself.
    result<std::uint32_t> code_point() {
      const auto lead = static_cast<std::uint8_t>(text_[pos_]);
      const int length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
      if (length == 0 || pos_ + static_cast<std::size_t>(length) > text_.size()) return c_.invalid(path_, "is not UTF-8");
      std::uint32_t cp = length == 1 ? lead : lead & (0x7Fu >> length);
      for (int k = 1; k < length; ++k) cp = cp << 6 | (static_cast<std::uint8_t>(text_[pos_ + static_cast<std::size_t>(k)]) & 0x3F);
      pos_ += static_cast<std::size_t>(length);
      return cp;
    }

    // After a backslash: a class (\d, \w, \s and their negations) or one character.
    result<char_class> escape(bool in_bracket) {
      ++pos_;
      if (pos_ >= text_.size()) return c_.invalid(path_, "ends with a backslash");
      const char e = text_[pos_++];
      char_class cls;
      auto digits = [](char_class& k) { for (char ch = '0'; ch <= '9'; ++ch) k.ascii.set(static_cast<std::size_t>(ch)); };
      auto word = [&](char_class& k) {
        digits(k);
        for (char ch = 'a'; ch <= 'z'; ++ch) k.ascii.set(static_cast<std::size_t>(ch));
        for (char ch = 'A'; ch <= 'Z'; ++ch) k.ascii.set(static_cast<std::size_t>(ch));
        k.ascii.set('_');
      };
      auto space = [](char_class& k) { for (const char ch : std::string_view(" \t\n\r\f\v")) k.ascii.set(static_cast<std::size_t>(ch)); };
      switch (e) {
        case 'd': digits(cls); return cls;
        case 'D': digits(cls); cls.negate(); return cls;
        case 'w': word(cls); return cls;
        case 'W': word(cls); cls.negate(); return cls;
        case 's': space(cls); return cls;
        case 'S': space(cls); cls.negate(); return cls;
        case 'n': cls.ascii.set('\n'); return cls;
        case 't': cls.ascii.set('\t'); return cls;
        case 'r': cls.ascii.set('\r'); return cls;
        case 'f': cls.ascii.set('\f'); return cls;
        case 'v': cls.ascii.set('\v'); return cls;
        case 'u': {
          if (pos_ + 4 > text_.size()) return c_.invalid(path_, "\\u needs four hex digits");
          std::uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = text_[pos_++];
            const int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (v < 0) return c_.invalid(path_, "\\u needs four hex digits");
            cp = cp << 4 | static_cast<std::uint32_t>(v);
          }
          if (cp >= 0xD800 && cp < 0xE000) return c_.unsupported(path_, "surrogate escapes are not supported");
          if (cp < 0x80) cls.ascii.set(cp);
          else cls.others.push_back(cp);
          return cls;
        }
        default: break;
      }
      if (in_bracket && e == 'b') {
        cls.ascii.set('\b');
        return cls;
      }
      if (std::string_view("\\/.-[]{}()*+?|^$").find(e) != std::string_view::npos) {
        cls.ascii.set(static_cast<std::size_t>(e));
        return cls;
      }
      return c_.unsupported(path_, std::string("the escape \\") + e + " is not supported");
    }

    result<rule> bracket() {
      ++pos_;
      char_class cls;
      bool negated = false;
      if (pos_ < text_.size() && text_[pos_] == '^') {
        negated = true;
        ++pos_;
      }
      bool first = true;
      for (;;) {
        if (pos_ >= text_.size()) return c_.invalid(path_, "unclosed '['");
        if (text_[pos_] == ']' && !first) {
          ++pos_;
          break;
        }
        first = false;
        if (text_[pos_] == '\\') {
          auto k = escape(true);
          if (!k) return std::move(k).err();
          cls.ascii |= k->ascii;
          cls.others.insert(cls.others.end(), k->others.begin(), k->others.end());
          if (k->all_others) {
            if (negated) return c_.unsupported(path_, "\\D, \\W or \\S inside [^...] is not supported");
            cls.all_others = true;
          }
          continue;
        }
        auto low = code_point();
        if (!low) return std::move(low).err();
        std::uint32_t high = *low;
        if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
          ++pos_;
          if (text_[pos_] == '\\') return c_.unsupported(path_, "an escape as the end of a range is not supported");
          auto h = code_point();
          if (!h) return std::move(h).err();
          high = *h;
          if (high < *low) return c_.invalid(path_, "a range goes backwards");
        }
        if (high >= 0x80 && high != *low) return c_.unsupported(path_, "ranges beyond ASCII are not supported");
        if (*low >= 0x80) {
          cls.others.push_back(*low);
        } else {
          for (std::uint32_t ch = *low; ch <= high; ++ch) cls.ascii.set(ch);
        }
      }
      if (negated) {
        if (!cls.others.empty()) return c_.unsupported(path_, "non-ASCII characters inside [^...] are not supported");
        cls.negate();
      }
      return c_.class_rule(cls);
    }

    json_schema_compiler& c_;
    std::string_view text_;
    const std::string& path_;
    std::size_t pos_ = 0;
  };

  // The JSON spellings of the characters of a class.
  rule class_rule(const char_class& cls) {
    std::bitset<256> plain;
    std::vector<rule> alternatives;
    for (std::uint32_t ch = 0; ch < 128; ++ch) {
      if (!cls.ascii.test(ch)) continue;
      if (ch >= 0x20 && ch != '"' && ch != '\\') {
        plain.set(ch);
      } else {
        alternatives.push_back(b_.literal(json_spelling(ch)));
      }
    }
    if (plain.any()) alternatives.push_back(b_.byte_set(plain));
    if (cls.all_others) {
      alternatives.push_back(utf8_multibyte(b_));
    } else {
      for (const std::uint32_t cp : cls.others) alternatives.push_back(b_.literal(json_spelling(cp)));
    }
    if (alternatives.empty()) return b_.byte_set({});  // matches nothing
    return b_.choice(std::move(alternatives));
  }

  result<rule> compile_pattern(std::string_view pattern, const std::string& path) {
    pattern_parser parser(*this, pattern, path);
    return parser.parse();
  }

  // ---- numbers ----

  // The bounds of a number schema. Exclusive bounds are flagged; draft 4's boolean
  // exclusiveMinimum/exclusiveMaximum turn minimum/maximum exclusive.
  struct number_bounds {
    std::optional<double> low, high;
    bool low_exclusive = false, high_exclusive = false;
  };

  result<number_bounds> read_bounds(const rapidjson::Value& schema, const std::string& path) {
    number_bounds bounds;
    auto number = [&](const char* key) -> result<std::optional<double>> {
      const auto it = schema.FindMember(key);
      if (it == schema.MemberEnd() || it->value.IsBool()) return std::optional<double>();
      if (!it->value.IsNumber()) return invalid(member_path(path, key), "must be a number");
      return std::optional<double>(it->value.GetDouble());
    };
    auto flag = [&](const char* key) {
      const auto it = schema.FindMember(key);
      return it != schema.MemberEnd() && it->value.IsBool() && it->value.GetBool();
    };
    auto minimum = number("minimum"), maximum = number("maximum");
    auto exclusive_minimum = number("exclusiveMinimum"), exclusive_maximum = number("exclusiveMaximum");
    if (!minimum) return std::move(minimum).err();
    if (!maximum) return std::move(maximum).err();
    if (!exclusive_minimum) return std::move(exclusive_minimum).err();
    if (!exclusive_maximum) return std::move(exclusive_maximum).err();
    bounds.low = *minimum;
    bounds.low_exclusive = bounds.low && flag("exclusiveMinimum");
    if (*exclusive_minimum && (!bounds.low || **exclusive_minimum >= *bounds.low)) {
      bounds.low = *exclusive_minimum;
      bounds.low_exclusive = true;
    }
    bounds.high = *maximum;
    bounds.high_exclusive = bounds.high && flag("exclusiveMaximum");
    if (*exclusive_maximum && (!bounds.high || **exclusive_maximum <= *bounds.high)) {
      bounds.high = *exclusive_maximum;
      bounds.high_exclusive = true;
    }
    return bounds;
  }

  // The integers within [low, high], spelt without leading zeros. low <= high, both within 16 digits.
  rule integer_range(std::int64_t low, std::int64_t high) {
    std::vector<rule> alternatives;
    if (high >= 0) alternatives.push_back(natural_range(std::max<std::int64_t>(low, 0), high));
    if (low < 0) alternatives.push_back(b_.sequence({b_.literal("-"), natural_range(std::max<std::int64_t>(1, -high), -low)}));
    return b_.choice(std::move(alternatives));
  }

  // The integers within [low, high] with 0 <= low <= high.
  rule natural_range(std::int64_t low, std::int64_t high) {
    std::vector<rule> alternatives;
    std::int64_t power = 1;  // 10^(digits - 1)
    for (int digits = 1; digits <= 16; ++digits, power *= 10) {
      const std::int64_t from = std::max(low, digits == 1 ? 0 : power);
      const std::int64_t to = std::min(high, power * 10 - 1);
      if (from <= to) alternatives.push_back(same_length_range(std::to_string(from), std::to_string(to)));
    }
    return b_.choice(std::move(alternatives));
  }

  // The digit strings from `low` to `high`, both of one length.
  rule same_length_range(std::string_view low, std::string_view high) {
    if (low.empty()) return empty(b_);
    if (low == high) return b_.literal(low);
    std::size_t common = 0;
    while (low[common] == high[common]) ++common;
    if (common > 0) return b_.sequence({b_.literal(low.substr(0, common)), same_length_range(low.substr(common), high.substr(common))});
    const std::size_t rest = low.size() - 1;
    const bool low_full = low.find_first_not_of('0', 1) == std::string_view::npos;
    const bool high_full = high.find_first_not_of('9', 1) == std::string_view::npos;
    const char first_full = low_full ? low[0] : static_cast<char>(low[0] + 1);
    const char last_full = high_full ? high[0] : static_cast<char>(high[0] - 1);
    std::vector<rule> alternatives;
    if (!low_full) alternatives.push_back(b_.sequence({b_.literal(low.substr(0, 1)), same_length_range(low.substr(1), std::string(rest, '9'))}));
    if (first_full <= last_full)
      alternatives.push_back(b_.sequence({b_.byte_range(static_cast<std::uint8_t>(first_full), static_cast<std::uint8_t>(last_full)),
                                          b_.repeat(digit(b_), static_cast<std::int64_t>(rest), static_cast<std::int64_t>(rest))}));
    if (!high_full) alternatives.push_back(b_.sequence({b_.literal(high.substr(0, 1)), same_length_range(std::string(rest, '0'), high.substr(1))}));
    return b_.choice(std::move(alternatives));
  }

  result<rule> compile_integer(const rapidjson::Value& schema, const std::string& path) {
    auto bounds = read_bounds(schema, path);
    if (!bounds) return std::move(bounds).err();
    if (!bounds->low && !bounds->high) return json_integer(b_);
    std::int64_t low = -largest_magnitude, high = largest_magnitude;
    if (bounds->low) {
      const double l = bounds->low_exclusive ? std::floor(*bounds->low) + 1 : std::ceil(*bounds->low);
      low = static_cast<std::int64_t>(std::clamp(l, -double(largest_magnitude), double(largest_magnitude) + 1));
    }
    if (bounds->high) {
      const double h = bounds->high_exclusive ? std::ceil(*bounds->high) - 1 : std::floor(*bounds->high);
      high = static_cast<std::int64_t>(std::clamp(h, -double(largest_magnitude) - 1, double(largest_magnitude)));
    }
    if (low > high) return invalid(path, "no integer lies between the minimum and the maximum (within 16 digits)");
    return integer_range(low, high);
  }

  // Non-negative numbers x with low <= x (or <) and x <= high (or <), where low and high are
  // whole; no exponent. Nothing when the range is empty.
  std::optional<rule> natural_number_range(std::int64_t low, bool low_exclusive, std::optional<std::int64_t> high, bool high_exclusive) {
    grammar_builder& b = b_;
    const rule d = digit(b);
    const rule fraction = b.optional(b.sequence({b.literal("."), b.repeat(d, 1, 16)}));
    const rule nonzero_fraction = b.sequence({b.literal("."), b.repeat(d, 0, 15), b.byte_range('1', '9')});
    const rule zero_fraction = b.optional(b.sequence({b.literal("."), b.repeat(b.literal("0"), 1, 16)}));
    if (high && *high < low) return std::nullopt;
    if (high && *high == low) {
      if (low_exclusive || high_exclusive) return std::nullopt;
      return b.sequence({b.literal(std::to_string(low)), zero_fraction});
    }
    std::vector<rule> alternatives;
    alternatives.push_back(b.sequence({b.literal(std::to_string(low)), low_exclusive ? nonzero_fraction : fraction}));
    const std::int64_t middle_high = high ? *high - 1 : largest_magnitude;
    if (low + 1 <= middle_high) alternatives.push_back(b.sequence({natural_range(low + 1, middle_high), fraction}));
    if (high && !high_exclusive) alternatives.push_back(b.sequence({b.literal(std::to_string(*high)), zero_fraction}));
    return b.choice(std::move(alternatives));
  }

  result<rule> compile_number(const rapidjson::Value& schema, const std::string& path) {
    auto bounds = read_bounds(schema, path);
    if (!bounds) return std::move(bounds).err();
    if (!bounds->low && !bounds->high) return json_number(b_);
    auto whole = [&](const std::optional<double>& v, const char* key) -> result<std::optional<std::int64_t>> {
      if (!v) return std::optional<std::int64_t>();
      if (std::floor(*v) != *v || std::fabs(*v) > double(largest_magnitude))
        return unsupported(member_path(path, key), "number bounds must be whole numbers of at most 16 digits");
      return std::optional<std::int64_t>(static_cast<std::int64_t>(*v));
    };
    auto low = whole(bounds->low, has(schema, "minimum") ? "minimum" : "exclusiveMinimum");
    if (!low) return std::move(low).err();
    auto high = whole(bounds->high, has(schema, "maximum") ? "maximum" : "exclusiveMaximum");
    if (!high) return std::move(high).err();
    std::vector<rule> alternatives;
    // Zero and above.
    if (!*high || **high > 0 || (**high == 0 && !bounds->high_exclusive)) {
      const bool low_positive = *low && **low >= 0;
      if (auto r = natural_number_range(low_positive ? **low : 0, low_positive && bounds->low_exclusive, *high, bounds->high_exclusive))
        alternatives.push_back(*r);
    }
    // Below zero, as "-" and the magnitude; zero itself is spelt "0" above when it is allowed.
    if (!*low || **low < 0) {
      const bool high_negative = *high && **high < 0;
      const std::int64_t magnitude_low = high_negative ? -**high : 0;
      const bool magnitude_low_exclusive = high_negative ? bounds->high_exclusive : true;
      std::optional<std::int64_t> magnitude_high;
      if (*low) magnitude_high = -**low;
      if (auto r = natural_number_range(magnitude_low, magnitude_low_exclusive, magnitude_high, bounds->low_exclusive))
        alternatives.push_back(b_.sequence({b_.literal("-"), *r}));
    }
    if (alternatives.empty()) return invalid(path, "no number lies between the minimum and the maximum");
    return b_.choice(std::move(alternatives));
  }

  // ---- objects ----

  result<rule> compile_object(const rapidjson::Value& schema, const std::string& path) {
    grammar_builder& b = b_;
    const rule ws = whitespace(b);
    const rule open = b.literal("{"), close = b.literal("}"), comma = b.literal(","), colon = b.literal(":");

    struct property {
      std::string name;
      rule value;
      bool required;
    };
    std::vector<property> properties;
    const rapidjson::Value* props = nullptr;
    if (const auto it = schema.FindMember("properties"); it != schema.MemberEnd()) {
      if (!it->value.IsObject()) return invalid(member_path(path, "properties"), "must be an object");
      props = &it->value;
    }
    std::vector<std::string> required;
    if (const auto it = schema.FindMember("required"); it != schema.MemberEnd()) {
      if (!it->value.IsArray()) return invalid(member_path(path, "required"), "must be an array of property names");
      for (const auto& name : it->value.GetArray()) {
        if (!name.IsString()) return invalid(member_path(path, "required"), "must be an array of property names");
        required.emplace_back(name.GetString(), name.GetStringLength());
      }
    }

    // additionalProperties: absent (read as false when properties are listed), a boolean or a schema.
    const rapidjson::Value* additional = nullptr;
    bool extra_allowed = props == nullptr && required.empty();
    if (const auto it = schema.FindMember("additionalProperties"); it != schema.MemberEnd()) {
      if (it->value.IsBool()) {
        extra_allowed = it->value.GetBool();
      } else if (it->value.IsObject()) {
        extra_allowed = true;
        additional = &it->value;
      } else {
        return invalid(member_path(path, "additionalProperties"), "must be a boolean or a schema");
      }
    }
    const bool extra_explicitly_refused = schema.HasMember("additionalProperties") && !extra_allowed;

    context_.emplace_back();  // the values below come after "{"
    auto leave = [&](auto r) {
      context_.pop_back();
      return r;
    };
    if (props) {
      for (auto it = props->MemberBegin(); it != props->MemberEnd(); ++it) {
        std::string name(it->name.GetString(), it->name.GetStringLength());
        auto value = compile(it->value, member_path(member_path(path, "properties"), name));
        if (!value) return leave(result<rule>(std::move(value).err()));
        const bool is_required = std::find(required.begin(), required.end(), name) != required.end();
        properties.push_back({std::move(name), *value, is_required});
      }
    }
    for (const std::string& name : required) {
      if (std::any_of(properties.begin(), properties.end(), [&](const property& p) { return p.name == name; })) continue;
      if (extra_explicitly_refused)
        return leave(result<rule>(invalid(member_path(path, "required"), "names \"" + name + "\", which additionalProperties false does not allow")));
      properties.push_back({name, any_value(b), true});
    }
    std::optional<rule> extra_member;
    if (extra_allowed) {
      rule value = any_value(b);
      if (additional) {
        auto r = compile(*additional, member_path(path, "additionalProperties"));
        if (!r) return leave(result<rule>(std::move(r).err()));
        value = *r;
      }
      extra_member = b.sequence({json_string(b), ws, colon, ws, value, ws});
    }
    context_.pop_back();

    // first[i]: the members from property i on when none has been written yet; rest[i]: the
    // same after one has (so each begins with a comma).
    const std::size_t n = properties.size();
    rule rest = extra_member ? b.repeat(b.sequence({comma, ws, *extra_member}), 0, -1) : empty(b);
    rule first = extra_member ? b.optional(b.sequence({*extra_member, rest})) : empty(b);
    for (std::size_t i = n; i-- > 0;) {
      const property& p = properties[i];
      const rule member = b.sequence({b.literal(json::quoted(p.name)), ws, colon, ws, p.value, ws});
      const rule after_comma = b.sequence({comma, ws, member, rest});
      const rule leading = b.sequence({member, rest});
      const rule next_rest = p.required ? after_comma : b.choice({after_comma, rest});
      first = p.required ? leading : b.choice({leading, first});
      rest = next_rest;
    }
    return b.sequence({open, ws, first, close});
  }

  // ---- arrays ----

  result<rule> compile_array(const rapidjson::Value& schema, const std::string& path) {
    grammar_builder& b = b_;
    const rule ws = whitespace(b);
    const rule comma = b.literal(",");

    // prefixItems (or draft 7's array-form items) and the schema of the items after them.
    const rapidjson::Value* prefix = nullptr;
    std::string prefix_key = "prefixItems";
    const rapidjson::Value* rest_schema = nullptr;
    std::string rest_key = "items";
    if (const auto it = schema.FindMember("prefixItems"); it != schema.MemberEnd()) prefix = &it->value;
    if (const auto it = schema.FindMember("items"); it != schema.MemberEnd()) {
      if (it->value.IsArray() && !prefix) {
        prefix = &it->value;
        prefix_key = "items";
        rest_key = "additionalItems";
        if (const auto extra = schema.FindMember("additionalItems"); extra != schema.MemberEnd()) rest_schema = &extra->value;
      } else {
        rest_schema = &it->value;
      }
    }
    if (prefix && !prefix->IsArray()) return invalid(member_path(path, prefix_key), "must be an array of schemas");
    if (rest_schema && !rest_schema->IsObject() && !rest_schema->IsBool())
      return invalid(member_path(path, rest_key), "must be a schema");

    auto min_items = count_keyword(schema, path, "minItems", 0);
    if (!min_items) return std::move(min_items).err();
    auto max_items = count_keyword(schema, path, "maxItems", -1);
    if (!max_items) return std::move(max_items).err();
    std::int64_t min = *min_items, max = *max_items;
    if (max >= 0 && max < min) return invalid(member_path(path, "maxItems"), "is below minItems");

    context_.emplace_back();  // the items come after "["
    std::vector<rule> positional;
    if (prefix) {
      for (rapidjson::SizeType i = 0; i < prefix->Size(); ++i) {
        auto r = compile((*prefix)[i], index_path(path, prefix_key, i));
        if (!r) {
          context_.pop_back();
          return std::move(r).err();
        }
        positional.push_back(*r);
      }
    }
    std::optional<rule> item;
    if (!rest_schema) {
      item = any_value(b);
    } else if (!(rest_schema->IsBool() && !rest_schema->GetBool())) {
      auto r = compile(*rest_schema, member_path(path, rest_key));
      if (!r) {
        context_.pop_back();
        return std::move(r).err();
      }
      item = *r;
    }
    context_.pop_back();

    const auto p = static_cast<std::int64_t>(positional.size());
    if (!item) {
      if (min > p) return invalid(member_path(path, "minItems"), "asks for more items than " + prefix_key + " allows");
      max = max < 0 ? p : std::min(max, p);
    }

    // after(k): the items after the first k (k >= 1), each after a comma.
    auto tail = [&](std::int64_t k) -> rule {
      if ((max >= 0 && k >= max) || !item) return empty(b);
      return b.repeat(b.sequence({comma, ws, *item, ws}), std::max<std::int64_t>(0, min - k), max < 0 ? -1 : max - k);
    };
    rule after = tail(std::max<std::int64_t>(p, 1));
    for (std::int64_t k = p - 1; k >= 1; --k) {
      if (max >= 0 && k >= max) {
        after = empty(b);
        continue;
      }
      const rule more = b.sequence({comma, ws, positional[static_cast<std::size_t>(k)], ws, after});
      after = k >= min ? b.optional(more) : more;
    }
    rule body = empty(b);
    if (max != 0 && (p > 0 || item)) {
      const rule first = p > 0 ? positional[0] : *item;
      const rule items = b.sequence({first, ws, after});
      body = min == 0 ? b.optional(items) : items;
    }
    return b.sequence({b.literal("["), ws, body, b.literal("]")});
  }

  grammar_builder& b_;
  const rapidjson::Value& root_;
  std::string where_;
  std::unordered_map<std::string, rule> refs_;
  std::vector<std::string> context_;  // references being compiled; "" where input was consumed since
  int depth_ = 0;
};

}  // namespace detail

result<rule> grammar_builder::json_schema(const rapidjson::Value& schema, std::string_view where) {
  detail::json_schema_compiler compiler(*this, schema, std::string(where));
  return compiler.compile_root();
}

rule grammar_builder::any_json_value() { return detail::json_schema_compiler::any_value(*this); }

rule grammar_builder::any_json_object() {
  detail::json_schema_compiler::any_value(*this);
  return *state_->any_object;
}

}  // namespace chatai::engine
