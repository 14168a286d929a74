// The CPU backend's forward pass: one thread-pool job per step, its phases separated by
// barriers; matrix products split by weight rows, each row applied to every token of the
// step while it is in cache, so a step reads the weights once whatever its batch size.
#include "chatai/engine/cpu_backend.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "chatai/engine/thread_pool.hpp"
#include "kernels.hpp"
#include "quant_blocks.hpp"
#include "quant_reference.hpp"
#include "../sequence_checks.hpp"

namespace chatai::engine {
namespace {

using cpu::activation_kind;
using cpu::kernel_table;
using cpu::weight_kernel;

// Weight bytes a thread applies to every token before moving on: they stay in L1/L2.
constexpr std::size_t chunk_bytes = 32 * 1024;
// Decode reads each row once, so its pieces can be small: the last piece of a phase, which
// one thread finishes while the others wait at the barrier, is short.
constexpr std::size_t decode_chunk_bytes = 8 * 1024;

// A thread's position in its share of a phase's pieces, alone on its cache line.
struct alignas(64) piece_cursor {
  std::atomic<std::int64_t> next{0};
};

// Positions per KV page: the unit sequences share cached prefixes in.
constexpr std::int64_t kv_page_tokens = 16;

// The keys and values of kv_page_tokens positions for every layer: keys [n_layer × n_head_kv ×
// head_dim × kv_page_tokens] (by dimension, see cpu::kv_columns), values [n_layer ×
// kv_page_tokens × kv_dim]. Shared by every sequence whose prefix it holds; written only by a
// sequence that holds it alone (a shared page is copied first).
struct kv_page {
  std::unique_ptr<float[]> keys;
  std::unique_ptr<float[]> values;
};

struct sequence_state {
  std::int64_t capacity = 0;
  std::int64_t length = 0;
  std::vector<std::shared_ptr<kv_page>> pages;  // position p is in pages[p / kv_page_tokens]
  // The pages' key and value bases, for the attention kernel; set up for each step.
  std::vector<const float*> key_pages, value_pages;
};

// Where one token of the step goes.
struct token_slot {
  sequence_state* sequence = nullptr;
  std::int64_t position = 0;
};

// An activation matrix in both forms the kernels take: f32 rows, and q8 rows when some
// weight needs them.
struct activations {
  const float* f32 = nullptr;      // [n_tokens × n]
  const std::byte* q8 = nullptr;   // [n_tokens × q8_row_layout::bytes(n)]
  std::size_t f32_stride = 0;      // bytes
  std::size_t q8_stride = 0;       // bytes
};

// One matrix product of a phase: y[t * y_stride + r] = w.row(r) · x[t].
struct product {
  const weight_matrix* w = nullptr;
  weight_kernel kernel;
  activations x;
  float* y = nullptr;
  std::size_t y_stride = 0;  // floats
};

std::pair<std::int64_t, std::int64_t> share(std::int64_t n, int index, int count) {
  return {n * index / count, n * (index + 1) / count};
}

class cpu_backend final : public backend {
 public:
  cpu_backend(std::shared_ptr<const model> m, const kernel_table& kernels, int n_threads)
      : model_(std::move(m)),
        hp_(model_->hparams()),
        kernels_(kernels),
        pool_(n_threads),
        cursors_(std::make_unique<piece_cursor[]>(static_cast<std::size_t>(phases_per_step() * pool_.size()))) {
    for (std::int64_t li = 0; li < hp_.n_layer; ++li) inv_freq_.push_back(model_->rope_inv_freq(li));
  }

  std::string description() const override {
    return "cpu " + std::string(to_string(kernels_.isa)) + ", " + std::to_string(pool_.size()) + " threads";
  }

  const model_hparams& hparams() const noexcept override { return hp_; }

  // Pages are allocated as a sequence grows, so a sequence costs nothing up front.
  result<sequence_id> create_sequence(std::int64_t max_tokens) override {
    if (max_tokens < 0) return error(errc::invalid_argument, "a sequence cannot hold a negative number of tokens");
    sequence_state s;
    s.capacity = max_tokens == 0 ? hp_.n_ctx_train : max_tokens;
    const sequence_id id = next_id_++;
    sequences_.emplace(id, std::move(s));
    return id;
  }

