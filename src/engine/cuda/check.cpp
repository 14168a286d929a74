// Errors of CUDA and cuBLAS calls.
#include "check.hpp"

#include <string>

namespace chatai::engine::cuda {

error cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  const errc kind = code == cudaErrorMemoryAllocation ? errc::resource_exhausted : errc::internal;
  return error(kind, std::string("CUDA: ") + cudaGetErrorString(code) + " (" + cudaGetErrorName(code) + ") in " + call +
                         " at " + file + ":" + std::to_string(line));
}

error cublas_error(cublasStatus_t code, const char* call, const char* file, int line) {
  const errc kind = code == CUBLAS_STATUS_ALLOC_FAILED ? errc::resource_exhausted : errc::internal;
  return error(kind, std::string("cuBLAS: ") + cublasGetStatusString(code) + " (" + cublasGetStatusName(code) + ") in " +
                         call + " at " + file + ":" + std::to_string(line));
}

}  // namespace chatai::engine::cuda
