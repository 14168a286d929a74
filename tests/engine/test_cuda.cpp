// The CUDA backend on a GPU: every kernel against its CPU reference on random inputs (outputs
// poisoned with NaN first, so unwritten elements fail), and whole-model logits of the CUDA
// backend against the CPU backend on synthetic models of every weight type and on the real
// model, and the hidden states and embeddings of both. Without a CUDA device every case that
// needs one prints "no CUDA device: skipped" and returns.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "../../src/engine/cpu/quant_blocks.hpp"
#include "../../src/engine/cpu/quant_reference.hpp"
#include "../../src/engine/cuda/attention.cuh"
#include "../../src/engine/cuda/dequantize.cuh"
#include "../../src/engine/cuda/embedding.cuh"
#include "../../src/engine/cuda/gemm.hpp"
#include "../../src/engine/cuda/matvec.cuh"
#include "../../src/engine/cuda/plan.hpp"
#include "../../src/engine/cuda/reference.hpp"
#include "../../src/engine/cuda/rmsnorm.cuh"
#include "../../src/engine/cuda/rope.cuh"
#include "../../src/engine/cuda/swiglu.cuh"
#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/cuda_backend.hpp"
#include "chatai/engine/embedding.hpp"
#include "chatai/engine/generator.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/quantize.hpp"
#include "chatai/engine/synth.hpp"
#include "temp_dir.hpp"

using namespace chatai;
using namespace chatai::engine;
using namespace chatai::engine::cuda;
namespace fs = std::filesystem;

