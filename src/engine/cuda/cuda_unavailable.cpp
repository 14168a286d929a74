// The CUDA entry points of a build without CUDA: no device, and a clear error.
#include "chatai/engine/cuda_backend.hpp"

namespace chatai::engine {

bool cuda_available() noexcept { return false; }

std::string cuda_device_summary() { return "this build has no CUDA backend"; }

result<std::unique_ptr<backend>> create_cuda_backend(std::shared_ptr<const model>, const cuda_backend_options&) {
  return error(errc::unavailable, "device cuda: this build has no CUDA backend; use --device cpu or auto");
}

}  // namespace chatai::engine
