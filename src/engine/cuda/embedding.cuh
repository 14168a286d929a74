// Token embedding: the rows of the (possibly quantized) embedding table for a step's tokens.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "chatai/core/status.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine::cuda {

// out[t] = row tokens[t] of table, dequantized. table: [n_vocab × row_bytes] in `type`;
// tokens: [n_tokens]; out: [n_tokens × cols]. Errors: unsupported type; those of the launch.
status launch_embedding(ggml_type type, const std::byte* table, std::size_t row_bytes, std::int64_t cols,
                        const std::int32_t* tokens, std::int64_t n_tokens, float* out, cudaStream_t stream);

}  // namespace chatai::engine::cuda