namespace {

#define SKIP_WITHOUT_GPU()                   \
  if (!cuda_available()) {                   \
    MESSAGE("no CUDA device: skipped");      \
    return;                                  \
  }

const ggml_type all_weight_types[] = {ggml_type::f32,  ggml_type::f16,  ggml_type::bf16, ggml_type::q8_0,
                                      ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                                      ggml_type::q2_k, ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k,
                                      ggml_type::q6_k};

// Device memory for a test, filled from and read back to host vectors.
template <class T>
class device_vector {
 public:
  explicit device_vector(std::size_t n) : n_(n) { REQUIRE(cudaMalloc(&p_, std::max<std::size_t>(n, 1) * sizeof(T)) == cudaSuccess); }
  explicit device_vector(const std::vector<T>& host) : device_vector(host.size()) { upload(host); }
  ~device_vector() { cudaFree(p_); }
  device_vector(const device_vector&) = delete;
  device_vector& operator=(const device_vector&) = delete;
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    REQUIRE(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> download() const {
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<T> host(n_);
    REQUIRE(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return host;
  }
  // Every byte 0xff: NaN for floats and f16, and a value no kernel writes by chance.
  void poison() { REQUIRE(cudaMemset(p_, 0xff, n_ * sizeof(T)) == cudaSuccess); }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

std::vector<float> random_values(std::mt19937& rng, std::int64_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<std::byte> quantized(ggml_type type, const std::vector<float>& values) {
  const auto& info = type_info(type);
  std::vector<std::byte> out(values.size() / static_cast<std::size_t>(info.block_size) * info.type_size);
  cpu::quantize_row(type, values.data(), out.data(), static_cast<std::int64_t>(values.size()));
  return out;
}

// The RMS of got - want over the RMS of want.
double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

void require_ok(const status& st) { REQUIRE_MESSAGE(st.ok(), (st.ok() ? std::string() : st.err().message())); }

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

}  // namespace

TEST_CASE("matrix-vector kernels match the reference for every type and 1 to 8 tokens") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  const std::int64_t rows = 67, cols = 768, y_stride = 80;  // a partial block of rows; unwritten tail
  for (ggml_type t : all_weight_types) {
    const auto w = quantized(t, random_values(rng, rows * cols, 0.05f));
    device_vector<std::byte> dw(w);
    for (std::int64_t n : {1, 2, 3, 4, 5, 8}) {  // each width of kernel, full and partly used
      CAPTURE(to_string(t));
      CAPTURE(n);
      const auto x = random_values(rng, n * cols, 1.0f);
      device_vector<float> dx(x);
      device_vector<float> dy(static_cast<std::size_t>(n * y_stride));
      dy.poison();
      matvec_args a;
      a.parts[0] = {dw.get(), rows, dy.get(), y_stride};
      a.row_bytes = w.size() / rows;
      a.cols = cols;
      a.x = dx.get();
      a.n_tokens = n;
      require_ok(launch_matvec(t, a, nullptr));
      const auto got = dy.download();
      std::vector<float> want(got.size(), NAN);
      reference_matmul(t, w.data(), rows, cols, x.data(), n, want.data(), y_stride);
      std::vector<float> got_rows, want_rows;
      for (std::int64_t i = 0; i < n; ++i) {
        for (std::int64_t r = 0; r < y_stride; ++r) {
          const float g = got[i * y_stride + r];
          if (r >= rows) {
            REQUIRE(std::isnan(g));  // past the rows: untouched
            continue;
          }
          got_rows.push_back(g);
          want_rows.push_back(want[i * y_stride + r]);
        }
      }
      REQUIRE(all_finite(got_rows));
      CHECK(relative_error(got_rows, want_rows) < 1e-5);
    }
  }
}

TEST_CASE("a matrix-vector launch refuses a token count outside 1 to 8 before it touches the device") {
  // No device needed: the count is checked first.
  for (std::int64_t n : {std::int64_t{0}, max_matvec_tokens + 1}) {
    CAPTURE(n);
    matvec_args a;
    a.n_tokens = n;
    const status st = launch_matvec(ggml_type::q8_0, a, nullptr);
    REQUIRE_FALSE(st.ok());
    CHECK(st.err().code() == errc::invalid_argument);
    CHECK(st.err().message().find("1 to 8 tokens") != std::string::npos);
  }
}

TEST_CASE("one launch computes Q, K and V together, and the gate and up products with SwiGLU") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  const std::int64_t cols = 512, n = 5;
  const std::int64_t rows[3] = {96, 33, 33};
  for (ggml_type t : {ggml_type::q4_k, ggml_type::q8_0, ggml_type::bf16}) {
    CAPTURE(to_string(t));
    const auto x = random_values(rng, n * cols, 1.0f);
    device_vector<float> dx(x);
    std::vector<std::vector<std::byte>> w;
    std::vector<std::unique_ptr<device_vector<std::byte>>> dw;
    std::vector<std::unique_ptr<device_vector<float>>> dy;
    matvec_args a;
    a.n_parts = 3;
    a.cols = cols;
    a.x = dx.get();
    a.n_tokens = n;
    for (int p = 0; p < 3; ++p) {
      w.push_back(quantized(t, random_values(rng, rows[p] * cols, 0.05f)));
      dw.push_back(std::make_unique<device_vector<std::byte>>(w[p]));
      dy.push_back(std::make_unique<device_vector<float>>(n * rows[p]));
      dy[p]->poison();
      a.parts[p] = {dw[p]->get(), rows[p], dy[p]->get(), rows[p]};
    }
    a.row_bytes = w[0].size() / rows[0];
    require_ok(launch_matvec(t, a, nullptr));
    for (int p = 0; p < 3; ++p) {
      std::vector<float> want(n * rows[p]);
      reference_matmul(t, w[p].data(), rows[p], cols, x.data(), n, want.data(), rows[p]);
      const auto got = dy[p]->download();
      REQUIRE(all_finite(got));
      CHECK(relative_error(got, want) < 1e-5);
    }

    // Gate and up: parts 1 and 2 have equal rows.
    a.n_parts = 2;
    a.glu = true;
    a.parts[0] = {dw[1]->get(), rows[1], dy[1]->get(), rows[1]};
    a.parts[1] = {dw[2]->get(), rows[2], dy[2]->get(), rows[2]};
    dy[1]->poison();
    require_ok(launch_matvec(t, a, nullptr));
    std::vector<float> gate(n * rows[1]), up(n * rows[2]);
    reference_matmul(t, w[1].data(), rows[1], cols, x.data(), n, gate.data(), rows[1]);
    reference_matmul(t, w[2].data(), rows[2], cols, x.data(), n, up.data(), rows[2]);
    reference_swiglu(gate.data(), up.data(), n * rows[1]);
    const auto got = dy[1]->download();
    REQUIRE(all_finite(got));
    CHECK(relative_error(got, gate) < 1e-4);
  }
}

TEST_CASE("embedding and BF16 conversions match the reference") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  const std::int64_t rows = 9, cols = 512;
  for (ggml_type t : all_weight_types) {
    CAPTURE(to_string(t));
    const auto w = quantized(t, random_values(rng, rows * cols, 1.0f));
    device_vector<std::byte> dw(w);
    const std::vector<std::int32_t> tokens{8, 0, 3, 8};
    device_vector<std::int32_t> dt(tokens);
    device_vector<float> de(tokens.size() * cols);
    de.poison();
    require_ok(launch_embedding(t, dw.get(), w.size() / rows, cols, dt.get(), 4, de.get(), nullptr));
    std::vector<float> want(tokens.size() * cols);
    reference_embedding(t, w.data(), cols, tokens.data(), 4, want.data());
    CHECK(de.download() == want);

    device_vector<std::uint16_t> db(rows * cols);
    db.poison();
    require_ok(launch_dequantize_bf16(t, dw.get(), w.size() / rows, rows, cols, db.get(), nullptr));
    std::vector<std::uint16_t> want_bf16(rows * cols);
    reference_dequantize_bf16(t, w.data(), rows, cols, want_bf16.data());
    const auto got = db.download();
    for (std::size_t i = 0; i < got.size(); ++i) {
      // Fused multiply-adds may move a K-quant value by one BF16 step.
      REQUIRE(std::fabs(cpu::bf16_to_f32(got[i]) - cpu::bf16_to_f32(want_bf16[i])) <=
              std::fabs(cpu::bf16_to_f32(want_bf16[i])) / 128.0f + 1e-30f);
    }
  }
  const auto x = random_values(rng, 1000, 3.0f);
  device_vector<float> dx(x);
  device_vector<std::uint16_t> dxb(x.size());
  dxb.poison();
  require_ok(launch_to_bf16(dx.get(), 1000, dxb.get(), nullptr));
  std::vector<std::uint16_t> want(x.size());
  reference_to_bf16(x.data(), 1000, want.data());
  CHECK(dxb.download() == want);
}

TEST_CASE("the cuBLAS GEMM matches the reference") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const std::int64_t rows = 300, cols = 256, n = 37, y_stride = 310;
  const auto w = quantized(ggml_type::bf16, random_values(rng, rows * cols, 0.05f));
  auto x = random_values(rng, n * cols, 1.0f);
  std::vector<std::uint16_t> xb(x.size());
  reference_to_bf16(x.data(), n * cols, xb.data());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = cpu::bf16_to_f32(xb[i]);  // what the GEMM sees
  std::vector<std::uint16_t> wb(w.size() / 2);
  std::memcpy(wb.data(), w.data(), w.size());
  device_vector<std::uint16_t> dw(wb), dx(xb);
  device_vector<float> dy(n * y_stride);
  dy.poison();
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  require_ok(gemm_bf16(handle, dw.get(), rows, cols, dx.get(), n, dy.get(), y_stride));
  const auto got = dy.download();
  cublasDestroy(handle);
  std::vector<float> want(got.size(), NAN);
  reference_matmul(ggml_type::bf16, w.data(), rows, cols, x.data(), n, want.data(), y_stride);
  std::vector<float> g, e;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t r = 0; r < y_stride; ++r) {
      if (r >= rows) {
        REQUIRE(std::isnan(got[i * y_stride + r]));
        continue;
      }
      g.push_back(got[i * y_stride + r]);
      e.push_back(want[i * y_stride + r]);
    }
  }
  REQUIRE(all_finite(g));
  CHECK(relative_error(g, e) < 1e-4);
}

