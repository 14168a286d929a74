// The cuBLAS GEMM. cuBLAS is column-major: the row-major weights [rows × cols] are the
// column-major matrix [cols × rows], so y^T = w^T(op T) · x with every leading dimension cols.
#include "gemm.hpp"

#include <library_types.h>

#include "check.hpp"

namespace chatai::engine::cuda {

status gemm_bf16(cublasHandle_t handle, const std::uint16_t* w, std::int64_t rows, std::int64_t cols,
                 const std::uint16_t* x, std::int64_t n_tokens, float* y, std::int64_t y_stride) {
  const float one = 1.0f, zero = 0.0f;
  CHATAI_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(n_tokens),
                                   static_cast<int>(cols), &one, w, CUDA_R_16BF, static_cast<int>(cols), x, CUDA_R_16BF,
                                   static_cast<int>(cols), &zero, y, CUDA_R_32F, static_cast<int>(y_stride),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return {};
}

}  // namespace chatai::engine::cuda
