// Checks of CUDA and cuBLAS calls that report and return a chatai error, never abort.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "chatai/core/status.hpp"

namespace chatai::engine::cuda {

// The error of a failed call: resource_exhausted for out-of-memory, internal otherwise;
// the message names the call, its place and CUDA's description.
error cuda_error(cudaError_t code, const char* call, const char* file, int line);
error cublas_error(cublasStatus_t code, const char* call, const char* file, int line);

}  // namespace chatai::engine::cuda

// In a function returning status or result<T>: returns the error of a failed call.
#define CHATAI_CUDA_CHECK(call)                                                             \
  do {                                                                                      \
    const cudaError_t chatai_cuda_status_ = (call);                                         \
    if (chatai_cuda_status_ != cudaSuccess)                                                 \
      return ::chatai::engine::cuda::cuda_error(chatai_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define CHATAI_CUBLAS_CHECK(call)                                                               \
  do {                                                                                          \
    const cublasStatus_t chatai_cublas_status_ = (call);                                        \
    if (chatai_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                         \
      return ::chatai::engine::cuda::cublas_error(chatai_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: the launch's own error (a bad configuration, no kernel image).
#define CHATAI_CUDA_CHECK_LAUNCH() CHATAI_CUDA_CHECK(cudaGetLastError())