  status free_sequence(sequence_id sequence) override {
    auto it = sequences_.find(sequence);
    if (it == sequences_.end()) return unknown_sequence(sequence);
    drop_pages(it->second, 0);
    sequences_.erase(it);
    return {};
  }

  std::int64_t page_tokens() const noexcept override { return kv_page_tokens; }

  status share_prefix(sequence_id from, sequence_id to, std::int64_t tokens) override {
    auto source = sequences_.find(from);
    if (source == sequences_.end()) return unknown_sequence(from);
    auto target = sequences_.find(to);
    if (target == sequences_.end()) return unknown_sequence(to);
    CHATAI_RETURN_IF_ERROR(check_sharing(from, source->second.length, to, target->second.length,
                                         target->second.capacity, tokens));
    const auto n_pages = static_cast<std::size_t>((tokens + kv_page_tokens - 1) / kv_page_tokens);
    target->second.pages.assign(source->second.pages.begin(), source->second.pages.begin() + static_cast<std::ptrdiff_t>(n_pages));
    target->second.length = tokens;
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
    drop_pages(it->second, length);
    return {};
  }

  status forward(const batch& step, logits_out& out) override {
    CHATAI_RETURN_IF_ERROR(validate(step));
    try {
      prepare(step, out);
    } catch (const std::bad_alloc&) {
      return error(errc::resource_exhausted, "no memory for the buffers of a step of " + std::to_string(slots_.size()) + " tokens");
    }
    pool_.run([this, &out](int thread, int n_threads) { run_step(thread, n_threads, out); });
    for (const batch_entry& e : step.entries) sequences_.at(e.sequence).length += static_cast<std::int64_t>(e.tokens.size());
    return {};
  }

 private:
  // An attention tile: up to max_tile_tokens consecutive step tokens of one sequence.
  struct attention_tile {
    std::int64_t first_token = 0;
    std::int64_t count = 0;
  };
  static constexpr std::int64_t max_tile_tokens = 16;

  status validate(const batch& step) const { return validate_batch(step, sequences_, hp_.n_vocab); }

  std::size_t page_floats() const { return static_cast<std::size_t>(hp_.n_layer * kv_page_tokens * hp_.kv_dim()); }

  // A page for new positions: a free one, or a new one.
  std::shared_ptr<kv_page> new_page() {
    if (!free_pages_.empty()) {
      auto page = std::move(free_pages_.back());
      free_pages_.pop_back();
      return page;
    }
    auto page = std::make_shared<kv_page>();
    page->keys.reset(new float[page_floats()]);
    page->values.reset(new float[page_floats()]);
    return page;
  }

  // Drops the pages of `s` beyond those holding `length` positions; a page no other sequence
  // holds is kept for reuse (up to a few, so that memory goes back as the load falls).
  void drop_pages(sequence_state& s, std::int64_t length) {
    const auto keep = static_cast<std::size_t>((length + kv_page_tokens - 1) / kv_page_tokens);
    while (s.pages.size() > keep) {
      auto page = std::move(s.pages.back());
      s.pages.pop_back();
      if (page.use_count() == 1 && free_pages_.size() < max_free_pages) free_pages_.push_back(std::move(page));
    }
  }

  // Gives `s` pages of its own for positions [from, to): new ones past its last page, and a
  // copy of a shared page that a position in the range falls into.
  void own_pages(sequence_state& s, std::int64_t from, std::int64_t to) {
    const auto first = static_cast<std::size_t>(from / kv_page_tokens);
    const auto last = static_cast<std::size_t>((to - 1) / kv_page_tokens);
    for (std::size_t i = first; i <= last; ++i) {
      if (i >= s.pages.size()) {
        s.pages.push_back(new_page());
      } else if (s.pages[i].use_count() > 1) {
        auto copy = new_page();
        std::memcpy(copy->keys.get(), s.pages[i]->keys.get(), page_floats() * sizeof(float));
        std::memcpy(copy->values.get(), s.pages[i]->values.get(), page_floats() * sizeof(float));
        s.pages[i] = std::move(copy);
      }
    }
    s.key_pages.clear();
    s.value_pages.clear();
    for (const auto& page : s.pages) {
      s.key_pages.push_back(page->keys.get());
      s.value_pages.push_back(page->values.get());
    }
  }

