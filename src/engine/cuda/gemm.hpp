// Matrix products of many tokens on tensor cores through cuBLAS: BF16 weights and
// activations, f32 accumulation and output.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "chatai/core/status.hpp"

namespace chatai::engine::cuda {

// y[t * y_stride + r] = w.row(r) · x[t] for r < rows, t < n_tokens, on the handle's stream.
// w: [rows × cols] BF16; x: [n_tokens × cols] BF16; y: [n_tokens × y_stride] f32.
// Errors: those of cuBLAS.
status gemm_bf16(cublasHandle_t handle, const std::uint16_t* w, std::int64_t rows, std::int64_t cols,
                 const std::uint16_t* x, std::int64_t n_tokens, float* y, std::int64_t y_stride);

}  // namespace chatai::engine::cuda
