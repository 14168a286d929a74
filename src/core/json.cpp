// JSON parsing with positions, quoting, and the strict field reader.
#include "chatai/core/json.hpp"

#include <algorithm>
#include <limits>

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace chatai::json {

namespace {

// Line and column (1-based) of a byte offset.
std::pair<std::size_t, std::size_t> line_column(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is invalid.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n;
  std::uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

// Builds `doc` from the reader's events and refuses to nest deeper than max_depth, so that
// neither the parse nor any later walk of the document can run out of stack.
class depth_limited_builder {
 public:
  explicit depth_limited_builder(rapidjson::Document& doc) : doc_(doc) {}

  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(std::int64_t i) { return doc_.Int64(i); }
  bool Uint64(std::uint64_t u) { return doc_.Uint64(u); }
  bool Double(double d) { return doc_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) { return doc_.RawNumber(s, n, copy); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool StartObject() { return enter() && doc_.StartObject(); }
  bool EndObject(rapidjson::SizeType members) {
    --depth_;
    return doc_.EndObject(members);
  }
  bool StartArray() { return enter() && doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType elements) {
    --depth_;
    return doc_.EndArray(elements);
  }

  bool too_deep() const noexcept { return too_deep_; }

 private:
  bool enter() {
    if (++depth_ <= max_depth) return true;
    too_deep_ = true;
    return false;
  }

  rapidjson::Document& doc_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
};

}  // namespace

result<rapidjson::Document> parse(std::string_view text) {
  rapidjson::Document doc;
  bool too_deep = false;
  rapidjson::ParseResult parsed;
  auto generate = [&](rapidjson::Document& target) {
    depth_limited_builder builder(target);
    rapidjson::MemoryStream bytes(text.data(), text.size());
    rapidjson::Reader reader;
    parsed = reader.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(bytes, builder);
    too_deep = builder.too_deep();
    return !parsed.IsError();
  };
  doc.Populate(generate);
  if (parsed.IsError()) {
    const auto offset = parsed.Offset();
    const auto [line, column] = line_column(text, offset);
    const std::string what = too_deep ? "values nested deeper than " + std::to_string(max_depth) + " levels"
                                      : rapidjson::GetParseError_En(parsed.Code());
    return error(errc::parse_error, std::to_string(line) + ":" + std::to_string(column) +
                                        ": JSON parse error at byte " + std::to_string(offset) + ": " + what);
  }
  return doc;
}

std::string to_string(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

void append_quoted(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence_length(text, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(text.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_quoted(out, text);
  return out;
}

void append_string_array(std::string& out, const std::vector<std::string>& items) {
  out.push_back('[');
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out.push_back(',');
    append_quoted(out, items[i]);
  }
  out.push_back(']');
}

std::string_view type_name(const rapidjson::Value& value) {
  switch (value.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return "a boolean";
    case rapidjson::kObjectType: return "an object";
    case rapidjson::kArrayType: return "an array";
    case rapidjson::kStringType: return "a string";
    case rapidjson::kNumberType: return value.IsInt64() || value.IsUint64() ? "an integer" : "a number";
  }
  return "a value";
}

reader::reader(const rapidjson::Value& object, std::string where, std::string path)
    : object_(object), where_(std::move(where)), path_(std::move(path)) {}

std::string reader::field_path(std::string_view key) const {
  if (path_.empty()) return std::string(key);
  return path_ + "." + std::string(key);
}

void reader::fail(std::string_view key, std::string_view what) {
  if (failure_) return;
  std::string message = where_;
  if (!message.empty()) message += ": ";
  if (!key.empty() || !path_.empty()) message += "field '" + field_path(key) + "': ";
  message += what;
  failure_ = error(errc::invalid_argument, std::move(message));
}

void reader::type_error(std::string_view key, std::string_view expected, const rapidjson::Value& got) {
  fail(key, "expected " + std::string(expected) + ", got " + std::string(type_name(got)));
}

const rapidjson::Value* reader::lookup(std::string_view key, bool is_required) {
  if (failure_) return nullptr;
  if (!checked_object_) {
    checked_object_ = true;
    if (!object_.IsObject()) {
      std::string what = "expected an object, got " + std::string(type_name(object_));
      if (failure_) return nullptr;
      std::string message = where_;
      if (!message.empty()) message += ": ";
      if (!path_.empty()) message += "field '" + path_ + "': ";
      failure_ = error(errc::invalid_argument, message + what);
      return nullptr;
    }
  }
  seen_.emplace_back(key);
  const auto it = object_.FindMember(rapidjson::Value(rapidjson::StringRef(key.data(), key.size())));
  if (it == object_.MemberEnd() || it->value.IsNull()) {
    if (is_required) fail(key, "is required");
    return nullptr;
  }
  return &it->value;
}

const rapidjson::Value* reader::raw(std::string_view key) { return lookup(key, false); }

void reader::required(std::string_view key, std::string& out) {
  if (const auto* v = lookup(key, true)) {
    if (v->IsString()) out.assign(v->GetString(), v->GetStringLength());
    else type_error(key, "a string", *v);
  }
}

void reader::optional(std::string_view key, std::string& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsString()) out.assign(v->GetString(), v->GetStringLength());
    else type_error(key, "a string", *v);
  }
}

void reader::optional(std::string_view key, std::optional<std::string>& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsString()) out.emplace(v->GetString(), v->GetStringLength());
    else type_error(key, "a string", *v);
  }
}

namespace {
bool as_int64(const rapidjson::Value& v, std::int64_t& out) {
  if (v.IsInt64()) {
    out = v.GetInt64();
    return true;
  }
  // Accept integral doubles such as 1e3 or 2.0, as JavaScript clients send them.
  if (v.IsDouble()) {
    const double d = v.GetDouble();
    if (d == static_cast<double>(static_cast<std::int64_t>(d)) && d >= -9.2e18 && d <= 9.2e18) {
      out = static_cast<std::int64_t>(d);
      return true;
    }
  }
  return false;
}
}  // namespace

void reader::required(std::string_view key, std::int64_t& out) {
  if (const auto* v = lookup(key, true)) {
    if (!as_int64(*v, out)) type_error(key, "an integer", *v);
  }
}

void reader::optional(std::string_view key, std::int64_t& out) {
  if (const auto* v = lookup(key, false)) {
    if (!as_int64(*v, out)) type_error(key, "an integer", *v);
  }
}

void reader::optional(std::string_view key, std::optional<std::int64_t>& out) {
  std::int64_t value = 0;
  if (const auto* v = lookup(key, false)) {
    if (as_int64(*v, value)) out = value;
    else type_error(key, "an integer", *v);
  }
}

void reader::optional_in_range(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max) {
  std::int64_t value = out;
  optional(key, value);
  if (failure_) return;
  if (value < min || value > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                  std::to_string(value));
    return;
  }
  out = value;
}

