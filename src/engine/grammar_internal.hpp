// The grammar builder's rules, shared by the rule code (grammar.cpp) and the JSON code (json_schema.cpp).
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "chatai/engine/grammar.hpp"

namespace chatai::engine {

struct grammar_builder::state {
  std::vector<detail::grammar_node> nodes;
  std::vector<std::int32_t> children;
  std::vector<std::bitset<256>> byte_sets;
  std::string text;
  std::vector<bool> undefined_forward;  // [nodes]: a forward() rule define() has not given a body yet

  // JSON pieces, made once per builder.
  std::optional<rule> whitespace;
  std::optional<rule> string_char;
  std::optional<rule> json_string;
  std::optional<rule> json_number;
  std::optional<rule> json_integer;
  std::optional<rule> any_value;
  std::optional<rule> any_object;
};

}  // namespace chatai::engine
