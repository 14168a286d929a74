// Configuration files: JSON documents read with json::reader so every error names the file,
// the field and what was wrong.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "chatai/core/json.hpp"
#include "chatai/core/status.hpp"

namespace chatai::config {

// Reads a file whole. Errors name the path and the operating system's reason.
result<std::string> read_file(const std::filesystem::path& path);

// Loads `path`, parses it as JSON and hands its top-level object to `fill`, which reads the
// fields with the reader. Errors look like "gate.json: field 'limits.max_body': expected an
// integer, got a string" or "gate.json:3:14: JSON parse error: ...".
status load(const std::filesystem::path& path, const std::function<void(json::reader&)>& fill);

// The same for text already in memory; `name` stands for the file in messages.
status load_text(std::string_view text, std::string name, const std::function<void(json::reader&)>& fill);

}  // namespace chatai::config
