// The CUDA backend's kernels alone, timed with events on the device: the matrix-vector kernels
// of every weight type for 1, 2, 4 and 8 tokens (an 8B model's 4096 x 4096 projection and its
// 14336 x 4096 gate and up pair); for 16 to 512 tokens the GEMM path (weights dequantized to
// BF16 tile by tile, then cuBLAS) against matrix-vector launches of 8 tokens each, which tells
// where the plan should switch; and split attention over 512 to 8192 cached positions. Prints
// one line per case: microseconds per call and the weight (or cache) bytes it must read per
// second, to set beside copy_bandwidth's figure. Usage: kernel_bench [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../src/engine/cuda/attention.cuh"
#include "../src/engine/cuda/dequantize.cuh"
#include "../src/engine/cuda/gemm.hpp"
#include "../src/engine/cuda/matvec.cuh"
#include "../src/engine/cuda/plan.hpp"

using namespace chatai;
using namespace chatai::engine;
using namespace chatai::engine::cuda;

namespace {

bool check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "kernel_bench: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

// Device memory of a case, freed with it.
struct device_bytes {
  void* p = nullptr;
  explicit device_bytes(std::size_t n, int fill) {
    if (check(cudaMalloc(&p, n), "cudaMalloc")) check(cudaMemset(p, fill, n), "cudaMemset");
  }
  ~device_bytes() { cudaFree(p); }
  device_bytes(const device_bytes&) = delete;
  device_bytes& operator=(const device_bytes&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Microseconds per call of `launch`, the median of `rounds` rounds of `calls` calls each.
template <class F>
double time_us(F&& launch, int rounds, int calls) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i) launch();  // warm-up
  std::vector<float> ms;
  for (int r = 0; r < rounds; ++r) {
    cudaEventRecord(start);
    for (int i = 0; i < calls; ++i) launch();
    cudaEventRecord(stop);
    if (!check(cudaEventSynchronize(stop), "launches")) break;
    float elapsed = 0.0f;
    cudaEventElapsedTime(&elapsed, start, stop);
    ms.push_back(elapsed);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (ms.empty()) return -1.0;
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[ms.size() / 2] / calls;
}

void matvec_case(ggml_type type, std::int64_t rows, std::int64_t cols, bool glu, int rounds) {
  const auto& info = type_info(type);
  const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
  const int matrices = glu ? 2 : 1;
  // 0x11 in every byte: finite scales and levels for every type.
  device_bytes w(static_cast<std::size_t>(matrices * rows) * row_bytes, 0x11);
  device_bytes x(static_cast<std::size_t>(max_matvec_tokens * cols) * sizeof(float), 0);
  device_bytes y(static_cast<std::size_t>(matrices * max_matvec_tokens * rows) * sizeof(float), 0);
  for (std::int64_t n : {1, 2, 4, 8}) {
    matvec_args a;
    a.n_parts = matrices;
    for (int m = 0; m < matrices; ++m) {
      a.parts[m] = {w.as<std::byte>() + static_cast<std::size_t>(m * rows) * row_bytes, rows,
                    y.as<float>() + m * max_matvec_tokens * rows, rows};
    }
    a.glu = glu;
    a.row_bytes = row_bytes;
    a.cols = cols;
    a.x = x.as<float>();
    a.n_tokens = n;
    bool ok = true;
    const double us = time_us([&] { ok = ok && launch_matvec(type, a, nullptr).ok(); }, rounds, 20);
    const double bytes = static_cast<double>(matrices * rows) * static_cast<double>(row_bytes);
    if (!ok || us < 0) {
      std::printf("matvec %-5s %s%lldx%lld n=%lld: FAILED\n", std::string(to_string(type)).c_str(), glu ? "2x" : "",
                  static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n));
      continue;
    }
    std::printf("matvec %-5s %s%lldx%lld n=%lld: %8.1f us %7.0f GB/s\n", std::string(to_string(type)).c_str(),
                glu ? "2x" : "", static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n), us,
                bytes / (us * 1e-6) / 1e9);
  }
}