TEST_CASE("norm, SwiGLU and rotary embedding with the KV store match the reference") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(4);
  const std::int64_t n = 576, n_tokens = 5;
  auto x = random_values(rng, n_tokens * n, 2.0f);
  const auto add = random_values(rng, n_tokens * n, 1.0f), weight = random_values(rng, n, 1.0f);
  const std::vector<std::int32_t> rows{4, 1};
  for (bool with_rows : {false, true}) {
    CAPTURE(with_rows);
    device_vector<float> dx(x), da(add), dw(weight), dh(n_tokens * n);
    device_vector<std::int32_t> dr(rows);
    dh.poison();
    const std::int64_t count = with_rows ? 2 : n_tokens;
    require_ok(launch_add_rmsnorm(dx.get(), da.get(), dw.get(), 1e-5f, count, n, with_rows ? dr.get() : nullptr, dh.get(), nullptr));
    auto want_x = x;
    std::vector<float> want_h(n_tokens * n, NAN);
    reference_add_rmsnorm(want_x.data(), add.data(), weight.data(), 1e-5f, count, n, with_rows ? rows.data() : nullptr,
                          want_h.data());
    const auto got_h = dh.download();
    CHECK(relative_error(dx.download(), want_x) < 1e-6);
    CHECK(relative_error({got_h.begin(), got_h.begin() + count * n}, {want_h.begin(), want_h.begin() + count * n}) < 1e-5);
    CHECK(std::all_of(got_h.begin() + count * n, got_h.end(), [](float v) { return std::isnan(v); }));
  }

  auto gate = random_values(rng, 3000, 2.0f);
  const auto up = random_values(rng, 3000, 1.0f);
  device_vector<float> dg(gate), du(up);
  require_ok(launch_swiglu(dg.get(), du.get(), 3000, nullptr));
  reference_swiglu(gate.data(), up.data(), 3000);
  CHECK(relative_error(dg.download(), gate) < 1e-5);

  // GeGLU, scaling and the soft cap: element-wise, against the host.
  auto gate2 = random_values(rng, 3000, 3.0f);
  device_vector<float> dg2(gate2);
  require_ok(launch_geglu(dg2.get(), du.get(), 3000, nullptr));
  reference_geglu(gate2.data(), up.data(), 3000);
  CHECK(relative_error(dg2.download(), gate2) < 1e-5);
  auto capped = random_values(rng, 3000, 10.0f);
  device_vector<float> dc(capped);
  require_ok(launch_scale(dc.get(), 3000, 1.5f, nullptr));
  require_ok(launch_soft_cap(dc.get(), 3000, 4.0f, nullptr));
  for (float& c : capped) c = 4.0f * std::tanh(c * 1.5f / 4.0f);
  CHECK(relative_error(dc.download(), capped) < 1e-5);

  for (bool neox : {false, true}) {
    CAPTURE(neox);
    const rope_params p{8, 2, 64, 64, neox};
    const kv_layout layout{3, 6, 16, p.n_head_kv * p.head_dim};
    const std::int64_t q_dim = p.n_head * p.head_dim, kv_dim = layout.kv_dim;
    auto q = random_values(rng, n_tokens * q_dim, 1.0f), k = random_values(rng, n_tokens * kv_dim, 1.0f);
    const auto v = random_values(rng, n_tokens * kv_dim, 1.0f);
    const auto bq = random_values(rng, q_dim, 0.2f), bk = random_values(rng, kv_dim, 0.2f), bv = random_values(rng, kv_dim, 0.2f);
    std::vector<double> inv_freq(p.rope_dim / 2);
    for (std::size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.0, -2.0 * double(i) / double(p.rope_dim));
    // Two sequences: tokens 0..2 at positions 30..32 (pages 5, 2, 0), tokens 3..4 at 0..1 (page 3).
    const std::vector<std::int32_t> positions{30, 31, 32, 0, 1}, tables{0, 0, 0, 3, 3}, pages{5, 2, 0, 3};
    device_vector<float> dq(q), dk(k), dv(v), dbq(bq), dbk(bk), dbv(bv);
    device_vector<double> dfreq(inv_freq);
    device_vector<std::int32_t> dpos(positions), dtab(tables), dpages(pages);
    device_vector<std::uint16_t> kc(layout.elements()), vc(layout.elements());
    kc.poison();
    vc.poison();
    require_ok(launch_rope_store(p, dq.get(), dk.get(), dv.get(), dbq.get(), dbk.get(), dbv.get(), dfreq.get(), n_tokens,
                                 {dpos.get(), dtab.get(), dpages.get()}, layout, 1, kc.get(), vc.get(), nullptr));
    std::vector<std::uint16_t> want_k(layout.elements(), 0xffff), want_v(layout.elements(), 0xffff);
    reference_rope_store(p, q.data(), k.data(), v.data(), bq.data(), bk.data(), bv.data(), inv_freq.data(), n_tokens,
                         {positions.data(), tables.data(), pages.data()}, layout, 1, want_k.data(), want_v.data());
    CHECK(relative_error(dq.download(), q) < 1e-5);
    CHECK(relative_error(dk.download(), k) < 1e-5);
    const auto got_k = kc.download(), got_v = vc.download();
    for (std::size_t i = 0; i < got_k.size(); ++i) {
      if (want_k[i] == 0xffff) {
        REQUIRE(got_k[i] == 0xffff);  // a slot no token writes stays as it was
        continue;
      }
      REQUIRE(std::fabs(cpu::f16_to_f32(got_k[i]) - cpu::f16_to_f32(want_k[i])) <= 2e-3f * (1 + std::fabs(cpu::f16_to_f32(want_k[i]))));
      REQUIRE(std::fabs(cpu::f16_to_f32(got_v[i]) - cpu::f16_to_f32(want_v[i])) <= 2e-3f * (1 + std::fabs(cpu::f16_to_f32(want_v[i]))));
    }
  }
}

