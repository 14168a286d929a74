// JSON over RapidJSON: parsing with positions in errors, and a strict reader for objects whose
// errors name the field path ("limits.max_body: expected an integer, got a string").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>

#include "chatai/core/status.hpp"

namespace chatai::json {

// The deepest nesting of arrays and objects parse() accepts. Requests, configs and status
// documents need a handful of levels; the bound keeps a hostile document from exhausting the
// stack of whatever walks it later.
inline constexpr std::size_t max_depth = 128;

// Parses a whole document without recursion. Errors carry the line, column and byte offset;
// a document nested deeper than max_depth is an error too.
result<rapidjson::Document> parse(std::string_view text);

// Serialises a value compactly.
std::string to_string(const rapidjson::Value& value);

// Appends `text` as a JSON string literal (with quotes) to `out`. Invalid UTF-8 bytes are
// replaced by U+FFFD so the output is always valid JSON.
void append_quoted(std::string& out, std::string_view text);
std::string quoted(std::string_view text);
// Appends ["a","b",...] to `out`.
void append_string_array(std::string& out, const std::vector<std::string>& items);

// The name of a value's JSON type for error messages ("a string", "an integer", ...).
std::string_view type_name(const rapidjson::Value& value);

// Reads the fields of one JSON object with type checks. The first problem is remembered
// (later calls then do nothing) and reported by finish(), naming the field's full path.
// Unknown keys are an error unless allow_unknown() was called.
// Thread safety: not thread-safe; use one reader per thread.
class reader {
 public:
  // `where` prefixes every error message (a file name, "request body", ...).
  reader(const rapidjson::Value& object, std::string where, std::string path = {});

  // Required fields: a missing key is an error. Optional ones: absent or null leaves `out`.
  void required(std::string_view key, std::string& out);
  void required(std::string_view key, std::int64_t& out);
  void required(std::string_view key, double& out);
  void required(std::string_view key, bool& out);
  void optional(std::string_view key, std::string& out);
  void optional(std::string_view key, std::int64_t& out);
  void optional(std::string_view key, double& out);
  void optional(std::string_view key, bool& out);
  void optional(std::string_view key, std::optional<std::string>& out);
  void optional(std::string_view key, std::optional<std::int64_t>& out);
  void optional(std::string_view key, std::optional<double>& out);
  void optional(std::string_view key, std::optional<bool>& out);
  void optional(std::string_view key, std::vector<std::string>& out);

  // An integer field within [min, max].
  void optional_in_range(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max);
  void required_in_range(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max);

  // A nested object, read by `fn` with a reader whose path extends this one's.
  void object(std::string_view key, bool is_required, const std::function<void(reader&)>& fn);
  // An array of objects, each read by `fn` (its path is key[i]).
  void object_array(std::string_view key, bool is_required, const std::function<void(reader&, std::size_t)>& fn);

  // The raw value of a key (nullptr when absent); marks the key as known.
  const rapidjson::Value* raw(std::string_view key);

  // Reports a problem with a field of this object (the first one wins).
  void fail(std::string_view key, std::string_view what);

  // Accept keys this reader did not ask for.
  void allow_unknown() { allow_unknown_ = true; }

  bool failed() const { return failure_.has_value(); }
  // The first error, or one naming the first unknown key; OK otherwise.
  status finish();

  std::string field_path(std::string_view key) const;

 private:
  const rapidjson::Value* lookup(std::string_view key, bool is_required);
  void type_error(std::string_view key, std::string_view expected, const rapidjson::Value& got);

  const rapidjson::Value& object_;
  std::string where_;
  std::string path_;
  std::vector<std::string> seen_;
  std::optional<error> failure_;
  bool allow_unknown_ = false;
  bool checked_object_ = false;
};

}  // namespace chatai::json
