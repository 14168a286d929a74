// The CUDA backend's forward pass. Weights are uploaded once into one device allocation;
// each step's token ids, positions and page tables go up in one copy; decode steps (up to
// max_matvec_tokens tokens) are captured once per shape as a CUDA graph and replayed.
#include "chatai/engine/cuda_backend.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "attention.cuh"
#include "check.hpp"
#include "dequantize.cuh"
#include "embedding.cuh"
#include "gemm.hpp"
#include "kv_pages.hpp"
#include "layout.hpp"
#include "matvec.cuh"
#include "plan.hpp"
#include "../sequence_checks.hpp"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace chatai::engine {
namespace {

using namespace cuda;

constexpr std::int64_t mib = 1 << 20;
constexpr std::int64_t max_logit_rows = 256;            // logits (or hidden states) computed at once
constexpr std::int64_t dequantize_tile_elements = 16 * mib;  // BF16 weight tile of the GEMMs: 32 MiB, fits in L2
constexpr std::int64_t reserve_bytes = 512 * mib;       // left free for cuBLAS, graphs and the driver
constexpr std::size_t alignment = 256;

std::string in_mib(std::int64_t bytes) { return std::to_string((bytes + mib - 1) / mib) + " MiB"; }

// Device memory, freed with its owner.
class device_memory {
 public:
  device_memory() = default;
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;
  ~device_memory() {
    if (ptr_) cudaFree(ptr_);
  }

  status allocate(std::int64_t bytes, std::string_view what) {
    if (cudaMalloc(&ptr_, static_cast<std::size_t>(std::max<std::int64_t>(bytes, 1))) != cudaSuccess) {
      cudaGetLastError();
      std::size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      ptr_ = nullptr;
      return error(errc::resource_exhausted, "out of GPU memory: " + std::string(what) + " needs " + in_mib(bytes) +
                                                 ", the device has " + in_mib(static_cast<std::int64_t>(free)) + " free of " +
                                                 in_mib(static_cast<std::int64_t>(total)));
    }
    return {};
  }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// Page-locked host memory for the per-step uploads.
class pinned_memory {
 public:
  pinned_memory() = default;
  pinned_memory(const pinned_memory&) = delete;
  pinned_memory& operator=(const pinned_memory&) = delete;
  ~pinned_memory() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  status allocate(std::size_t bytes) {
    CHATAI_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
    return {};
  }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// A weight matrix in device memory, in its file layout.
struct device_matrix {
  ggml_type type = ggml_type::f32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::size_t row_bytes = 0;
  const std::byte* data = nullptr;  // [rows × row_bytes]
};

struct device_layer {
  const float* attn_norm = nullptr;  // [n_embd]
  device_matrix wq, wk, wv, wo, w_gate, w_up, w_down;
  const float* bq = nullptr;  // [q_dim] or null
  const float* bk = nullptr;  // [kv_dim] or null
  const float* bv = nullptr;  // [kv_dim] or null
  const float* ffn_norm = nullptr;  // [n_embd]
  const float* q_norm = nullptr;    // [head_dim] or null: RMSNorm of each query head
  const float* k_norm = nullptr;    // [head_dim] or null with q_norm
  const float* post_attn_norm = nullptr;  // [n_embd] or null: RMSNorm of the attention output
  const float* post_ffn_norm = nullptr;   // [n_embd] or null: RMSNorm of the FFN output
};

struct sequence_state {
  std::int64_t capacity = 0;
  std::int64_t length = 0;
  std::vector<std::int32_t> pages;  // [ceil(length / page_tokens)] at least
};

// Where the step's per-token data lives in the metadata buffer (int32 elements).
struct meta_layout {
  std::int64_t tokens = 0, positions = 0, tables = 0, logit_rows = 0, pages = 0, total = 0;
  meta_layout(std::int64_t max_tokens, std::int64_t n_pages)
      : tokens(0), positions(max_tokens), tables(2 * max_tokens), logit_rows(3 * max_tokens), pages(4 * max_tokens),
        total(4 * max_tokens + n_pages) {}
};

// The weights' bytes in one allocation: each piece's offset, 256-byte aligned.
class upload_plan {
 public:
  std::size_t add(std::size_t bytes) {
    const std::size_t at = total_;
    total_ = (total_ + bytes + alignment - 1) / alignment * alignment;
    return at;
  }
  std::size_t total() const noexcept { return total_; }

 private:
  std::size_t total_ = 0;
};

class cuda_backend final : public backend {
 public:
  cuda_backend(std::shared_ptr<const model> m, const cuda_backend_options& options)
      : model_(std::move(m)), hp_(model_->hparams()), options_(options),
        max_tokens_(std::max<std::int64_t>(options.max_step_tokens, max_matvec_tokens)), meta_(max_tokens_, 0) {}

