// Quantized matrix-vector products for decode: y[t] = W x[t] for up to max_matvec_tokens
// activation rows, each weight element read once and dequantized in registers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "chatai/core/status.hpp"
#include "chatai/engine/tensor_type.hpp"
#include "plan.hpp"

namespace chatai::engine::cuda {

// One weight matrix of a launch and where its products go.
// Thread safety: a value type of borrowed device pointers.
struct matvec_part {
  const std::byte* w = nullptr;  // [rows × row_bytes]: the weights in their file layout
  std::int64_t rows = 0;
  float* y = nullptr;            // [n_tokens × y_stride], columns [0, rows) written
  std::int64_t y_stride = 0;
};

// Up to three matrices of one type and width applied to the same activations in one launch
// (Q, K and V), or with `glu` the gate and up matrices of a feed-forward block, whose
// products leave the kernel as silu(gate) * up in parts[0].y.
// Thread safety: a value type of borrowed device pointers.
struct matvec_args {
  static constexpr int max_parts = 3;
  matvec_part parts[max_parts];
  int n_parts = 1;
  bool glu = false;              // parts[0] is the gate, parts[1] the up matrix, of equal rows
  std::size_t row_bytes = 0;
  std::int64_t cols = 0;         // a multiple of 32 (256 for the K-quants)
  const float* x = nullptr;      // [n_tokens × cols]
  std::int64_t n_tokens = 0;     // 1 .. max_matvec_tokens
};

// Each family's kernels, in matvec_<family>.cu; errors are those of the launch.
status launch_matvec_float(ggml_type type, const matvec_args& a, cudaStream_t stream);   // f32, f16, bf16
status launch_matvec_q32(ggml_type type, const matvec_args& a, cudaStream_t stream);     // q8_0, q4_*, q5_*
status launch_matvec_kquant(ggml_type type, const matvec_args& a, cudaStream_t stream);  // q2_k .. q6_k

// The kernel of `type`'s family. Errors: invalid_argument for a token count outside
// 1 .. max_matvec_tokens (nothing is launched); unsupported for a type without a kernel.
inline status launch_matvec(ggml_type type, const matvec_args& a, cudaStream_t stream) {
  if (a.n_tokens < 1 || a.n_tokens > max_matvec_tokens) {
    return error(errc::invalid_argument, "a matrix-vector launch takes 1 to " + std::to_string(max_matvec_tokens) +
                                             " tokens, not " + std::to_string(a.n_tokens));
  }
  switch (type) {
    case ggml_type::f32:
    case ggml_type::f16:
    case ggml_type::bf16: return launch_matvec_float(type, a, stream);
    case ggml_type::q8_0:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q5_0:
    case ggml_type::q5_1: return launch_matvec_q32(type, a, stream);
    case ggml_type::q2_k:
    case ggml_type::q3_k:
    case ggml_type::q4_k:
    case ggml_type::q5_k:
    case ggml_type::q6_k: return launch_matvec_kquant(type, a, stream);
    default: return error(errc::unsupported, "no CUDA matrix-vector kernel for " + std::string(to_string(type)));
  }
}

}  // namespace chatai::engine::cuda