// n tokens through one 4096 x 4096 matrix of `type`: as the backend's GEMM path computes
// them, and as ceil(n / 8) matrix-vector launches.
void gemm_case(cublasHandle_t cublas, ggml_type type, int rounds) {
  const std::int64_t rows = 4096, cols = 4096, max_n = 512;
  const auto& info = type_info(type);
  const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
  device_bytes w(static_cast<std::size_t>(rows) * row_bytes, 0x11);
  device_bytes x(static_cast<std::size_t>(max_n * cols) * sizeof(float), 0);
  device_bytes xb(static_cast<std::size_t>(max_n * cols) * 2, 0);
  device_bytes tile(static_cast<std::size_t>(rows * cols) * 2, 0);  // the whole matrix: one tile
  device_bytes y(static_cast<std::size_t>(max_n * rows) * sizeof(float), 0);
  const std::string name(to_string(type));
  for (std::int64_t n : {16, 32, 64, 128, 512}) {
    bool ok = true;
    const double gemm_us = time_us(
        [&] {
          ok = ok && launch_to_bf16(x.as<float>(), n * cols, xb.as<std::uint16_t>(), nullptr).ok();
          const auto* weights = w.as<std::uint16_t>();
          if (type != ggml_type::bf16) {
            ok = ok && launch_dequantize_bf16(type, w.as<std::byte>(), row_bytes, rows, cols, tile.as<std::uint16_t>(),
                                              nullptr).ok();
            weights = tile.as<std::uint16_t>();
          }
          ok = ok && gemm_bf16(cublas, weights, rows, cols, xb.as<std::uint16_t>(), n, y.as<float>(), rows).ok();
        },
        rounds, 5);
    const double matvec_us = time_us(
        [&] {
          for (std::int64_t t0 = 0; t0 < n; t0 += max_matvec_tokens) {
            matvec_args a;
            a.parts[0] = {w.as<std::byte>(), rows, y.as<float>() + t0 * rows, rows};
            a.row_bytes = row_bytes;
            a.cols = cols;
            a.x = x.as<float>() + t0 * cols;
            a.n_tokens = std::min(max_matvec_tokens, n - t0);
            ok = ok && launch_matvec(type, a, nullptr).ok();
          }
        },
        rounds, 5);
    if (!ok || gemm_us < 0 || matvec_us < 0) {
      std::printf("gemm   %-5s 4096x4096 n=%lld: FAILED\n", name.c_str(), static_cast<long long>(n));
      continue;
    }
    std::printf("gemm   %-5s 4096x4096 n=%lld: %8.1f us (dequantize + cuBLAS), %8.1f us (matrix-vector by 8)\n",
                name.c_str(), static_cast<long long>(n), gemm_us, matvec_us);
  }
}

void attention_case(std::int64_t length, int rounds) {
  const rope_params p{32, 8, 128, 128, false};  // an 8B model's heads
  kv_layout layout;
  layout.n_layer = 1;
  layout.page_tokens = 16;
  layout.n_pages = (length + layout.page_tokens - 1) / layout.page_tokens;
  layout.kv_dim = p.n_head_kv * p.head_dim;
  device_bytes k(static_cast<std::size_t>(layout.elements()) * 2, 0x11);
  device_bytes v(static_cast<std::size_t>(layout.elements()) * 2, 0x11);
  device_bytes q(static_cast<std::size_t>(p.n_head * p.head_dim) * sizeof(float), 0);
  device_bytes out(static_cast<std::size_t>(p.n_head * p.head_dim) * sizeof(float), 0);
  std::vector<std::int32_t> meta{static_cast<std::int32_t>(length - 1), 0};  // position, table
  for (std::int64_t i = 0; i < layout.n_pages; ++i) meta.push_back(static_cast<std::int32_t>(layout.n_pages - 1 - i));
  device_bytes dmeta(meta.size() * sizeof(std::int32_t), 0);
  check(cudaMemcpy(dmeta.p, meta.data(), meta.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  const std::int64_t splits = graph_attention_splits(length);  // as a decode graph runs it
  device_bytes partial(static_cast<std::size_t>(attention_partial_floats(1, p.n_head, splits, p.head_dim)) * 4, 0);
  attention_args a;
  a.p = p;
  a.q = q.as<float>();
  a.k_cache = k.as<std::uint16_t>();
  a.v_cache = v.as<std::uint16_t>();
  a.n_tokens = 1;
  const auto* m = dmeta.as<std::int32_t>();
  a.map = {m, m + 1, m + 2};
  a.layout = layout;
  a.scale = 0.088f;
  a.n_splits = splits;
  a.split_keys = attention_chunk;
  a.partial = partial.as<float>();
  a.out = out.as<float>();
  bool ok = true;
  const double us = time_us([&] { ok = ok && launch_attention(a, nullptr).ok(); }, rounds, 20);
  const double bytes = 2.0 * static_cast<double>(length * layout.kv_dim) * 2.0;  // keys and values, f16
  if (!ok || us < 0) {
    std::printf("attention 32/8 heads x 128, %lld positions: FAILED\n", static_cast<long long>(length));
    return;
  }
  std::printf("attention 32/8 heads x 128, %5lld positions, %2lld splits: %8.1f us %7.0f GB/s\n",
              static_cast<long long>(length), static_cast<long long>(splits), us, bytes / (us * 1e-6) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 3 : 11;
  int count = 0;
  if (!check(cudaGetDeviceCount(&count), "cudaGetDeviceCount") || count == 0) return 1;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n", prop.name);
  const ggml_type types[] = {ggml_type::f16,  ggml_type::bf16, ggml_type::q8_0, ggml_type::q4_0, ggml_type::q4_1,
                             ggml_type::q5_0, ggml_type::q5_1, ggml_type::q2_k, ggml_type::q3_k, ggml_type::q4_k,
                             ggml_type::q5_k, ggml_type::q6_k};
  for (ggml_type t : types) {
    if (quick && t != ggml_type::q8_0 && t != ggml_type::q4_k) continue;
    matvec_case(t, 4096, 4096, false, rounds);
    matvec_case(t, 14336, 4096, true, rounds);
  }
  cublasHandle_t cublas = nullptr;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "kernel_bench: cublasCreate failed\n");
    return 1;
  }
  for (ggml_type t : {ggml_type::bf16, ggml_type::q8_0, ggml_type::q4_k}) gemm_case(cublas, t, rounds);
  cublasDestroy(cublas);
  for (std::int64_t length : {512, 2048, 8192}) attention_case(length, rounds);
  return 0;
}
