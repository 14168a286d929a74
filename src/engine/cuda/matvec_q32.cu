// Matrix-vector kernels for the 32-element block types q8_0, q4_0, q4_1, q5_0 and q5_1.
#include "matvec_kernel.cuh"

namespace chatai::engine::cuda {

status launch_matvec_q32(ggml_type type, const matvec_args& a, cudaStream_t stream) {
  switch (type) {
    case ggml_type::q8_0: return launch_matvec_of<ggml_type::q8_0>(a, stream);
    case ggml_type::q4_0: return launch_matvec_of<ggml_type::q4_0>(a, stream);
    case ggml_type::q4_1: return launch_matvec_of<ggml_type::q4_1>(a, stream);
    case ggml_type::q5_0: return launch_matvec_of<ggml_type::q5_0>(a, stream);
    case ggml_type::q5_1: return launch_matvec_of<ggml_type::q5_1>(a, stream);
    default: return error(errc::unsupported, "no CUDA matrix-vector kernel for " + std::string(to_string(type)));
  }
}

}  // namespace chatai::engine::cuda
