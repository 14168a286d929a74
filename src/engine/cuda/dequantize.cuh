// Conversions to BF16 for the cuBLAS GEMMs: weight tiles dequantized into a reused buffer,
// and activation rows.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "chatai/core/status.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine::cuda {

// out = rows × cols weights of `type` (rows of row_bytes) as BF16 bits; out: [rows × cols].
// Errors: unsupported type; those of the launch.
status launch_dequantize_bf16(ggml_type type, const std::byte* w, std::size_t row_bytes, std::int64_t rows,
                              std::int64_t cols, std::uint16_t* out, cudaStream_t stream);

// out[i] = x[i] as BF16 bits (round to nearest even), i < n.
status launch_to_bf16(const float* x, std::int64_t n, std::uint16_t* out, cudaStream_t stream);

}  // namespace chatai::engine::cuda
