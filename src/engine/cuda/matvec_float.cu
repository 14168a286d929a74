// Matrix-vector kernels for f32, f16 and bf16 weights.
#include "matvec_kernel.cuh"

namespace chatai::engine::cuda {

status launch_matvec_float(ggml_type type, const matvec_args& a, cudaStream_t stream) {
  switch (type) {
    case ggml_type::f32: return launch_matvec_of<ggml_type::f32>(a, stream);
    case ggml_type::f16: return launch_matvec_of<ggml_type::f16>(a, stream);
    case ggml_type::bf16: return launch_matvec_of<ggml_type::bf16>(a, stream);
    default: return error(errc::unsupported, "no CUDA matrix-vector kernel for " + std::string(to_string(type)));
  }
}

}  // namespace chatai::engine::cuda
