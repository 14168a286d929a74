// The CUDA backend: weights uploaded once to the GPU, quantized matrix-vector kernels for
// decode, cuBLAS GEMMs for prefill, a paged KV cache shared by all sequences, and the decode
// step replayed as a CUDA graph. cuda_available() exists in every build; a build without
// CUDA answers false and create_cuda_backend() returns unavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "chatai/core/status.hpp"
#include "chatai/engine/backend.hpp"
#include "chatai/engine/model.hpp"

namespace chatai::engine {

// Whether this build has the CUDA backend and the machine at least one device it can use.
// Thread safety: safe from any thread.
bool cuda_available() noexcept;

// Why cuda_available() is false ("this build has no CUDA backend", "no CUDA device: ..."),
// or the name of device 0 when it is true. Thread safety: safe from any thread.
std::string cuda_device_summary();

// Thread safety: a value type.
struct cuda_backend_options {
  int device = 0;                    // CUDA device ordinal
  std::int64_t kv_cache_bytes = 0;   // 0: 90% of the memory left after the weights and buffers
  std::int64_t max_step_tokens = 2048;  // the most tokens one forward() may carry
  bool use_graphs = true;            // replay decode steps (up to 8 tokens) as CUDA graphs
};

// A CUDA backend over `m`. Errors: unavailable without a CUDA build or device;
// resource_exhausted when the weights, buffers or KV cache do not fit (the message names
// how many bytes were needed and how many were free); internal for a failed CUDA call.
result<std::unique_ptr<backend>> create_cuda_backend(std::shared_ptr<const model> m,
                                                     const cuda_backend_options& options = {});

}  // namespace chatai::engine