  // Lays out the step's tokens and sizes the buffers (reused between steps).
  void prepare(const batch& step, logits_out& out) {
    slots_.clear();
    tiles_.clear();
    tokens_.clear();
    output_tokens_.clear();
    hidden_ = false;
    out.entry_rows.assign(1, 0);
    std::int64_t max_length = 0;
    for (const batch_entry& e : step.entries) {
      sequence_state& s = sequences_.at(e.sequence);
      const auto n = static_cast<std::int64_t>(e.tokens.size());
      own_pages(s, s.length, s.length + n);
      const bool every = e.logits == logits_mode::all || e.logits == logits_mode::hidden;
      hidden_ |= e.logits == logits_mode::hidden;
      for (std::int64_t i = 0; i < n; i += max_tile_tokens) {
        tiles_.push_back({static_cast<std::int64_t>(slots_.size()) + i, std::min(max_tile_tokens, n - i)});
      }
      for (std::int64_t i = 0; i < n; ++i) {
        const auto t = static_cast<std::int64_t>(slots_.size());
        slots_.push_back({&s, s.length + i});
        tokens_.push_back(e.tokens[static_cast<std::size_t>(i)]);
        if (every || (e.logits == logits_mode::last && i == n - 1)) output_tokens_.push_back(t);
      }
      out.entry_rows.push_back(static_cast<std::int64_t>(output_tokens_.size()));
      max_length = std::max(max_length, s.length + n);
    }
    const auto n_tokens = static_cast<std::size_t>(slots_.size());
    const auto n_logits = hidden_ ? 0 : output_tokens_.size();
    const auto q8 = [](std::int64_t n) { return cpu::q8_row_layout::bytes(n); };
    x_.resize(n_tokens * hp_.n_embd);
    h_.resize(n_tokens * hp_.n_embd);
    hq_.resize(n_tokens * q8(hp_.n_embd));
    q_.resize(n_tokens * hp_.q_dim());
    k_.resize(n_tokens * hp_.kv_dim());
    v_.resize(n_tokens * hp_.kv_dim());
    attn_.resize(n_tokens * hp_.q_dim());
    attnq_.resize(n_tokens * q8(hp_.q_dim()));
    proj_.resize(n_tokens * hp_.n_embd);
    gate_.resize(n_tokens * hp_.n_ff);
    up_.resize(n_tokens * hp_.n_ff);
    ffq_.resize(n_tokens * q8(hp_.n_ff));
    final_.resize(n_logits * hp_.n_embd);
    finalq_.resize(n_logits * q8(hp_.n_embd));
    // Whole pages of scores per thread (the kernels write a page's at once), after a tile's
    // running maxima and sums.
    const std::int64_t score_floats = (max_length + kv_page_tokens - 1) / kv_page_tokens * kv_page_tokens +
                                      2 * max_tile_tokens * hp_.n_head;
    tile_queries_.resize(static_cast<std::size_t>(pool_.size()));
    scores_.resize(static_cast<std::size_t>(pool_.size()) * static_cast<std::size_t>(score_floats));
    rope_scratch_.resize(static_cast<std::size_t>(pool_.size() * hp_.rope_dim));
    for (std::int64_t i = 0; i < phases_per_step() * pool_.size(); ++i) {
      cursors_[static_cast<std::size_t>(i)].next.store(0, std::memory_order_relaxed);
    }
    out.width = hidden_ ? hp_.n_embd : hp_.n_vocab;
    out.values.resize(output_tokens_.size() * static_cast<std::size_t>(out.width));
  }

  weight_kernel kernel(const weight_matrix& w) const { return kernels_.for_type(w.type); }

  // Normalizes rows [begin, end) of x into h (and its q8 form when `quantize`).
  void rms_norm_rows(const float* x, std::span<const float> weight, float* h, std::byte* hq, bool quantize,
                     std::int64_t n, std::int64_t begin, std::int64_t end) const {
    for (std::int64_t t = begin; t < end; ++t) {
      const float* xr = x + t * n;
      float* hr = h + t * n;
      double sum = 0.0;
      for (std::int64_t i = 0; i < n; ++i) sum += static_cast<double>(xr[i]) * xr[i];
      const auto scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + hp_.rms_eps));
      for (std::int64_t i = 0; i < n; ++i) hr[i] = xr[i] * scale * weight[static_cast<std::size_t>(i)];
      if (quantize) kernels_.quantize_q8(hr, hq + t * cpu::q8_row_layout::bytes(n), n);
    }
  }