TEST_CASE("split attention over scrambled pages matches the reference") {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  // 64 and 128: two and one slices of threads per value pair with none idle; 80: three slices
  // and eight idle threads; 256: the widest head, one slice.
  for (std::int64_t head_dim : {64, 80, 128, 256}) {
    const rope_params p{8, 2, head_dim, head_dim, false};
    const kv_layout layout{2, 80, 16, p.n_head_kv * head_dim};
    std::vector<std::uint16_t> kc(layout.elements()), vc(layout.elements());
    for (auto& e : kc) e = cpu::f32_to_f16(std::normal_distribution<float>()(rng));
    for (auto& e : vc) e = cpu::f32_to_f16(std::normal_distribution<float>()(rng));
    // Sequence A: 700 positions on 44 pages in reverse order; sequence B: 20 positions.
    std::vector<std::int32_t> pages;
    for (int i = 43; i >= 0; --i) pages.push_back(i);
    pages.push_back(60);
    pages.push_back(61);
    const std::vector<std::int32_t> positions{699, 3, 511, 19}, tables{0, 0, 0, 44};
    const std::int64_t n_tokens = 4, q_dim = p.n_head * head_dim;
    const auto q = random_values(rng, n_tokens * q_dim, 1.0f);
    const float scale = 1.0f / std::sqrt(float(head_dim));
    device_vector<std::uint16_t> dk(kc), dv(vc);
    device_vector<float> dq(q), dout(n_tokens * q_dim);
    device_vector<std::int32_t> dpos(positions), dtab(tables), dpages(pages);
    // Plain; a window that leaves whole splits of the long sequence empty; a short window with
    // a soft cap (Gemma 2's kind of layer) that bends these scores.
    for (const auto& [window, softcap] : {std::pair<std::int64_t, float>{0, 0.0f}, {100, 0.0f}, {37, 2.0f}}) {
      std::vector<float> want(n_tokens * q_dim);
      reference_attention(p, q.data(), kc.data(), vc.data(), n_tokens, {positions.data(), tables.data(), pages.data()},
                          layout, 1, scale, want.data(), window, softcap);
      for (std::int64_t splits : {1, 3, 4, 8}) {
        CAPTURE(head_dim);
        CAPTURE(splits);
        CAPTURE(window);
        CAPTURE(softcap);
        const std::int64_t split_keys = (700 + splits - 1) / splits;
        device_vector<float> partial(attention_partial_floats(n_tokens, p.n_head, splits, head_dim));
        partial.poison();
        dout.poison();
        attention_args a;
        a.p = p;
        a.q = dq.get();
        a.k_cache = dk.get();
        a.v_cache = dv.get();
        a.n_tokens = n_tokens;
        a.map = {dpos.get(), dtab.get(), dpages.get()};
        a.layout = layout;
        a.layer = 1;
        a.scale = scale;
        a.window = window;
        a.softcap = softcap;
        a.n_splits = splits;
        a.split_keys = (split_keys + attention_chunk - 1) / attention_chunk * attention_chunk;
        a.partial = partial.get();
        a.out = dout.get();
        if (a.n_splits * a.split_keys < 700) continue;
        require_ok(launch_attention(a, nullptr));
        const auto got = dout.download();
        REQUIRE(all_finite(got));
        CHECK(relative_error(got, want) < 1e-4);
      }
    }
  }
}

