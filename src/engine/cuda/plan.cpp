// The CUDA backend's choices of kernels and sizes.
#include "plan.hpp"

#include <algorithm>
#include <bit>

#include "../cpu/quant_reference.hpp"
#include "layout.hpp"

namespace chatai::engine::cuda {

bool is_cuda_weight_type(ggml_type type) noexcept { return cpu::is_weight_type_supported(type); }

matmul_kernel plan_matmul(ggml_type type, std::int64_t n_tokens) noexcept {
  if (n_tokens <= max_matvec_tokens) return matmul_kernel::matvec;
  return type == ggml_type::bf16 ? matmul_kernel::gemm_bf16 : matmul_kernel::gemm_dequantized;
}

std::int64_t attention_splits(std::int64_t length) noexcept {
  return std::max<std::int64_t>(1, (length + attention_chunk - 1) / attention_chunk);
}

std::int64_t graph_attention_splits(std::int64_t length) noexcept {
  return static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(attention_splits(length))));
}

bool use_graph(std::int64_t n_tokens) noexcept { return n_tokens >= 1 && n_tokens <= max_matvec_tokens; }

std::int64_t dequantize_tile_rows(std::int64_t rows, std::int64_t cols, std::int64_t buffer_elements) noexcept {
  if (cols <= 0) return rows;
  return std::clamp<std::int64_t>(buffer_elements / cols, 1, std::max<std::int64_t>(rows, 1));
}

std::int64_t kv_cache_pages(std::int64_t requested, std::int64_t free_bytes, std::int64_t page_bytes) noexcept {
  if (page_bytes <= 0) return 0;
  const std::int64_t bytes = requested > 0 ? requested : free_bytes / 10 * 9;
  return std::max<std::int64_t>(0, bytes / page_bytes);
}

}  // namespace chatai::engine::cuda
