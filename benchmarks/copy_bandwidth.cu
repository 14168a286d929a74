// Device memory bandwidth as a device-to-device copy measures it: bytes read plus bytes
// written per second, the roofline the decode figures of benchmarks/gpu_check.sh are put
// against. Prints one JSON object.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace {

bool check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "copy_bandwidth: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;  // bytes copied per run
  const std::size_t bytes = mib << 20;
  const int runs = 20;
  void* src = nullptr;
  void* dst = nullptr;
  cudaEvent_t start, stop;
  if (!check(cudaMalloc(&src, bytes), "cudaMalloc") || !check(cudaMalloc(&dst, bytes), "cudaMalloc") ||
      !check(cudaMemset(src, 1, bytes), "cudaMemset") || !check(cudaEventCreate(&start), "cudaEventCreate") ||
      !check(cudaEventCreate(&stop), "cudaEventCreate")) {
    return 1;
  }
  if (!check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "warm-up copy")) return 1;
  float best_ms = 1e30f;
  for (int r = 0; r < runs; ++r) {
    cudaEventRecord(start);
    cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    if (!check(cudaEventSynchronize(stop), "copy")) return 1;
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    if (ms < best_ms) best_ms = ms;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double gb_per_s = 2.0 * static_cast<double>(bytes) / (best_ms * 1e-3) / 1e9;
  std::printf("{\"device\":\"%s\",\"bytes\":%zu,\"best_ms\":%.4f,\"bandwidth_gb_per_s\":%.1f}\n", prop.name, bytes,
              static_cast<double>(best_ms), gb_per_s);
  cudaFree(src);
  cudaFree(dst);
  return 0;
}