namespace {

// A synthetic model of a small shape in `type`; qwen3's and gemma's heads are wider than n_embd
// / n_head (q_dim != n_embd) and phi3's rotate part of each head, as Phi-4 mini's do; gemma's
// windows (64) are shorter than the tests' prompts and their caps bend the synthetic scores
// and logits; gemma3 has 7 layers, so that its sixth is global between windowed ones.
std::shared_ptr<const model> synthetic(ggml_type type, const fs::path& dir, model_arch arch = model_arch::llama) {
  synth_options o;
  o.shape = {"tiny", 512, 2048, 256, 2, 4, 2, 512, 10000.0f, false};
  if (arch == model_arch::qwen3) o.shape.head_dim = 128;
  if (arch == model_arch::phi3) o.shape.rope_dim = 48;
  if (arch == model_arch::gemma2 || arch == model_arch::gemma3) {
    o.shape.head_dim = 128;
    o.sliding_window = 64;
    o.attn_softcap = 1.5f;
    o.final_softcap = 3.0f;
    if (arch == model_arch::gemma3) o.shape.n_layer = 7;
  }
  o.arch = arch;
  o.type = type;
  o.seed = 9;
  const fs::path path = dir / (std::string(to_string(arch)) + "-" + std::string(to_string(type)) + ".gguf");
  require_ok(synthesize_model(o, path));
  auto m = model::load(path);
  REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string() : m.err().message()));
  return *m;
}

// The same weights expanded to f32: the CPU backend computes with them in f32 throughout,
// so the comparison with the CUDA backend sees only its own rounding (f16 KV cache, BF16
// GEMM operands), not the CPU's 8-bit activations.
std::unique_ptr<backend> cpu_reference_of(const model& m, const fs::path& dir) {
  const fs::path path = dir / "f32-reference.gguf";
  quantize_options q;
  q.type = ggml_type::f32;
  q.fallback = ggml_type::f32;
  require_ok(quantize_model(m.file(), path, q));
  auto f32 = model::load(path);
  REQUIRE(f32.ok());
  auto b = create_cpu_backend(*f32);
  REQUIRE(b.ok());
  return std::move(*b);
}

