// Which CUDA kernels a step runs: matrix-vector kernels or cuBLAS GEMMs by weight type and
// token count, how attention is split, which steps replay as graphs, and how the memory
// left after the weights is divided. Plain C++ so that it is tested without a GPU.
#pragma once

#include <cstdint>

#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine::cuda {

// The most tokens a matrix-vector kernel takes at once: each weight element read from memory
// is applied to all of them in registers.
inline constexpr std::int64_t max_matvec_tokens = 8;

enum class matmul_kernel {
  matvec,            // quantized matrix-vector kernel, dequantizing in registers
  gemm_bf16,         // cuBLAS on the BF16 weights as they are
  gemm_dequantized,  // weights dequantized to BF16 tile by tile, then cuBLAS
};

// The kernel for a product of weights of `type` with n_tokens activation rows.
matmul_kernel plan_matmul(ggml_type type, std::int64_t n_tokens) noexcept;

// Whether the CUDA backend computes with weights of `type` (those of the CPU backend).
bool is_cuda_weight_type(ggml_type type) noexcept;

// Parts the attention over `length` keys is split into (attention_chunk keys each).
std::int64_t attention_splits(std::int64_t length) noexcept;
// The split count a graph is captured with: the next power of two, so that few graphs
// cover all lengths (the kernel's surplus parts see no keys and return at once).
std::int64_t graph_attention_splits(std::int64_t length) noexcept;
// Whether a step of n_tokens tokens is replayed as a CUDA graph (decode steps).
bool use_graph(std::int64_t n_tokens) noexcept;

// Rows of a rows × cols matrix dequantized at once into a buffer of buffer_elements BF16
// values (at least one row; buffer_elements must hold one row).
std::int64_t dequantize_tile_rows(std::int64_t rows, std::int64_t cols, std::int64_t buffer_elements) noexcept;

// Pages of page_bytes each for the KV cache: `requested` bytes when positive, otherwise 90%
// of `free_bytes` (what the device has left after weights and buffers).
std::int64_t kv_cache_pages(std::int64_t requested, std::int64_t free_bytes, std::int64_t page_bytes) noexcept;

}  // namespace chatai::engine::cuda
