// The subcommands of the `chatai` program; each file in src/cli/ adds one to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace chatai::cli {

// Settings every subcommand shares (logging).
struct global_options {
  std::string log_level = "info";
  bool log_json = false;
};

// Each subcommand file defines one add_<name>_command that registers its subcommand on `app`;
// the subcommand's callback stores its process exit code in `exit_code`.

}  // namespace chatai::cli