std::unique_ptr<backend> cuda_backend_of(std::shared_ptr<const model> m, cuda_backend_options o = {}) {
  if (o.kv_cache_bytes == 0) o.kv_cache_bytes = std::int64_t{256} << 20;  // tests share the device
  auto b = create_cuda_backend(std::move(m), o);
  REQUIRE_MESSAGE(b.ok(), (b.ok() ? std::string() : b.err().message()));
  return std::move(*b);
}

std::vector<float> logits_of(backend& b, const std::vector<token_id>& tokens, logits_mode mode) {
  auto seq = b.create_sequence(0);
  REQUIRE(seq.ok());
  logits_out out;
  require_ok(b.forward({{{*seq, tokens, mode}}}, out));
  REQUIRE(b.free_sequence(*seq).ok());
  return out.values;
}

std::vector<token_id> some_tokens(std::int64_t n, std::int64_t n_vocab) {
  std::vector<token_id> t(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = static_cast<token_id>((i * 37 + 11) % n_vocab);
  return t;
}

// A prompt long enough for the GEMM path (BF16 operands), then decode steps on the
// matrix-vector path (f32 activations), on both backends.
void check_against_cpu(const std::shared_ptr<const model>& m, const fs::path& dir, const std::string& t) {
  auto cpu = cpu_reference_of(*m, dir);
  auto gpu = cuda_backend_of(m);
  const auto prompt = some_tokens(300, m->hparams().n_vocab);
  const auto want = logits_of(*cpu, prompt, logits_mode::all);
  const auto got = logits_of(*gpu, prompt, logits_mode::all);
  REQUIRE(all_finite(got));
  const double prefill_error = relative_error(got, want);
  MESSAGE(t << ": prefill relative RMS error " << prefill_error);
  CHECK(prefill_error < 2e-2);

  auto cs = cpu->create_sequence(0), gs = gpu->create_sequence(0);
  REQUIRE(cs.ok());
  REQUIRE(gs.ok());
  logits_out co, go;
  require_ok(cpu->forward({{{*cs, prompt, logits_mode::none}}}, co));
  require_ok(gpu->forward({{{*gs, prompt, logits_mode::none}}}, go));
  CHECK(go.values.empty());
  for (int step = 0; step < 4; ++step) {
    const token_id next[] = {static_cast<token_id>(100 + step)};
    require_ok(cpu->forward({{{*cs, next, logits_mode::last}}}, co));
    require_ok(gpu->forward({{{*gs, next, logits_mode::last}}}, go));
    const double decode_error = relative_error(go.values, co.values);
    MESSAGE(t << ": decode step " << step << " relative RMS error " << decode_error);
    CHECK(decode_error < 2e-2);  // the cache holds the prompt's keys as the GEMM path computed them
  }
}

}  // namespace

TEST_CASE("whole-model logits of the CUDA backend match the CPU backend for every weight type") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  for (ggml_type t : all_weight_types) {
    CAPTURE(to_string(t));
    check_against_cpu(synthetic(t, dir.path()), dir.path(), std::string(to_string(t)));
  }
}

TEST_CASE("CUDA logits match the CPU backend for qwen2 biases, qwen3 head norms, phi3 fused matrices and gemma") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  for (model_arch arch : {model_arch::qwen2, model_arch::qwen3, model_arch::phi3, model_arch::gemma2, model_arch::gemma3}) {
    for (ggml_type t : {ggml_type::f16, ggml_type::q8_0, ggml_type::q4_k}) {
      const std::string label = std::string(to_string(arch)) + " " + std::string(to_string(t));
      CAPTURE(label);
      check_against_cpu(synthetic(t, dir.path(), arch), dir.path(), label);
    }
  }
}

