// Matrix-vector kernels for the K-quants q2_k, q3_k, q4_k, q5_k and q6_k.
#include "matvec_kernel.cuh"

namespace chatai::engine::cuda {

status launch_matvec_kquant(ggml_type type, const matvec_args& a, cudaStream_t stream) {
  switch (type) {
    case ggml_type::q2_k: return launch_matvec_of<ggml_type::q2_k>(a, stream);
    case ggml_type::q3_k: return launch_matvec_of<ggml_type::q3_k>(a, stream);
    case ggml_type::q4_k: return launch_matvec_of<ggml_type::q4_k>(a, stream);
    case ggml_type::q5_k: return launch_matvec_of<ggml_type::q5_k>(a, stream);
    case ggml_type::q6_k: return launch_matvec_of<ggml_type::q6_k>(a, stream);
    default: return error(errc::unsupported, "no CUDA matrix-vector kernel for " + std::string(to_string(type)));
  }
}

}  // namespace chatai::engine::cuda