  // The rows of every product, each row applied to all tokens, in chunks of weights claimed
  // as pieces of the phase (for_each_piece).
  void multiply(std::span<const product> products, std::int64_t n_tokens, int phase, int thread, int n_threads) const {
    const std::size_t bytes = n_tokens <= cpu::max_dot_columns ? decode_chunk_bytes : chunk_bytes;
    std::int64_t total = 0;
    for (const product& p : products) total += chunks_of(p, bytes);
    for_each_piece(phase, total, thread, n_threads, [&](std::int64_t c) {
      const product* p = products.data();
      while (c >= chunks_of(*p, bytes)) c -= chunks_of(*p++, bytes);
      const bool q8 = p->kernel.activations == activation_kind::q8;
      const std::byte* x = q8 ? p->x.q8 : reinterpret_cast<const std::byte*>(p->x.f32);
      const std::size_t x_stride = q8 ? p->x.q8_stride : p->x.f32_stride;
      const std::int64_t r0 = c * chunk_rows(*p, bytes);
      const std::int64_t r1 = std::min(p->w->rows, r0 + chunk_rows(*p, bytes));
      for (std::int64_t t = 0; t < n_tokens; t += cpu::max_dot_columns) {
        const int columns = static_cast<int>(std::min<std::int64_t>(cpu::max_dot_columns, n_tokens - t));
        for (std::int64_t r = r0; r < r1; ++r) {
          p->kernel.dot(p->w->cols, p->w->row(r), x + t * x_stride, x_stride, columns, p->y + t * p->y_stride + r, p->y_stride);
        }
      }
    });
  }