TEST_CASE("batches, chunked steps and graphs do not change the CUDA logits") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  auto m = synthetic(ggml_type::q8_0, dir.path());
  const std::int64_t n_vocab = m->hparams().n_vocab;
  cuda_backend_options small;
  small.max_step_tokens = 64;  // a 300-token prompt runs in five chunks
  small.use_graphs = false;
  auto graphs = cuda_backend_of(m);
  auto plain = cuda_backend_of(m, small);
  const auto prompt = some_tokens(300, n_vocab);
  const auto a = logits_of(*graphs, prompt, logits_mode::all);
  const auto b = logits_of(*plain, prompt, logits_mode::all);
  CHECK(relative_error(b, a) < 1e-4);

  // Eight sequences of different lengths decoding together equal each decoding alone.
  std::vector<sequence_id> together, alone;
  for (int i = 0; i < 8; ++i) {
    auto s1 = graphs->create_sequence(0), s2 = plain->create_sequence(0);
    REQUIRE(s1.ok());
    REQUIRE(s2.ok());
    const auto p = some_tokens(5 + 40 * i, n_vocab);
    logits_out out;
    require_ok(graphs->forward({{{*s1, p, logits_mode::none}}}, out));
    require_ok(plain->forward({{{*s2, p, logits_mode::none}}}, out));
    together.push_back(*s1);
    alone.push_back(*s2);
  }
  for (int step = 0; step < 3; ++step) {
    std::vector<token_id> next(8);
    batch bt;
    for (int i = 0; i < 8; ++i) {
      next[i] = static_cast<token_id>(7 * i + step);
      bt.entries.push_back({together[i], std::span(&next[i], 1), logits_mode::last});
    }
    logits_out out;
    require_ok(graphs->forward(bt, out));
    REQUIRE(out.entry_rows.size() == 9);
    for (int i = 0; i < 8; ++i) {
      logits_out one;
      require_ok(plain->forward({{{alone[i], std::span(&next[i], 1), logits_mode::last}}}, one));
      const auto row = out.last_row(i);
      CHECK(relative_error({row.begin(), row.end()}, one.values) < 1e-4);
    }
  }
  for (int i = 0; i < 8; ++i) {
    REQUIRE(graphs->free_sequence(together[i]).ok());
    REQUIRE(plain->free_sequence(alone[i]).ok());
  }
}

TEST_CASE("CUDA sequences share a prefix's pages, and a shared page written into is copied first") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  auto m = synthetic(ggml_type::q8_0, dir.path());
  const std::int64_t n_vocab = m->hparams().n_vocab;
  auto b = cuda_backend_of(m);
  REQUIRE(b->page_tokens() > 0);
  const std::int64_t page = b->page_tokens();
  const auto a = some_tokens(3 * page, n_vocab);
  auto other = some_tokens(9, n_vocab);
  std::reverse(other.begin(), other.end());
  // The same steps on a sequence of its own, so that each logit comes from the same kernels
  // (the GEMM and matrix-vector paths differ by rounding, about 3e-3).
  const auto fresh = [&](std::span<const token_id> prefix, std::span<const token_id> tokens) {
    auto s = b->create_sequence(0);
    REQUIRE(s);
    logits_out fresh_out;
    require_ok(b->forward({{{*s, prefix, logits_mode::none}}}, fresh_out));
    require_ok(b->forward({{{*s, tokens, logits_mode::all}}}, fresh_out));
    REQUIRE(b->free_sequence(*s).ok());
    return fresh_out.values;
  };
  const std::span<const token_id> as(a);
  logits_out out;
  auto s1 = b->create_sequence(0);
  REQUIRE(s1);
  require_ok(b->forward({{{*s1, as, logits_mode::none}}}, out));
  // s2 takes a page and a half and writes other tokens into the page it shares with s1.
  auto s2 = b->create_sequence(0);
  REQUIRE(s2);
  require_ok(b->share_prefix(*s1, *s2, page + page / 2));
  require_ok(b->forward({{{*s2, other, logits_mode::all}}}, out));
  CHECK(relative_error(out.values, fresh(as.first(page + page / 2), other)) < 1e-4);
  // s1 still holds its own tokens there.
  require_ok(b->forward({{{*s1, std::span(other).first(2), logits_mode::all}}}, out));
  CHECK(relative_error(out.values, fresh(as, std::span(other).first(2))) < 1e-4);
  require_ok(b->free_sequence(*s1));
  require_ok(b->free_sequence(*s2));
}