  ~cuda_backend() override {
    cudaSetDevice(options_.device);
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  status init() {
    CHATAI_CUDA_CHECK(cudaSetDevice(options_.device));
    cudaDeviceProp prop{};
    CHATAI_CUDA_CHECK(cudaGetDeviceProperties(&prop, options_.device));
    device_name_ = prop.name;
    CHATAI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CHATAI_CUBLAS_CHECK(cublasCreate(&cublas_));
    CHATAI_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    CHATAI_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    CHATAI_RETURN_IF_ERROR(upload_weights());
    CHATAI_RETURN_IF_ERROR(allocate_buffers());
    return allocate_kv_cache();
  }

  std::string description() const override {
    return "cuda " + device_name_ + ", KV cache " + std::to_string(layout_.n_pages * layout_.page_tokens) + " tokens";
  }

  const model_hparams& hparams() const noexcept override { return hp_; }

  result<sequence_id> create_sequence(std::int64_t max_tokens) override {
    if (max_tokens < 0) return error(errc::invalid_argument, "a sequence cannot hold a negative number of tokens");
    const std::int64_t capacity = max_tokens == 0 ? hp_.n_ctx_train : max_tokens;
    const std::int64_t pool_tokens = layout_.n_pages * layout_.page_tokens;
    if (capacity > pool_tokens) {
      return error(errc::resource_exhausted, "a sequence of " + std::to_string(capacity) +
                                                 " tokens exceeds the GPU KV cache of " + std::to_string(pool_tokens) + " tokens");
    }
    const sequence_id id = next_id_++;
    sequences_.emplace(id, sequence_state{capacity, 0, {}});
    return id;
  }

  status free_sequence(sequence_id sequence) override {
    auto it = sequences_.find(sequence);
    if (it == sequences_.end()) return unknown_sequence(sequence);
    pages_->release(it->second.pages);
    sequences_.erase(it);
    return {};
  }

  result<std::int64_t> sequence_length(sequence_id sequence) const override {
    auto it = sequences_.find(sequence);
    if (it == sequences_.end()) return unknown_sequence(sequence);
    return it->second.length;
  }

  result<std::int64_t> sequence_capacity(sequence_id sequence) const override {
    auto it = sequences_.find(sequence);
    if (it == sequences_.end()) return unknown_sequence(sequence);
    return it->second.capacity;
  }

  status truncate_sequence(sequence_id sequence, std::int64_t length) override {
    auto it = sequences_.find(sequence);
    if (it == sequences_.end()) return unknown_sequence(sequence);
    CHATAI_RETURN_IF_ERROR(check_truncation(sequence, it->second.length, length));
    it->second.length = length;
    pages_->shrink(it->second.pages, length);
    return {};
  }

  std::int64_t page_tokens() const noexcept override { return layout_.page_tokens; }

  status share_prefix(sequence_id from, sequence_id to, std::int64_t tokens) override {
    auto source = sequences_.find(from);
    if (source == sequences_.end()) return unknown_sequence(from);
    auto target = sequences_.find(to);
    if (target == sequences_.end()) return unknown_sequence(to);
    CHATAI_RETURN_IF_ERROR(check_sharing(from, source->second.length, to, target->second.length,
                                         target->second.capacity, tokens));
    pages_->share(source->second.pages, static_cast<std::size_t>(pages_->pages_for(tokens)), target->second.pages);
    target->second.length = tokens;
    return {};
  }

  status forward(const batch& step, logits_out& out) override {
    CHATAI_RETURN_IF_ERROR(validate(step));
    CHATAI_CUDA_CHECK(cudaSetDevice(options_.device));
    for (const batch_entry& e : step.entries) {
      sequence_state& s = sequences_.at(e.sequence);
      const auto n = static_cast<std::int64_t>(e.tokens.size());
      // A shared page this step writes into is copied first: its other holders keep theirs.
      for (const std::size_t i : shared_pages_written(s, n)) {
        const std::int32_t old = pages_->replace(s.pages, i);  // validate() counted the page
        CHATAI_RETURN_IF_ERROR(copy_page(old, s.pages[i]));
      }
      pages_->reserve(s.pages, s.length + n);  // validate() counted them
    }
    // The step's tokens in order, and which of them give an output row.
    struct token_ref {
      sequence_state* sequence;
      token_id token;
      std::int64_t position;
      bool output;
    };
    std::vector<token_ref> tokens;
    bool hidden = false;
    out.entry_rows.assign(1, 0);
    for (const batch_entry& e : step.entries) {
      sequence_state& s = sequences_.at(e.sequence);
      const auto n = static_cast<std::int64_t>(e.tokens.size());
      const bool every = e.logits == logits_mode::all || e.logits == logits_mode::hidden;
      hidden |= e.logits == logits_mode::hidden;
      for (std::int64_t i = 0; i < n; ++i) {
        const bool output = every || (e.logits == logits_mode::last && i == n - 1);
        tokens.push_back({&s, e.tokens[static_cast<std::size_t>(i)], s.length + i, output});
      }
      out.entry_rows.push_back(out.entry_rows.back() + (every ? n : e.logits == logits_mode::last ? 1 : 0));
    }
    out.width = hidden ? hp_.n_embd : hp_.n_vocab;
    out.values.resize(static_cast<std::size_t>(out.entry_rows.back() * out.width));

    // Chunks of at most max_tokens_ tokens run one after another; a sequence split across
    // chunks sees its earlier tokens in the cache, as it would in one step.
    std::int64_t out_row = 0;
    const auto total = static_cast<std::int64_t>(tokens.size());
    for (std::int64_t c0 = 0; c0 < total; c0 += max_tokens_) {
      const std::int64_t n = std::min(max_tokens_, total - c0);
      std::int32_t* host = host_meta_.as<std::int32_t>();
      std::unordered_map<const sequence_state*, std::int32_t> table_of;
      std::int64_t n_pages = 0, n_outputs = 0, max_length = 0;
      for (std::int64_t t = 0; t < n; ++t) {
        const token_ref& r = tokens[static_cast<std::size_t>(c0 + t)];
        auto [it, added] = table_of.try_emplace(r.sequence, static_cast<std::int32_t>(n_pages));
        if (added) {
          std::copy(r.sequence->pages.begin(), r.sequence->pages.end(), host + meta_.pages + n_pages);
          n_pages += static_cast<std::int64_t>(r.sequence->pages.size());
        }
        host[meta_.tokens + t] = r.token;
        host[meta_.positions + t] = static_cast<std::int32_t>(r.position);
        host[meta_.tables + t] = it->second;
        if (r.output) host[meta_.logit_rows + n_outputs++] = static_cast<std::int32_t>(t);
        max_length = std::max(max_length, r.position + 1);
      }
      CHATAI_CUDA_CHECK(cudaMemcpyAsync(meta_buffer_.as<std::int32_t>(), host,
                                        static_cast<std::size_t>(meta_.pages + n_pages) * sizeof(std::int32_t),
                                        cudaMemcpyHostToDevice, stream_));
      CHATAI_RETURN_IF_ERROR(run_chunk(n, n_outputs, max_length, hidden, out.values.data() + out_row * out.width));
      out_row += n_outputs;
    }
    for (const batch_entry& e : step.entries) sequences_.at(e.sequence).length += static_cast<std::int64_t>(e.tokens.size());
    return {};
  }

 private:
  status validate(const batch& step) const {
    CHATAI_RETURN_IF_ERROR(validate_batch(step, sequences_, hp_.n_vocab));
    std::int64_t new_pages = 0;
    for (const batch_entry& e : step.entries) {
      const sequence_state& s = sequences_.at(e.sequence);
      const auto n = static_cast<std::int64_t>(e.tokens.size());
      new_pages += std::max<std::int64_t>(0, pages_->pages_for(s.length + n) - static_cast<std::int64_t>(s.pages.size()));
      new_pages += static_cast<std::int64_t>(shared_pages_written(s, n).size());
    }
    if (new_pages > pages_->free_pages()) {
      return error(errc::resource_exhausted, "the GPU KV cache is full: the step needs " + std::to_string(new_pages) +
                                                 " more pages of " + std::to_string(layout_.page_tokens) + " tokens, " +
                                                 std::to_string(pages_->free_pages()) + " are free");
    }
    return {};
  }

  // The entries of s.pages that a step appending n tokens writes into while another sequence
  // holds them too (only the page of position s.length can be both held and partly written).
  std::vector<std::size_t> shared_pages_written(const sequence_state& s, std::int64_t n) const {
    std::vector<std::size_t> out;
    if (n <= 0) return out;
    const auto first = static_cast<std::size_t>(s.length / layout_.page_tokens);
    const auto last = static_cast<std::size_t>((s.length + n - 1) / layout_.page_tokens);
    for (std::size_t i = first; i <= last && i < s.pages.size(); ++i)
      if (pages_->shared(s.pages[i])) out.push_back(i);
    return out;
  }

  // Copies the keys and values of page `from` to page `to`, every layer, on the step's stream.
  status copy_page(std::int32_t from, std::int32_t to) {
    const std::size_t bytes = static_cast<std::size_t>(layout_.page_tokens * layout_.kv_dim) * sizeof(std::uint16_t);
    for (std::int64_t l = 0; l < layout_.n_layer; ++l) {
      for (device_memory* cache : {&k_cache_, &v_cache_}) {
        std::uint16_t* base = cache->as<std::uint16_t>();
        CHATAI_CUDA_CHECK(cudaMemcpyAsync(base + layout_.offset(l, to, 0), base + layout_.offset(l, from, 0), bytes,
                                          cudaMemcpyDeviceToDevice, stream_));
      }
    }
    return {};
  }

  status upload_weights() {
    upload_plan plan;
    struct piece {
      std::size_t offset;
      const void* host;
      std::size_t bytes;
    };
    std::vector<piece> pieces;
    const auto add = [&](const void* host, std::size_t bytes) {
      const std::size_t at = plan.add(bytes);
      pieces.push_back({at, host, bytes});
      return at;
    };
    const auto add_matrix = [&](const weight_matrix& w) {
      return std::pair(w, add(w.data, static_cast<std::size_t>(w.rows) * w.row_bytes));
    };
    const auto add_vector = [&](std::span<const float> v) {
      return v.empty() ? static_cast<std::size_t>(-1) : add(v.data(), v.size_bytes());
    };
    struct layer_offsets {
      std::size_t attn_norm, bq, bk, bv, ffn_norm, q_norm, k_norm, post_attn_norm, post_ffn_norm;
      std::pair<weight_matrix, std::size_t> wq, wk, wv, wo, w_gate, w_up, w_down;
    };
    std::vector<layer_offsets> offsets;
    const auto embd = add_matrix(model_->token_embedding());
    const bool tied = model_->output().data == model_->token_embedding().data;
    const auto output = tied ? embd : add_matrix(model_->output());
    const std::size_t output_norm = add_vector(model_->output_norm());
    std::vector<double> inv_freq;  // [n_layer × rope_dim / 2]: each layer's rotary angles per position
    for (std::int64_t li = 0; li < hp_.n_layer; ++li) {
      const auto layer = model_->rope_inv_freq(li);
      inv_freq.insert(inv_freq.end(), layer.begin(), layer.end());
    }
    const std::size_t inv_freq_at = add(inv_freq.data(), inv_freq.size() * sizeof(double));
    for (const layer_weights& l : model_->layers()) {
      offsets.push_back({add_vector(l.attn_norm), add_vector(l.bq), add_vector(l.bk), add_vector(l.bv),
                         add_vector(l.ffn_norm), add_vector(l.q_norm), add_vector(l.k_norm), add_vector(l.post_attn_norm),
                         add_vector(l.post_ffn_norm), add_matrix(l.wq),
                         add_matrix(l.wk), add_matrix(l.wv), add_matrix(l.wo), add_matrix(l.w_gate), add_matrix(l.w_up),
                         add_matrix(l.w_down)});
    }
    std::size_t free = 0, total = 0;
    CHATAI_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    const auto needed = static_cast<std::int64_t>(plan.total()) + buffer_bytes() + reserve_bytes;
    if (needed > static_cast<std::int64_t>(free)) {
      return error(errc::resource_exhausted,
                   "out of GPU memory: the model needs " + in_mib(needed) + " (weights " +
                       in_mib(static_cast<std::int64_t>(plan.total())) + ", buffers " + in_mib(buffer_bytes()) +
                       ", reserve " + in_mib(reserve_bytes) + "), " + device_name_ + " has " +
                       in_mib(static_cast<std::int64_t>(free)) + " free of " + in_mib(static_cast<std::int64_t>(total)));
    }
    CHATAI_RETURN_IF_ERROR(weights_.allocate(static_cast<std::int64_t>(plan.total()), "the weights"));
    auto* base = weights_.as<std::byte>();
    for (const piece& p : pieces) CHATAI_CUDA_CHECK(cudaMemcpy(base + p.offset, p.host, p.bytes, cudaMemcpyHostToDevice));

    const auto matrix = [base](const std::pair<weight_matrix, std::size_t>& m) {
      return device_matrix{m.first.type, m.first.rows, m.first.cols, m.first.row_bytes, base + m.second};
    };
    const auto vector = [base](std::size_t at) {
      return at == static_cast<std::size_t>(-1) ? nullptr : reinterpret_cast<const float*>(base + at);
    };
    embedding_ = matrix(embd);
    output_ = matrix(output);
    output_norm_ = vector(output_norm);
    inv_freq_ = reinterpret_cast<const double*>(base + inv_freq_at);
    for (const layer_offsets& o : offsets) {
      layers_.push_back({vector(o.attn_norm), matrix(o.wq), matrix(o.wk), matrix(o.wv), matrix(o.wo), matrix(o.w_gate),
                         matrix(o.w_up), matrix(o.w_down), vector(o.bq), vector(o.bk), vector(o.bv), vector(o.ffn_norm),
                         vector(o.q_norm), vector(o.k_norm), vector(o.post_attn_norm), vector(o.post_ffn_norm)});
    }
    return {};
  }

  std::int64_t widest() const noexcept { return std::max({hp_.n_embd, hp_.q_dim(), hp_.n_ff}); }

  // Bytes of the step buffers (without the attention's partial results, sized with the cache).
  std::int64_t buffer_bytes() const noexcept {
    const std::int64_t floats = max_tokens_ * (3 * hp_.n_embd + 2 * hp_.q_dim() + 2 * hp_.kv_dim() + 2 * hp_.n_ff) +
                                max_logit_rows * (hp_.n_embd + hp_.n_vocab);
    const std::int64_t halves = max_tokens_ * widest() + dequantize_tile_elements;
    return floats * 4 + halves * 2 + meta_layout(max_tokens_, 0).total * 4;
  }

  status allocate_buffers() {
    const auto floats = [this](device_memory& m, std::int64_t n, const char* what) { return m.allocate(n * 4, what); };
    CHATAI_RETURN_IF_ERROR(floats(x_, max_tokens_ * hp_.n_embd, "the residual stream"));
    CHATAI_RETURN_IF_ERROR(floats(h_, max_tokens_ * hp_.n_embd, "the normalized activations"));
    CHATAI_RETURN_IF_ERROR(floats(proj_, max_tokens_ * hp_.n_embd, "the projections"));
    CHATAI_RETURN_IF_ERROR(floats(q_, max_tokens_ * hp_.q_dim(), "the queries"));
    CHATAI_RETURN_IF_ERROR(floats(attn_, max_tokens_ * hp_.q_dim(), "the attention output"));
    CHATAI_RETURN_IF_ERROR(floats(k_, max_tokens_ * hp_.kv_dim(), "the keys"));
    CHATAI_RETURN_IF_ERROR(floats(v_, max_tokens_ * hp_.kv_dim(), "the values"));
    CHATAI_RETURN_IF_ERROR(floats(gate_, max_tokens_ * hp_.n_ff, "the FFN gate"));
    CHATAI_RETURN_IF_ERROR(floats(up_, max_tokens_ * hp_.n_ff, "the FFN up projection"));
    CHATAI_RETURN_IF_ERROR(floats(final_, max_logit_rows * hp_.n_embd, "the final norm"));
    CHATAI_RETURN_IF_ERROR(floats(logits_, max_logit_rows * hp_.n_vocab, "the logits"));
    CHATAI_RETURN_IF_ERROR(act_bf16_.allocate(max_tokens_ * widest() * 2, "the BF16 activations"));
    CHATAI_RETURN_IF_ERROR(tile_bf16_.allocate(dequantize_tile_elements * 2, "the BF16 weight tile"));
    return {};
  }

  status allocate_kv_cache() {
    layout_.n_layer = hp_.n_layer;
    layout_.kv_dim = hp_.kv_dim();
    layout_.page_tokens = 16;
    std::size_t free = 0, total = 0;
    CHATAI_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    // The partial results of split attention grow with the cache: count them per page.
    const std::int64_t partial_per_page =
        attention_partial_floats(max_matvec_tokens, hp_.n_head, 1, hp_.head_dim) * 4 * layout_.page_tokens / attention_chunk + 4;
    const std::int64_t usable = static_cast<std::int64_t>(free) - reserve_bytes;
    const std::int64_t pages = options_.kv_cache_bytes > 0
                                   ? kv_cache_pages(options_.kv_cache_bytes, 0, layout_.page_bytes())
                                   : kv_cache_pages(0, usable, layout_.page_bytes() + partial_per_page);
    if (pages < 1 || pages > INT32_MAX) {
      return error(errc::resource_exhausted, "out of GPU memory: no room for a KV cache (one page of " +
                                                 std::to_string(layout_.page_tokens) + " tokens needs " +
                                                 in_mib(layout_.page_bytes()) + ", " + in_mib(usable) + " is free)");
    }
    layout_.n_pages = pages;
    const std::int64_t half_bytes = layout_.elements() * 2;
    CHATAI_RETURN_IF_ERROR(k_cache_.allocate(half_bytes, "the key cache"));
    CHATAI_RETURN_IF_ERROR(v_cache_.allocate(half_bytes, "the value cache"));
    pages_.emplace(static_cast<std::int32_t>(pages), static_cast<std::int32_t>(layout_.page_tokens));
    max_splits_ = graph_attention_splits(pages * layout_.page_tokens);
    CHATAI_RETURN_IF_ERROR(partial_.allocate(
        attention_partial_floats(max_matvec_tokens, hp_.n_head, max_splits_, hp_.head_dim) * 4, "the attention partials"));
    meta_ = meta_layout(max_tokens_, pages);
    CHATAI_RETURN_IF_ERROR(meta_buffer_.allocate(meta_.total * 4, "the step metadata"));
    return host_meta_.allocate(static_cast<std::size_t>(meta_.total) * 4);
  }

  step_map map() const noexcept {
    const auto* meta = meta_buffer_.as<std::int32_t>();
    return {meta + meta_.positions, meta + meta_.tables, meta + meta_.pages};
  }

  // One product of a group: y[t * y_stride + r] = w.row(r) · x[t].
  struct product {
    const device_matrix* w;
    float* y;
    std::int64_t y_stride;
  };

  // The products of a group that share their activations x (n tokens), with the kernels the
  // plan picks: one matrix-vector launch for the whole group when its matrices have one type
  // and width. With `glu` the group is {gate, up} and gate's output becomes silu(gate) * up.
  status matmul(std::initializer_list<product> group, const float* x, std::int64_t n, bool glu = false) {
    const product& first = *group.begin();
    const bool uniform = std::all_of(group.begin(), group.end(), [&](const product& p) {
      return p.w->type == first.w->type && p.w->cols == first.w->cols && (!glu || p.w->rows == first.w->rows);
    });
    const bool gelu = glu && hp_.activation == ffn_activation::gelu_tanh;
    if (plan_matmul(first.w->type, n) == matmul_kernel::matvec && uniform) {
      matvec_args a;
      a.n_parts = 0;
      for (const product& p : group) a.parts[a.n_parts++] = {p.w->data, p.w->rows, p.y, p.y_stride};
      a.glu = glu && !gelu;  // the kernel fuses SiLU only
      a.row_bytes = first.w->row_bytes;
      a.cols = first.w->cols;
      a.x = x;
      a.n_tokens = n;
      CHATAI_RETURN_IF_ERROR(launch_matvec(first.w->type, a, stream_));
      if (gelu) CHATAI_RETURN_IF_ERROR(launch_geglu(first.y, (group.begin() + 1)->y, n * first.w->rows, stream_));
      return {};
    }
    for (const product& p : group) CHATAI_RETURN_IF_ERROR(matmul_one(*p.w, x, n, p.y, p.y_stride));
    if (glu) {
      const product& up = *(group.begin() + 1);
      CHATAI_RETURN_IF_ERROR(gelu ? launch_geglu(first.y, up.y, n * first.w->rows, stream_)
                                  : launch_swiglu(first.y, up.y, n * first.w->rows, stream_));
    }
    return {};
  }

  status matmul_one(const device_matrix& w, const float* x, std::int64_t n, float* y, std::int64_t y_stride) {
    const matmul_kernel kernel = plan_matmul(w.type, n);
    if (kernel == matmul_kernel::matvec) {
      matvec_args a;
      a.parts[0] = {w.data, w.rows, y, y_stride};
      a.row_bytes = w.row_bytes;
      a.cols = w.cols;
      a.x = x;
      a.n_tokens = n;
      return launch_matvec(w.type, a, stream_);
    }
    auto* xb = act_bf16_.as<std::uint16_t>();  // [n × w.cols]
    CHATAI_RETURN_IF_ERROR(launch_to_bf16(x, n * w.cols, xb, stream_));
    if (kernel == matmul_kernel::gemm_bf16) {
      return gemm_bf16(cublas_, reinterpret_cast<const std::uint16_t*>(w.data), w.rows, w.cols, xb, n, y, y_stride);
    }
    auto* tile = tile_bf16_.as<std::uint16_t>();  // [tile_rows × w.cols]
    const std::int64_t tile_rows = dequantize_tile_rows(w.rows, w.cols, dequantize_tile_elements);
    for (std::int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
      const std::int64_t rows = std::min(tile_rows, w.rows - r0);
      CHATAI_RETURN_IF_ERROR(launch_dequantize_bf16(w.type, w.data + static_cast<std::size_t>(r0) * w.row_bytes,
                                                    w.row_bytes, rows, w.cols, tile, stream_));
      CHATAI_RETURN_IF_ERROR(gemm_bf16(cublas_, tile, rows, w.cols, xb, n, y + r0, y_stride));
    }
    return {};
  }

  // Every layer for the chunk's n tokens, whose metadata is on the device.
  status enqueue_layers(std::int64_t n, std::int64_t n_splits, std::int64_t split_keys) {
    const std::int64_t n_embd = hp_.n_embd, q_dim = hp_.q_dim(), kv_dim = hp_.kv_dim(), n_ff = hp_.n_ff;
    const auto* meta = meta_buffer_.as<std::int32_t>();
    float* x = x_.as<float>();        // [n × n_embd]
    float* h = h_.as<float>();        // [n × n_embd]
    float* proj = proj_.as<float>();  // [n × n_embd]
    float* q = q_.as<float>();        // [n × q_dim]
    float* k = k_.as<float>();        // [n × kv_dim]
    float* v = v_.as<float>();        // [n × kv_dim]
    float* attn = attn_.as<float>();  // [n × q_dim]
    float* gate = gate_.as<float>();  // [n × n_ff]
    float* up = up_.as<float>();      // [n × n_ff]
    CHATAI_RETURN_IF_ERROR(launch_embedding(embedding_.type, embedding_.data, embedding_.row_bytes, n_embd,
                                            meta + meta_.tokens, n, x, stream_));
    if (hp_.embed_scale != 1.0f) CHATAI_RETURN_IF_ERROR(launch_scale(x, n * n_embd, hp_.embed_scale, stream_));
    const rope_params rp{hp_.n_head, hp_.n_head_kv, hp_.head_dim, hp_.rope_dim, hp_.rope_pairs == rope_pairing::neox};
    for (std::int64_t li = 0; li < hp_.n_layer; ++li) {
      const device_layer& l = layers_[static_cast<std::size_t>(li)];
      if (li > 0 && layers_[static_cast<std::size_t>(li - 1)].post_ffn_norm) {  // the FFN output normalized first
        CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(proj, nullptr, layers_[static_cast<std::size_t>(li - 1)].post_ffn_norm,
                                                  hp_.rms_eps, n, n_embd, nullptr, proj, stream_));
      }
      CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(x, li > 0 ? proj : nullptr, l.attn_norm, hp_.rms_eps, n, n_embd, nullptr, h, stream_));
      CHATAI_RETURN_IF_ERROR(matmul({{&l.wq, q, q_dim}, {&l.wk, k, kv_dim}, {&l.wv, v, kv_dim}}, h, n));
      if (l.q_norm) {  // each head in place, as a row of head_dim: q [n × n_head × head_dim]
        CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(q, nullptr, l.q_norm, hp_.rms_eps, n * hp_.n_head, hp_.head_dim,
                                                  nullptr, q, stream_));
        CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(k, nullptr, l.k_norm, hp_.rms_eps, n * hp_.n_head_kv, hp_.head_dim,
                                                  nullptr, k, stream_));
      }
      const double* inv_freq = inv_freq_ + li * (hp_.rope_dim / 2);
      CHATAI_RETURN_IF_ERROR(launch_rope_store(rp, q, k, v, l.bq, l.bk, l.bv, inv_freq, n, map(), layout_, li,
                                               k_cache_.as<std::uint16_t>(), v_cache_.as<std::uint16_t>(), stream_));
      attention_args a;
      a.p = rp;
      a.q = q;
      a.k_cache = k_cache_.as<std::uint16_t>();
      a.v_cache = v_cache_.as<std::uint16_t>();
      a.n_tokens = n;
      a.map = map();
      a.layout = layout_;
      a.layer = li;
      a.scale = hp_.attn_scale;
      a.window = hp_.windowed(li) ? hp_.sliding_window : 0;
      a.softcap = hp_.attn_softcap;
      a.n_splits = n_splits;
      a.split_keys = split_keys;
      a.partial = partial_.as<float>();
      a.out = attn;
      CHATAI_RETURN_IF_ERROR(launch_attention(a, stream_));
      CHATAI_RETURN_IF_ERROR(matmul({{&l.wo, proj, n_embd}}, attn, n));
      if (l.post_attn_norm) {
        CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(proj, nullptr, l.post_attn_norm, hp_.rms_eps, n, n_embd, nullptr, proj, stream_));
      }
      CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(x, proj, l.ffn_norm, hp_.rms_eps, n, n_embd, nullptr, h, stream_));
      CHATAI_RETURN_IF_ERROR(matmul({{&l.w_gate, gate, n_ff}, {&l.w_up, up, n_ff}}, h, n, true));  // gate = act(gate) * up
      CHATAI_RETURN_IF_ERROR(matmul({{&l.w_down, proj, n_embd}}, gate, n));
    }
    // The last FFN output, normalized where the model says: the outputs add it to x.
    if (const float* norm = layers_.back().post_ffn_norm) {
      CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(proj, nullptr, norm, hp_.rms_eps, n, n_embd, nullptr, proj, stream_));
    }
    return {};
  }

  // The final norm of output rows [first, first + count) of the step (the last layer's
  // x + proj), then their logits; with `hidden` the normalized states are the output.
  status enqueue_outputs(std::int64_t first, std::int64_t count, bool hidden) {
    const auto* meta = meta_buffer_.as<std::int32_t>();
    CHATAI_RETURN_IF_ERROR(launch_add_rmsnorm(x_.as<float>(), proj_.as<float>(), output_norm_, hp_.rms_eps, count,
                                              hp_.n_embd, meta + meta_.logit_rows + first, final_.as<float>(), stream_));
    if (hidden) return {};
    CHATAI_RETURN_IF_ERROR(matmul({{&output_, logits_.as<float>(), hp_.n_vocab}}, final_.as<float>(), count));
    if (hp_.final_softcap > 0.0f) {
      CHATAI_RETURN_IF_ERROR(launch_soft_cap(logits_.as<float>(), count * hp_.n_vocab, hp_.final_softcap, stream_));
    }
    return {};
  }

  // One chunk of n tokens whose n_outputs output rows (logits, or hidden states) are copied
  // to host_out: [n_outputs × (hidden ? n_embd : n_vocab)].
  status run_chunk(std::int64_t n, std::int64_t n_outputs, std::int64_t max_length, bool hidden, float* host_out) {
    if (options_.use_graphs && use_graph(n)) {
      const std::int64_t splits = graph_attention_splits(max_length);
      const auto key = std::tuple(n, n_outputs, splits, hidden);
      auto it = graphs_.find(key);
      if (it == graphs_.end()) {
        cudaGraphExec_t exec = nullptr;
        CHATAI_RETURN_IF_ERROR(capture(n, n_outputs, splits, hidden, exec));
        it = graphs_.emplace(key, exec).first;
      }
      CHATAI_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    } else {
      const std::int64_t splits = n <= max_matvec_tokens ? attention_splits(max_length) : 1;
      const std::int64_t split_keys = (max_length + splits - 1) / splits;
      CHATAI_RETURN_IF_ERROR(enqueue_layers(n, splits, (split_keys + attention_chunk - 1) / attention_chunk * attention_chunk));
      if (n_outputs > 0) CHATAI_RETURN_IF_ERROR(enqueue_outputs(0, std::min(n_outputs, max_logit_rows), hidden));
    }
    const std::int64_t width = hidden ? hp_.n_embd : hp_.n_vocab;
    const float* rows = hidden ? final_.as<float>() : logits_.as<float>();  // [count × width] of the current group
    for (std::int64_t first = 0; first < n_outputs; first += max_logit_rows) {
      const std::int64_t count = std::min(max_logit_rows, n_outputs - first);
      if (first > 0) CHATAI_RETURN_IF_ERROR(enqueue_outputs(first, count, hidden));
      CHATAI_CUDA_CHECK(cudaMemcpyAsync(host_out + first * width, rows, static_cast<std::size_t>(count * width) * sizeof(float),
                                        cudaMemcpyDeviceToHost, stream_));
      CHATAI_CUDA_CHECK(cudaStreamSynchronize(stream_));  // final_ and logits_ are reused by the next group
    }
    if (n_outputs == 0) CHATAI_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the staged metadata is reused
    return {};
  }

  // Records the decode step of n tokens as a graph: metadata is read from the device, so
  // one graph serves every batch of this shape.
  status capture(std::int64_t n, std::int64_t n_outputs, std::int64_t splits, bool hidden, cudaGraphExec_t& exec) {
    CHATAI_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    status recorded = enqueue_layers(n, splits, attention_chunk);
    if (recorded && n_outputs > 0) recorded = enqueue_outputs(0, n_outputs, hidden);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!recorded) {
      if (graph) cudaGraphDestroy(graph);
      return recorded;
    }
    CHATAI_CUDA_CHECK(ended);
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CHATAI_CUDA_CHECK(instantiated);
    return {};
  }

  std::shared_ptr<const model> model_;
  model_hparams hp_;
  cuda_backend_options options_;
  std::int64_t max_tokens_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  device_memory weights_;
  device_matrix embedding_;  // [n_vocab × n_embd]
  device_matrix output_;     // [n_vocab × n_embd]
  const float* output_norm_ = nullptr;  // [n_embd]
  const double* inv_freq_ = nullptr;    // [n_layer × rope_dim / 2]
  std::vector<device_layer> layers_;    // [n_layer]

  kv_layout layout_;
  device_memory k_cache_;  // [n_layer × n_pages × page_tokens × kv_dim] f16
  device_memory v_cache_;  // [n_layer × n_pages × page_tokens × kv_dim] f16
  std::optional<kv_page_pool> pages_;
  std::int64_t max_splits_ = 1;
  std::unordered_map<sequence_id, sequence_state> sequences_;
  sequence_id next_id_ = 1;

  meta_layout meta_;
  device_memory meta_buffer_;  // [meta_.total] int32: tokens, positions, tables, logit rows, pages
  pinned_memory host_meta_;    // [meta_.total] int32: staged here
  device_memory x_;        // [max_tokens × n_embd]: the residual stream
  device_memory h_;        // [max_tokens × n_embd]: normalized
  device_memory proj_;     // [max_tokens × n_embd]: attn_output or ffn_down
  device_memory q_;        // [max_tokens × q_dim]
  device_memory attn_;     // [max_tokens × q_dim]
  device_memory k_;        // [max_tokens × kv_dim]
  device_memory v_;        // [max_tokens × kv_dim]
  device_memory gate_;     // [max_tokens × n_ff]; then silu(gate) * up
  device_memory up_;       // [max_tokens × n_ff]
  device_memory final_;    // [max_logit_rows × n_embd]
  device_memory logits_;   // [max_logit_rows × n_vocab]
  device_memory act_bf16_;   // [max_tokens × widest] BF16: the GEMMs' activations
  device_memory tile_bf16_;  // [dequantize_tile_elements] BF16: the GEMMs' weight tile
  device_memory partial_;    // [max_matvec_tokens × n_head × max_splits × (head_dim + 2)]
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool>, cudaGraphExec_t> graphs_;  // by tokens, outputs, splits, hidden
};

}  // namespace

bool cuda_available() noexcept {
  int count = 0;
  const bool found = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return found;
}

std::string cuda_device_summary() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  if (count == 0) return "no CUDA device: the driver reports none";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "CUDA device 0";
  return std::string(prop.name) + ", " + in_mib(static_cast<std::int64_t>(prop.totalGlobalMem));
}

result<std::unique_ptr<backend>> create_cuda_backend(std::shared_ptr<const model> m, const cuda_backend_options& options) {
  if (!m) return error(errc::invalid_argument, "no model");
  if (!cuda_available()) return error(errc::unavailable, "device cuda: " + cuda_device_summary());
  if (options.max_step_tokens < 1) return error(errc::invalid_argument, "max_step_tokens must be at least 1");
  if (m->hparams().head_dim > max_head_dim || m->hparams().head_dim % 2 != 0) {
    return error(errc::unsupported, "head_dim " + std::to_string(m->hparams().head_dim) +
                                        " is odd or exceeds the CUDA backend's " + std::to_string(max_head_dim));
  }
  auto b = std::make_unique<cuda_backend>(std::move(m), options);
  CHATAI_RETURN_IF_ERROR(b->init());
  return std::unique_ptr<backend>(std::move(b));
}

}  // namespace chatai::engine
