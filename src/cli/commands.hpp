// The subcommands of the `chatai` program; each file in src/cli/ adds one to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace chatai::cli {

// Settings every subcommand shares (logging).
struct global_options {
  std::string log_level = "info";
  bool log_json = false;
};

}  // namespace chatai::cli
