// Parses the tokens of a chat template into its syntax tree.
#pragma once

#include "template_ast.hpp"

namespace chatai::engine::jinja {

// Fills prog.root from prog.source (already normalized). Throws template_error: parse_error
// for malformed templates, unsupported for Jinja2 constructs chatai does not implement.
void parse_program(program& prog);

}  // namespace chatai::engine::jinja
