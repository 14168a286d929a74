// The flags every model-using subcommand shares (--model, --device, --threads) and loading.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "chatai/engine/runtime.hpp"

namespace chatai::cli {

struct model_flags {
  std::string model;
  std::string device = "auto";
  int threads = 0;

  void add_to(CLI::App* command);
  // Loads the model; on failure prints one line to stderr and returns nullptr.
  std::unique_ptr<engine::runtime> load() const;
};

}  // namespace chatai::cli
