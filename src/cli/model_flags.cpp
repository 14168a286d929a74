// Shared model flags and loading for the subcommands.
#include "model_flags.hpp"

#include <cstdio>

namespace chatai::cli {

void model_flags::add_to(CLI::App* command) {
  command->add_option("-m,--model", model, "GGUF model file")->required()->check(CLI::ExistingFile);
  command->add_option("--device", device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  command->add_option("-t,--threads", threads, "CPU threads (0: one per hardware thread)")->check(CLI::NonNegativeNumber);
}

std::unique_ptr<engine::runtime> model_flags::load() const {
  engine::runtime_options o;
  o.model_path = model;
  o.device = device;
  o.threads = threads;
  auto rt = engine::runtime::load(o);
  if (!rt) {
    std::fprintf(stderr, "chatai: %s\n", rt.err().message().c_str());
    return nullptr;
  }
  return std::move(*rt);
}

}  // namespace chatai::cli