TEST_CASE("the CUDA backend reports a full KV cache and misuse as errors") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  auto m = synthetic(ggml_type::q4_0, dir.path());
  cuda_backend_options o;
  o.kv_cache_bytes = 4 * 2 * 2 * 16 * 128 * 2;  // four pages of 16 tokens: 64 tokens in all
  auto b = cuda_backend_of(m, o);
  CHECK(b->description().find("64 tokens") != std::string::npos);
  CHECK(b->create_sequence(65).err().code() == errc::resource_exhausted);
  auto s1 = b->create_sequence(64), s2 = b->create_sequence(64);
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  logits_out out;
  require_ok(b->forward({{{*s1, some_tokens(40, 512), logits_mode::last}}}, out));
  const auto full = b->forward({{{*s2, some_tokens(30, 512), logits_mode::last}}}, out);
  REQUIRE_FALSE(full.ok());
  CHECK(full.err().code() == errc::resource_exhausted);
  CHECK(b->sequence_length(*s2).value() == 0);
  REQUIRE(b->truncate_sequence(*s1, 10).ok());  // frees two pages
  require_ok(b->forward({{{*s2, some_tokens(30, 512), logits_mode::last}}}, out));
  const token_id bad[] = {512};
  CHECK(b->forward({{{*s1, bad, logits_mode::last}}}, out).err().code() == errc::invalid_argument);
  CHECK(b->free_sequence(999).err().code() == errc::not_found);
}

TEST_CASE("the real model's CUDA logits match the CPU backend") {
  SKIP_WITHOUT_GPU();
  if (!fs::exists(CHATAI_TEST_MODEL) || std::string(CHATAI_TEST_MODEL).empty()) {
    MESSAGE("the test model is not installed: skipped");
    return;
  }
  auto loaded = model::load(CHATAI_TEST_MODEL);
  REQUIRE(loaded.ok());
  auto m = *loaded;
  test::temp_dir dir("chatai-cuda");
  auto cpu = cpu_reference_of(*m, dir.path());
  auto gpu = cuda_backend_of(m);
  const std::int64_t n_vocab = m->hparams().n_vocab;
  for (std::int64_t n : {6, 64}) {  // the matrix-vector path, then the GEMM path
    CAPTURE(n);
    const auto prompt = some_tokens(n, n_vocab);
    const auto want = logits_of(*cpu, prompt, logits_mode::all);
    const auto got = logits_of(*gpu, prompt, logits_mode::all);
    const double e = relative_error(got, want);
    MESSAGE("real model, " << n << " tokens: relative RMS error " << e);
    CHECK(e < (n <= max_matvec_tokens ? 5e-3 : 3e-2));
    std::int64_t agree = 0;
    for (std::int64_t r = 0; r < n; ++r) {
      const auto g = got.begin() + r * n_vocab, w = want.begin() + r * n_vocab;
      agree += std::max_element(g, g + n_vocab) - g == std::max_element(w, w + n_vocab) - w;
    }
    CHECK(agree >= n * 9 / 10);
  }
}

TEST_CASE("CUDA hidden states and embeddings match the CPU backend") {
  SKIP_WITHOUT_GPU();
  test::temp_dir dir("chatai-cuda");
  auto m = synthetic(ggml_type::q8_0, dir.path());
  auto cpu = cpu_reference_of(*m, dir.path());
  const std::int64_t n_embd = m->hparams().n_embd, n_vocab = m->hparams().n_vocab;
  cuda_backend_options plain;
  plain.use_graphs = false;
  for (bool graphs : {true, false}) {
    auto gpu = graphs ? cuda_backend_of(m) : cuda_backend_of(m, plain);
    for (std::int64_t n : {5, 300}) {  // the matrix-vector path (a graph when on), then the GEMM path
      CAPTURE(graphs);
      CAPTURE(n);
      const auto prompt = some_tokens(n, n_vocab);
      const auto want = logits_of(*cpu, prompt, logits_mode::hidden);
      const auto got = logits_of(*gpu, prompt, logits_mode::hidden);
      REQUIRE(got.size() == static_cast<std::size_t>(n * n_embd));
      REQUIRE(all_finite(got));
      const double e = relative_error(got, want);
      MESSAGE("hidden states, " << n << " tokens: relative RMS error " << e);
      CHECK(e < 2e-2);
      for (pooling p : {pooling::mean, pooling::last}) {
        embedding_options o;
        o.pool = p;
        o.chunk_tokens = 128;
        auto a = embed(*cpu, prompt, o), b = embed(*gpu, prompt, o);
        REQUIRE(a.ok());
        REQUIRE(b.ok());
        double dot = 0;
        for (std::size_t i = 0; i < a->size(); ++i) dot += double((*a)[i]) * (*b)[i];
        CHECK(dot > 0.999);  // both unit length: the cosine
      }
    }
    // Logits and hidden states in one step are refused, as on the CPU.
    auto s1 = gpu->create_sequence(0), s2 = gpu->create_sequence(0);
    REQUIRE(s1.ok());
    REQUIRE(s2.ok());
    const auto prompt = some_tokens(4, n_vocab);
    logits_out out;
    CHECK(gpu->forward({{{*s1, prompt, logits_mode::hidden}, {*s2, prompt, logits_mode::last}}}, out).err().code() ==
          errc::invalid_argument);
  }
}