void reader::required_in_range(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max) {
  std::int64_t value = 0;
  required(key, value);
  if (failure_) return;
  if (value < min || value > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                  std::to_string(value));
    return;
  }
  out = value;
}

void reader::required(std::string_view key, double& out) {
  if (const auto* v = lookup(key, true)) {
    if (v->IsNumber()) out = v->GetDouble();
    else type_error(key, "a number", *v);
  }
}

void reader::optional(std::string_view key, double& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsNumber()) out = v->GetDouble();
    else type_error(key, "a number", *v);
  }
}

void reader::optional(std::string_view key, std::optional<double>& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsNumber()) out = v->GetDouble();
    else type_error(key, "a number", *v);
  }
}

void reader::required(std::string_view key, bool& out) {
  if (const auto* v = lookup(key, true)) {
    if (v->IsBool()) out = v->GetBool();
    else type_error(key, "a boolean", *v);
  }
}

void reader::optional(std::string_view key, bool& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsBool()) out = v->GetBool();
    else type_error(key, "a boolean", *v);
  }
}

void reader::optional(std::string_view key, std::optional<bool>& out) {
  if (const auto* v = lookup(key, false)) {
    if (v->IsBool()) out = v->GetBool();
    else type_error(key, "a boolean", *v);
  }
}

void reader::optional(std::string_view key, std::vector<std::string>& out) {
  const auto* v = lookup(key, false);
  if (!v) return;
  if (!v->IsArray()) {
    type_error(key, "an array of strings", *v);
    return;
  }
  std::vector<std::string> values;
  for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
    const auto& item = (*v)[i];
    if (!item.IsString()) {
      fail(std::string(key) + "[" + std::to_string(i) + "]",
           "expected a string, got " + std::string(type_name(item)));
      return;
    }
    values.emplace_back(item.GetString(), item.GetStringLength());
  }
  out = std::move(values);
}

void reader::object(std::string_view key, bool is_required, const std::function<void(reader&)>& fn) {
  const auto* v = lookup(key, is_required);
  if (!v) return;
  reader nested(*v, where_, field_path(key));
  fn(nested);
  if (auto st = nested.finish(); !st) failure_ = std::move(st).err();
}

void reader::object_array(std::string_view key, bool is_required,
                          const std::function<void(reader&, std::size_t)>& fn) {
  const auto* v = lookup(key, is_required);
  if (!v) return;
  if (!v->IsArray()) {
    type_error(key, "an array", *v);
    return;
  }
  for (rapidjson::SizeType i = 0; i < v->Size() && !failure_; ++i) {
    reader nested((*v)[i], where_, field_path(key) + "[" + std::to_string(i) + "]");
    fn(nested, i);
    if (auto st = nested.finish(); !st) failure_ = std::move(st).err();
  }
}

status reader::finish() {
  if (failure_) return *failure_;
  if (!checked_object_ && !object_.IsObject()) {
    lookup("", false);
    return *failure_;
  }
  if (object_.IsObject()) {
    for (auto it = object_.MemberBegin(); it != object_.MemberEnd(); ++it) {
      const std::string_view name(it->name.GetString(), it->name.GetStringLength());
      for (auto other = object_.MemberBegin(); other != it; ++other) {
        if (name == std::string_view(other->name.GetString(), other->name.GetStringLength())) {
          fail(name, "appears more than once");
          return *failure_;
        }
      }
      if (!allow_unknown_ && std::find(seen_.begin(), seen_.end(), name) == seen_.end()) {
        fail(name, "unknown field");
        return *failure_;
      }
    }
  }
  return {};
}

}  // namespace chatai::json