  static std::int64_t chunk_rows(const product& p, std::size_t bytes) {
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(bytes / p.w->row_bytes));
  }
  static std::int64_t chunks_of(const product& p, std::size_t bytes) {
    return (p.w->rows + chunk_rows(p, bytes) - 1) / chunk_rows(p, bytes);
  }

  // Calls work(i) once for each piece i in [0, n) of a phase, across the team: each thread
  // takes the pieces of its own share first, then helps the others with what is left of
  // theirs. With fixed shares a thread that loses its core for a while (to the server's I/O,
  // a client, another job on the node) leaves the others waiting at the next barrier for
  // the rest of its share; with one shared counter all threads would contend for its cache
  // line. Each piece runs on exactly one thread, so results do not depend on who ran it.
  template <class Work>
  void for_each_piece(int phase, std::int64_t n, int thread, int n_threads, Work&& work) const {
    piece_cursor* cursors = cursors_.get() + static_cast<std::ptrdiff_t>(phase) * n_threads;
    for (int k = 0; k < n_threads; ++k) {
      const int owner = (thread + k) % n_threads;
      const auto [begin, end] = share(n, owner, n_threads);
      std::atomic<std::int64_t>& next = cursors[owner].next;
      for (std::int64_t i = begin + next.fetch_add(1, std::memory_order_relaxed); i < end;
           i = begin + next.fetch_add(1, std::memory_order_relaxed)) {
        work(i);
      }
    }
  }

  // The phases of a step whose pieces are claimed (per layer: Q/K/V, attention, output,
  // gate/up, down; then the logits), each with a cursor per thread, zeroed before the step.
  std::int64_t phases_per_step() const noexcept { return 5 * hp_.n_layer + 1; }

  activations act(const float* f32, const std::byte* q8, std::int64_t n) const {
    return {f32, q8, static_cast<std::size_t>(n) * sizeof(float), cpu::q8_row_layout::bytes(n)};
  }

  void rope(float* v, std::int64_t n_heads, const double* cos_sin) const {
    const std::int64_t half = hp_.rope_dim / 2;
    for (std::int64_t h = 0; h < n_heads; ++h) {
      float* x = v + h * hp_.head_dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const std::int64_t a = hp_.rope_pairs == rope_pairing::neox ? i : 2 * i;
        const std::int64_t b = hp_.rope_pairs == rope_pairing::neox ? i + half : 2 * i + 1;
        const auto c = static_cast<float>(cos_sin[2 * i]);
        const auto s = static_cast<float>(cos_sin[2 * i + 1]);
        const float xa = x[a], xb = x[b];
        x[a] = xa * c - xb * s;
        x[b] = xa * s + xb * c;
      }
    }
  }

  // Attention of token t's head h over its sequence's cache up to its own position.
  void attend(std::int64_t layer, std::int64_t t, std::int64_t h, float* scores) {
    const token_slot& slot = slots_[static_cast<std::size_t>(t)];
    const std::int64_t hd = hp_.head_dim, kv_dim = hp_.kv_dim();
    const std::int64_t g = h / (hp_.n_head / hp_.n_head_kv);
    const std::int64_t n = slot.position + 1;
    const std::int64_t first = hp_.first_visible(layer, slot.position);
    const auto offset = static_cast<std::size_t>(layer * kv_page_tokens * kv_dim + g * hd);  // this head's hd columns
    const cpu::kv_columns keys{slot.sequence->key_pages.data(),
                               static_cast<std::size_t>((layer * hp_.n_head_kv + g) * hd * kv_page_tokens), kv_page_tokens};
    const cpu::kv_rows values{slot.sequence->value_pages.data(), offset, kv_page_tokens, kv_dim};
    const float* q = q_.data() + t * hp_.q_dim() + h * hd;  // [hd]
    float* o = attn_.data() + t * hp_.q_dim() + h * hd;     // [hd]
    kernels_.attend(hd, q, keys, values, first, n, hp_.attn_scale, hp_.attn_softcap, scores, o);
  }

  // Attention of a tile's tokens (consecutive tokens of one sequence) for the heads of KV
  // group g: each page of the group's keys and values read once for all of them.
  void attend_tile(std::int64_t layer, const attention_tile& tile, std::int64_t g, std::vector<cpu::tile_query>& queries,
                   float* scratch) {
    const std::int64_t hd = hp_.head_dim, kv_dim = hp_.kv_dim(), group = hp_.n_head / hp_.n_head_kv;
    const sequence_state& seq = *slots_[static_cast<std::size_t>(tile.first_token)].sequence;
    queries.clear();
    for (std::int64_t t = tile.first_token; t < tile.first_token + tile.count; ++t) {
      const std::int64_t position = slots_[static_cast<std::size_t>(t)].position;
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        queries.push_back({q_.data() + t * hp_.q_dim() + h * hd, attn_.data() + t * hp_.q_dim() + h * hd,
                           hp_.first_visible(layer, position), position + 1});
      }
    }
    const cpu::kv_columns keys{seq.key_pages.data(),
                               static_cast<std::size_t>((layer * hp_.n_head_kv + g) * hd * kv_page_tokens), kv_page_tokens};
    const cpu::kv_rows values{seq.value_pages.data(), static_cast<std::size_t>(layer * kv_page_tokens * kv_dim + g * hd),
                              kv_page_tokens, kv_dim};
    kernels_.attend_tile(hd, queries.data(), static_cast<std::int64_t>(queries.size()), keys, values, hp_.attn_scale,
                         hp_.attn_softcap, scratch);
  }

  // The whole step; every thread runs it, phases separated by barriers.
  void run_step(int thread, int n_threads, logits_out& out) {
    const auto n_tokens = static_cast<std::int64_t>(slots_.size());
    const std::int64_t n_embd = hp_.n_embd, q_dim = hp_.q_dim(), kv_dim = hp_.kv_dim(), n_ff = hp_.n_ff;
    const auto [t_begin, t_end] = share(n_tokens, thread, n_threads);

    for (std::int64_t t = t_begin; t < t_end; ++t) {
      const weight_matrix& e = model_->token_embedding();
      float* xr = x_.data() + t * n_embd;
      cpu::dequantize_row(e.type, e.row(tokens_[static_cast<std::size_t>(t)]), xr, n_embd);
      if (hp_.embed_scale != 1.0f) {
        for (std::int64_t i = 0; i < n_embd; ++i) xr[i] *= hp_.embed_scale;
      }
    }
    int phase = 0;  // whose cursors the next shared phase uses: every thread passes the same phases in order
    double* cos_sin = rope_scratch_.data() + static_cast<std::size_t>(thread * hp_.rope_dim);
    float* scores = scores_.data() + static_cast<std::size_t>(thread) * (scores_.size() / static_cast<std::size_t>(n_threads));

    const auto layers = model_->layers();
    for (std::int64_t li = 0; li < hp_.n_layer; ++li) {
      const layer_weights& l = layers[static_cast<std::size_t>(li)];
      const bool qkv_q8 = kernel(l.wq).activations == activation_kind::q8 || kernel(l.wk).activations == activation_kind::q8 ||
                          kernel(l.wv).activations == activation_kind::q8;
      // x += the previous layer's down projection (normalized first where the model says);
      // h = norm(x).
      if (li > 0) add_output(layers[static_cast<std::size_t>(li - 1)].post_ffn_norm, t_begin, t_end);
      rms_norm_rows(x_.data(), l.attn_norm, h_.data(), hq_.data(), qkv_q8, n_embd, t_begin, t_end);
      pool_.barrier();

      const activations hx = act(h_.data(), hq_.data(), n_embd);
      const product qkv[3] = {
          {&l.wq, kernel(l.wq), hx, q_.data(), static_cast<std::size_t>(q_dim)},
          {&l.wk, kernel(l.wk), hx, k_.data(), static_cast<std::size_t>(kv_dim)},
          {&l.wv, kernel(l.wv), hx, v_.data(), static_cast<std::size_t>(kv_dim)},
      };
      multiply(qkv, n_tokens, phase++, thread, n_threads);
      pool_.barrier();

      // Biases, head norms, rotary embedding, and the new keys and values into the caches.
      for (std::int64_t t = t_begin; t < t_end; ++t) {
        float* q = q_.data() + t * q_dim;
        float* k = k_.data() + t * kv_dim;
        float* v = v_.data() + t * kv_dim;
        if (!l.bq.empty()) {
          for (std::int64_t i = 0; i < q_dim; ++i) q[i] += l.bq[static_cast<std::size_t>(i)];
        }
        if (!l.bk.empty()) {
          for (std::int64_t i = 0; i < kv_dim; ++i) k[i] += l.bk[static_cast<std::size_t>(i)];
        }
        if (!l.bv.empty()) {
          for (std::int64_t i = 0; i < kv_dim; ++i) v[i] += l.bv[static_cast<std::size_t>(i)];
        }
        if (!l.q_norm.empty()) {  // each head normalized in place, as a row of head_dim
          rms_norm_rows(q, l.q_norm, q, nullptr, false, hp_.head_dim, 0, hp_.n_head);
          rms_norm_rows(k, l.k_norm, k, nullptr, false, hp_.head_dim, 0, hp_.n_head_kv);
        }
        const token_slot& slot = slots_[static_cast<std::size_t>(t)];
        const std::vector<double>& inv_freq = inv_freq_[static_cast<std::size_t>(li)];
        for (std::size_t i = 0; i < inv_freq.size(); ++i) {
          const double angle = static_cast<double>(slot.position) * inv_freq[i];
          cos_sin[2 * i] = std::cos(angle);
          cos_sin[2 * i + 1] = std::sin(angle);
        }
        rope(q, hp_.n_head, cos_sin);
        rope(k, hp_.n_head_kv, cos_sin);
        kv_page& page = *slot.sequence->pages[static_cast<std::size_t>(slot.position / kv_page_tokens)];
        const std::int64_t in_page = slot.position % kv_page_tokens;
        // Keys by dimension (kv_columns), values by position (kv_rows).
        float* key_columns = page.keys.get() + li * kv_page_tokens * kv_dim + in_page;
        for (std::int64_t i = 0; i < kv_dim; ++i) key_columns[i * kv_page_tokens] = k[i];
        const auto at = static_cast<std::size_t>((li * kv_page_tokens + in_page) * kv_dim);
        std::memcpy(page.values.get() + at, v, static_cast<std::size_t>(kv_dim) * sizeof(float));
      }
      pool_.barrier();

      // Items are pieces of the phase: a prompt's later tokens attend to more positions, so the
      // thread with the last share is helped by the others. Tiles (a run of a sequence's tokens
      // for the heads of one KV group) when there are enough of them to go round, else single
      // (token, head) items.
      const auto n_tile_items = static_cast<std::int64_t>(tiles_.size()) * hp_.n_head_kv;
      if (n_tile_items >= 4 * n_threads) {
        auto& queries = tile_queries_[static_cast<std::size_t>(thread)];
        for_each_piece(phase++, n_tile_items, thread, n_threads, [&](std::int64_t item) {
          attend_tile(li, tiles_[static_cast<std::size_t>(item / hp_.n_head_kv)], item % hp_.n_head_kv, queries, scores);
        });
      } else {
        for_each_piece(phase++, n_tokens * hp_.n_head, thread, n_threads,
                       [&](std::int64_t item) { attend(li, item / hp_.n_head, item % hp_.n_head, scores); });
      }
      pool_.barrier();

      const bool wo_q8 = kernel(l.wo).activations == activation_kind::q8;
      if (wo_q8) {
        for (std::int64_t t = t_begin; t < t_end; ++t) {
          kernels_.quantize_q8(attn_.data() + t * q_dim, attnq_.data() + t * cpu::q8_row_layout::bytes(q_dim), q_dim);
        }
        pool_.barrier();
      }
      const product wo[1] = {{&l.wo, kernel(l.wo), act(attn_.data(), attnq_.data(), q_dim), proj_.data(),
                              static_cast<std::size_t>(n_embd)}};
      multiply(wo, n_tokens, phase++, thread, n_threads);
      pool_.barrier();

      const bool ffn_q8 = kernel(l.w_gate).activations == activation_kind::q8 || kernel(l.w_up).activations == activation_kind::q8;
      add_output(l.post_attn_norm, t_begin, t_end);
      rms_norm_rows(x_.data(), l.ffn_norm, h_.data(), hq_.data(), ffn_q8, n_embd, t_begin, t_end);
      pool_.barrier();

      const product gate_up[2] = {
          {&l.w_gate, kernel(l.w_gate), hx, gate_.data(), static_cast<std::size_t>(n_ff)},
          {&l.w_up, kernel(l.w_up), hx, up_.data(), static_cast<std::size_t>(n_ff)},
      };
      multiply(gate_up, n_tokens, phase++, thread, n_threads);
      pool_.barrier();

      const bool down_q8 = kernel(l.w_down).activations == activation_kind::q8;
      for (std::int64_t t = t_begin; t < t_end; ++t) {
        float* g = gate_.data() + t * n_ff;
        const float* u = up_.data() + t * n_ff;
        (hp_.activation == ffn_activation::gelu_tanh ? kernels_.geglu : kernels_.swiglu)(g, u, n_ff);
        if (down_q8) kernels_.quantize_q8(g, ffq_.data() + t * cpu::q8_row_layout::bytes(n_ff), n_ff);
      }
      pool_.barrier();

      const product down[1] = {{&l.w_down, kernel(l.w_down), act(gate_.data(), ffq_.data(), n_ff), proj_.data(),
                                static_cast<std::size_t>(n_embd)}};
      multiply(down, n_tokens, phase++, thread, n_threads);
      pool_.barrier();
    }

    // The final norm of the tokens whose outputs were asked for: the hidden states themselves,
    // written straight into `out`, or the input of the output projection.
    const auto n_outputs = static_cast<std::int64_t>(output_tokens_.size());
    if (n_outputs == 0) return;
    const weight_matrix& output = model_->output();
    const bool out_q8 = !hidden_ && kernel(output).activations == activation_kind::q8;
    float* final = hidden_ ? out.values.data() : final_.data();  // [n_outputs × n_embd]
    const auto [r_begin, r_end] = share(n_outputs, thread, n_threads);
    const auto& last_norm = layers.back().post_ffn_norm;
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const std::int64_t t = output_tokens_[static_cast<std::size_t>(r)];
      float* xr = final + r * n_embd;
      if (!last_norm.empty()) rms_norm_rows(proj_.data(), last_norm, proj_.data(), nullptr, false, n_embd, t, t + 1);
      for (std::int64_t i = 0; i < n_embd; ++i) xr[i] = x_[t * n_embd + i] + proj_[t * n_embd + i];
    }
    rms_norm_rows(final, model_->output_norm(), final, finalq_.data(), out_q8, n_embd, r_begin, r_end);
    if (hidden_) return;
    pool_.barrier();
    const product logits[1] = {{&output, kernel(output), act(final_.data(), finalq_.data(), n_embd), out.values.data(),
                                static_cast<std::size_t>(hp_.n_vocab)}};
    multiply(logits, n_outputs, phase++, thread, n_threads);
    if (hp_.final_softcap > 0.0f) {
      pool_.barrier();
      const auto [v_begin, v_end] = share(n_outputs * hp_.n_vocab, thread, n_threads);
      kernels_.soft_cap(out.values.data() + v_begin, v_end - v_begin, hp_.final_softcap);
    }
  }

  // x += proj for tokens [begin, end), proj RMS-normalized first by `norm` unless it is empty.
  void add_output(std::span<const float> norm, std::int64_t begin, std::int64_t end) {
    const std::int64_t n_embd = hp_.n_embd;
    if (!norm.empty()) rms_norm_rows(proj_.data(), norm, proj_.data(), nullptr, false, n_embd, begin, end);
    for (std::int64_t t = begin; t < end; ++t) {
      for (std::int64_t i = 0; i < n_embd; ++i) x_[t * n_embd + i] += proj_[t * n_embd + i];
    }
  }

  std::shared_ptr<const model> model_;
  model_hparams hp_;
  const kernel_table& kernels_;
  thread_pool pool_;
  std::unique_ptr<piece_cursor[]> cursors_;  // [phases_per_step() × threads]: the next piece of each share
  std::vector<std::vector<double>> inv_freq_;  // [n_layer][rope_dim / 2]: rotary angle per position
  std::unordered_map<sequence_id, sequence_state> sequences_;
  sequence_id next_id_ = 1;
  // Pages no sequence holds, kept for the next ones.
  static constexpr std::size_t max_free_pages = 256;
  std::vector<std::shared_ptr<kv_page>> free_pages_;

  // The current step.
  std::vector<token_slot> slots_;            // [n_tokens]
  std::vector<attention_tile> tiles_;        // each entry's tokens, max_tile_tokens at a time
  std::vector<std::vector<cpu::tile_query>> tile_queries_;  // [n_threads]: a tile's queries
  std::vector<token_id> tokens_;             // [n_tokens]
  std::vector<std::int64_t> output_tokens_;  // [n_outputs]: token indices whose logits or hidden states are wanted
  bool hidden_ = false;                      // the step asked for hidden states, not logits
  std::vector<float> x_;                     // [n_tokens × n_embd]: the residual stream
  std::vector<float> h_;                     // [n_tokens × n_embd]: normalized
  std::vector<std::byte> hq_;                // [n_tokens × q8(n_embd)]
  std::vector<float> q_;                     // [n_tokens × q_dim]
  std::vector<float> k_;                     // [n_tokens × kv_dim]
  std::vector<float> v_;                     // [n_tokens × kv_dim]
  std::vector<float> attn_;                  // [n_tokens × q_dim]
  std::vector<std::byte> attnq_;             // [n_tokens × q8(q_dim)]
  std::vector<float> proj_;                  // [n_tokens × n_embd]: output of attn_output or ffn_down
  std::vector<float> gate_;                  // [n_tokens × n_ff]; then silu(gate) * up
  std::vector<float> up_;                    // [n_tokens × n_ff]
  std::vector<std::byte> ffq_;               // [n_tokens × q8(n_ff)]
  std::vector<float> final_;                 // [n_logits × n_embd]: normalized, for the output projection
  std::vector<std::byte> finalq_;            // [n_logits × q8(n_embd)]
  std::vector<float> scores_;                // [n_threads × max_length]
  std::vector<double> rope_scratch_;         // [n_threads × rope_dim]: cos and sin of each frequency
};

}  // namespace

result<std::unique_ptr<backend>> create_cpu_backend(std::shared_ptr<const model> m, const cpu_backend_options& options) {
  if (!m) return error(errc::invalid_argument, "no model");
  if (!cpu_supports(options.isa)) {
    return error(errc::unsupported, "this CPU cannot run the " + std::string(to_string(options.isa)) + " kernels");
  }
  int n_threads = options.n_threads;
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::unique_ptr<backend>(new cpu_backend(std::move(m), cpu::kernels_for(options.isa), n_threads));
}

}  // namespace chatai::engine
