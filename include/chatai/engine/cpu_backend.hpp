// The CPU backend: weights computed in place from the mapped file with SIMD kernels chosen
// at run time, matrix products split by rows across a thread pool.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"
#include "chatai/engine/model.hpp"

namespace chatai::engine {

// Instruction sets with their own kernels, from the most portable.
enum class cpu_isa {
  portable,  // plain C++
  avx2,      // AVX2, FMA, F16C
  avx512,    // AVX-512 F, BW, VL, VNNI (with AVX2, FMA, F16C)
};

std::string_view to_string(cpu_isa isa) noexcept;

// What this CPU (and operating system) can run. Thread safety: safe from any thread.
bool cpu_supports(cpu_isa isa) noexcept;
cpu_isa best_cpu_isa() noexcept;
std::span<const cpu_isa> supported_cpu_isas() noexcept;  // portable first

// Thread safety: a value type.
struct cpu_backend_options {
  int n_threads = 0;                   // 0: one per hardware thread
  cpu_isa isa = best_cpu_isa();        // kernels to use; must be supported
};

// A CPU backend over `m`. Errors: unsupported when options.isa is not supported here.
result<std::unique_ptr<backend>> create_cpu_backend(std::shared_ptr<const model> m,
                                                    const cpu_backend_options& options = {});

}  // namespace chatai::engine
