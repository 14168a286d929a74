// Run-time choice of the CPU kernels: feature detection and the per-type lookup.
#include "kernels.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <vector>

namespace chatai::engine {

namespace {

#if defined(__x86_64__) || defined(__i386__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() noexcept {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

}  // namespace

std::string_view to_string(cpu_isa isa) noexcept {
  switch (isa) {
    case cpu_isa::portable: return "portable";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
  }
  return "unknown";
}

bool cpu_supports(cpu_isa isa) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case cpu_isa::portable:
      return true;
    case cpu_isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case cpu_isa::avx512:
      return cpu_supports(cpu_isa::avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == cpu_isa::portable;
#endif
}

std::span<const cpu_isa> supported_cpu_isas() noexcept {
  static const std::vector<cpu_isa> isas = [] {
    std::vector<cpu_isa> out;
    for (cpu_isa isa : {cpu_isa::portable, cpu_isa::avx2, cpu_isa::avx512}) {
      if (cpu_supports(isa)) out.push_back(isa);
    }
    return out;
  }();
  return isas;
}

cpu_isa best_cpu_isa() noexcept { return supported_cpu_isas().back(); }

}  // namespace chatai::engine

namespace chatai::engine::cpu {

weight_kernel kernel_table::for_type(ggml_type type) const noexcept {
  switch (type) {
    case ggml_type::f32: return {activation_kind::f32, dot_f32};
    case ggml_type::f16: return {activation_kind::f32, dot_f16};
    case ggml_type::bf16: return {activation_kind::f32, dot_bf16};
    case ggml_type::q8_0: return {activation_kind::q8, dot_q8_0};
    case ggml_type::q4_0: return {activation_kind::q8, dot_q4_0};
    case ggml_type::q4_1: return {activation_kind::q8, dot_q4_1};
    case ggml_type::q5_0: return {activation_kind::q8, dot_q5_0};
    case ggml_type::q5_1: return {activation_kind::q8, dot_q5_1};
    case ggml_type::q2_k: return {activation_kind::q8, dot_q2_k};
    case ggml_type::q3_k: return {activation_kind::q8, dot_q3_k};
    case ggml_type::q4_k: return {activation_kind::q8, dot_q4_k};
    case ggml_type::q5_k: return {activation_kind::q8, dot_q5_k};
    case ggml_type::q6_k: return {activation_kind::q8, dot_q6_k};
    default: return {};
  }
}

const kernel_table& kernels_for(cpu_isa isa) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case cpu_isa::avx512: return avx512_kernels();
    case cpu_isa::avx2: return avx2_kernels();
    case cpu_isa::portable: break;
  }
#else
  (void)isa;
#endif
  return portable_kernels();
}

}  // namespace chatai::engine::cpu
