// Synthetic models: seeded random weights of a real shape, streamed into a GGUF file.
#include "chatai/engine/synth.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "chatai/engine/gguf.hpp"
#include "chatai/engine/quantize.hpp"
#include "chatai/engine/thread_pool.hpp"
#include "cpu/quant_reference.hpp"

namespace chatai::engine {
namespace {

constexpr synth_shape shapes[] = {
    {"smollm2-135m", 49152, 8192, 576, 30, 9, 3, 1536, 100000.0f, true},
    {"llama-3.2-1b", 128256, 131072, 2048, 16, 32, 8, 8192, 500000.0f, true},
    {"llama-3.1-8b", 128256, 131072, 4096, 32, 32, 8, 14336, 500000.0f, false},
};

// A counter-based generator: element i of stream `stream` depends on nothing else, so rows
// can be produced in any order by any thread.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform on [-sqrt(3), sqrt(3)): mean 0, variance 1.
float unit_uniform(std::uint64_t stream, std::uint64_t i) {
  const auto u = static_cast<float>(mix(stream ^ mix(i)) >> 40) * (1.0f / 16777216.0f);
  return (2.0f * u - 1.0f) * 1.7320508f;
}

// The type a matrix whose rows have `cols` elements is written in: `type`, or for rows that
// do not fill its blocks the nearest type with 32-element blocks.
ggml_type matrix_type(ggml_type type, std::int64_t cols) {
  if (cols % type_info(type).block_size == 0) return type;
  switch (type) {
    case ggml_type::q2_k:
    case ggml_type::q3_k:
    case ggml_type::q4_k: return ggml_type::q4_0;
    case ggml_type::q5_k: return ggml_type::q5_0;
    default: return ggml_type::q8_0;
  }
}

struct synth_writer {
  const synth_options& options;
  gguf_writer& w;
  thread_pool& pool;
  std::uint64_t next_stream = 1;

  std::uint64_t stream() { return mix(options.seed * 0x100000001b3ull + next_stream++); }

  status matrix(const std::string& name, std::int64_t rows, std::int64_t cols, float scale) {
    const ggml_type type = matrix_type(options.type, cols);
    const auto& info = type_info(type);
    const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
    const std::uint64_t s = stream();
    const std::int64_t shape[] = {cols, rows};
    thread_pool* threads = &pool;
    return w.add_tensor(name, type, shape, [=](std::int64_t first_row, std::span<std::byte> out) -> status {
      const auto n = static_cast<std::int64_t>(out.size() / row_bytes);
      threads->run([&](int thread, int n_threads) {
        std::vector<float> row(static_cast<std::size_t>(cols));  // [cols]
        for (std::int64_t r = n * thread / n_threads; r < n * (thread + 1) / n_threads; ++r) {
          const auto base = static_cast<std::uint64_t>((first_row + r) * cols);
          for (std::int64_t i = 0; i < cols; ++i) row[static_cast<std::size_t>(i)] = scale * unit_uniform(s, base + static_cast<std::uint64_t>(i));
          cpu::quantize_row(type, row.data(), out.data() + static_cast<std::size_t>(r) * row_bytes, cols);
        }
      });
      return {};
    });
  }

  // An f32 vector of values mean + scale * u, u of unit variance: norms near 1, small biases.
  status vector(const std::string& name, std::int64_t n, float mean, float scale) {
    std::vector<float> values(static_cast<std::size_t>(n));  // [n]
    const std::uint64_t s = stream();
    for (std::int64_t i = 0; i < n; ++i) {
      values[static_cast<std::size_t>(i)] = mean + scale * unit_uniform(s, static_cast<std::uint64_t>(i));
    }
    const std::int64_t shape[] = {n};
    return w.add_tensor(name, ggml_type::f32, shape, std::as_bytes(std::span<const float>(values)));
  }

  status norm(const std::string& name, std::int64_t n) { return vector(name, n, 1.0f, 0.05f); }
};

std::int64_t head_dim_of(const synth_shape& s) { return s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head; }

// The tokenizer.* keys of `path`, the vocabulary padded to n_vocab with unused tokens.
status copy_tokenizer(gguf_writer& w, const std::filesystem::path& path, std::int64_t n_vocab) {
  auto file = gguf_file::open(path);
  if (!file) return std::move(file).err().with_context("tokenizer " + path.string());
  auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return std::move(tokens).err().with_context("tokenizer " + path.string());
  const auto n = static_cast<std::int64_t>(tokens->size());
  if (n > n_vocab) {
    return error(errc::invalid_argument, "tokenizer " + path.string() + " has " + std::to_string(n) +
                                             " tokens, more than the shape's vocabulary of " + std::to_string(n_vocab));
  }
  for (const gguf_kv& kv : file->metadata()) {
    if (!kv.key.starts_with("tokenizer.")) continue;
    if (kv.key == "tokenizer.ggml.tokens") {
      std::vector<std::string> padded(tokens->begin(), tokens->end());
      for (std::int64_t i = n; i < n_vocab; ++i) padded.push_back("<|unused_" + std::to_string(i) + "|>");
      CHATAI_RETURN_IF_ERROR(w.add_array(kv.key, std::span<const std::string>(padded)));
    } else if (kv.key == "tokenizer.ggml.scores") {
      auto scores = file->get_float32_array(kv.key);
      if (!scores) return std::move(scores).err().with_context("tokenizer " + path.string());
      scores->resize(static_cast<std::size_t>(n_vocab), -1e9f);
      CHATAI_RETURN_IF_ERROR(w.add_array(kv.key, std::span<const float>(*scores)));
    } else if (kv.key == "tokenizer.ggml.token_type") {
      auto types = file->get_int32_array(kv.key);
      if (!types) return std::move(types).err().with_context("tokenizer " + path.string());
      types->resize(static_cast<std::size_t>(n_vocab), 5);  // llama.cpp's "unused"
      CHATAI_RETURN_IF_ERROR(w.add_array(kv.key, std::span<const std::int32_t>(*types)));
    } else {
      CHATAI_RETURN_IF_ERROR(copy_metadata_value(w, kv.key, kv.value));
    }
  }
  return {};
}

}  // namespace

std::span<const synth_shape> synth_shapes() noexcept { return shapes; }

std::optional<synth_shape> find_synth_shape(std::string_view name) noexcept {
  for (const synth_shape& s : shapes) {
    if (s.name == name) return s;
  }
  return std::nullopt;
}

std::int64_t synth_matrix_bytes(const synth_shape& s, ggml_type type) noexcept {
  const auto bytes = [type](std::int64_t rows, std::int64_t cols) {
    const auto& info = type_info(matrix_type(type, cols));
    return rows * (cols / info.block_size) * static_cast<std::int64_t>(info.type_size);
  };
  const std::int64_t head_dim = head_dim_of(s);
  const std::int64_t q_dim = s.n_head * head_dim, kv_dim = s.n_head_kv * head_dim;
  const std::int64_t layer = bytes(q_dim, s.n_embd) + 2 * bytes(kv_dim, s.n_embd) + bytes(s.n_embd, q_dim) +
                             2 * bytes(s.n_ff, s.n_embd) + bytes(s.n_embd, s.n_ff);
  return s.n_layer * layer + bytes(s.n_vocab, s.n_embd);
}

status synthesize_model(const synth_options& options, const std::filesystem::path& out) {
  const synth_shape& s = options.shape;
  if (!cpu::is_weight_type_supported(options.type)) {
    return error(errc::invalid_argument, "type: the backends do not compute with " + std::string(to_string(options.type)));
  }
  if (s.n_vocab <= 0 || s.n_ctx <= 0 || s.n_embd <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_head_kv <= 0 ||
      s.n_ff <= 0 || s.head_dim < 0 || (s.head_dim == 0 && s.n_embd % s.n_head != 0) || s.n_head % s.n_head_kv != 0) {
    return error(errc::invalid_argument, "shape " + std::string(s.name) + ": dimensions must be positive, n_embd a multiple "
                                         "of n_head (unless head_dim is given) and n_head a multiple of n_head_kv");
  }
  const std::int64_t head_dim = head_dim_of(s);
  const std::int64_t rope_dim = s.rope_dim > 0 ? s.rope_dim : head_dim;
  if (s.rope_dim < 0 || rope_dim > head_dim || rope_dim % 2 != 0) {
    return error(errc::invalid_argument, "shape " + std::string(s.name) + ": rope_dim " + std::to_string(rope_dim) +
                                             " must be even and at most head_dim " + std::to_string(head_dim));
  }
  const std::int64_t q_dim = s.n_head * head_dim, kv_dim = s.n_head_kv * head_dim;
  for (std::int64_t cols : {s.n_embd, s.n_ff, q_dim}) {
    if (cols % 32 != 0) {
      return error(errc::invalid_argument, "shape " + std::string(s.name) + ": " + std::to_string(cols) +
                                               " is not a multiple of 32, the smallest block of the weight types");
    }
  }
  gguf_writer w;
  const std::string a(to_string(options.arch));
  CHATAI_RETURN_IF_ERROR(w.add_string("general.architecture", a));
  CHATAI_RETURN_IF_ERROR(w.add_string("general.name", "synthetic " + std::string(s.name) + " " +
                                                          std::string(to_string(options.type)) + " seed " +
                                                          std::to_string(options.seed)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".vocab_size", static_cast<std::uint32_t>(s.n_vocab)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".block_count", static_cast<std::uint32_t>(s.n_layer)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".context_length", static_cast<std::uint32_t>(s.n_ctx)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".embedding_length", static_cast<std::uint32_t>(s.n_embd)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".feed_forward_length", static_cast<std::uint32_t>(s.n_ff)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".attention.head_count", static_cast<std::uint32_t>(s.n_head)));
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".attention.head_count_kv", static_cast<std::uint32_t>(s.n_head_kv)));
  if (head_dim * s.n_head != s.n_embd) {
    CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".attention.key_length", static_cast<std::uint32_t>(head_dim)));
    CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".attention.value_length", static_cast<std::uint32_t>(head_dim)));
  }
  CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".rope.dimension_count", static_cast<std::uint32_t>(rope_dim)));
  CHATAI_RETURN_IF_ERROR(w.add_float32(a + ".attention.layer_norm_rms_epsilon", 1e-5f));
  CHATAI_RETURN_IF_ERROR(w.add_float32(a + ".rope.freq_base", s.rope_freq_base));
  const bool gemma = options.arch == model_arch::gemma2 || options.arch == model_arch::gemma3;
  if (gemma) {
    const bool two = options.arch == model_arch::gemma2;
    const std::int64_t window = options.sliding_window > 0 ? options.sliding_window : two ? 4096 : 512;
    CHATAI_RETURN_IF_ERROR(w.add_uint32(a + ".attention.sliding_window", static_cast<std::uint32_t>(window)));
    const float attn_cap = options.attn_softcap >= 0.0f ? options.attn_softcap : two ? 50.0f : 0.0f;
    const float final_cap = options.final_softcap >= 0.0f ? options.final_softcap : two ? 30.0f : 0.0f;
    if (two) CHATAI_RETURN_IF_ERROR(w.add_float32(a + ".attn_logit_softcapping", attn_cap));
    if (two || final_cap > 0.0f) CHATAI_RETURN_IF_ERROR(w.add_float32(a + ".final_logit_softcapping", final_cap));
  }
  if (!options.tokenizer.empty()) CHATAI_RETURN_IF_ERROR(copy_tokenizer(w, options.tokenizer, s.n_vocab));

  int n_threads = options.threads;
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  thread_pool pool(n_threads);
  synth_writer sw{options, w, pool};
  const float embd_scale = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(s.n_layer));
  CHATAI_RETURN_IF_ERROR(sw.matrix("token_embd.weight", s.n_vocab, s.n_embd, s.tied_output ? embd_scale : 1.0f));
  CHATAI_RETURN_IF_ERROR(sw.norm("output_norm.weight", s.n_embd));
  if (!s.tied_output) CHATAI_RETURN_IF_ERROR(sw.matrix("output.weight", s.n_vocab, s.n_embd, embd_scale));
  for (std::int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const float in = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
    CHATAI_RETURN_IF_ERROR(sw.norm(p + "attn_norm.weight", s.n_embd));
    if (options.arch == model_arch::phi3) {
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "attn_qkv.weight", q_dim + 2 * kv_dim, s.n_embd, in));
    } else {
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "attn_q.weight", q_dim, s.n_embd, in));
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "attn_k.weight", kv_dim, s.n_embd, in));
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "attn_v.weight", kv_dim, s.n_embd, in));
    }
    if (options.arch == model_arch::qwen2) {
      CHATAI_RETURN_IF_ERROR(sw.vector(p + "attn_q.bias", q_dim, 0.0f, 0.1f));
      CHATAI_RETURN_IF_ERROR(sw.vector(p + "attn_k.bias", kv_dim, 0.0f, 0.1f));
      CHATAI_RETURN_IF_ERROR(sw.vector(p + "attn_v.bias", kv_dim, 0.0f, 0.1f));
    }
    if (options.arch == model_arch::qwen3 || options.arch == model_arch::gemma3) {
      CHATAI_RETURN_IF_ERROR(sw.norm(p + "attn_q_norm.weight", head_dim));
      CHATAI_RETURN_IF_ERROR(sw.norm(p + "attn_k_norm.weight", head_dim));
    }
    CHATAI_RETURN_IF_ERROR(sw.matrix(p + "attn_output.weight", s.n_embd, q_dim,
                                     out_scale / std::sqrt(static_cast<float>(q_dim))));
    if (gemma) CHATAI_RETURN_IF_ERROR(sw.norm(p + "post_attention_norm.weight", s.n_embd));
    CHATAI_RETURN_IF_ERROR(sw.norm(p + "ffn_norm.weight", s.n_embd));
    if (options.arch == model_arch::phi3) {  // gate rows first, then up
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "ffn_up.weight", 2 * s.n_ff, s.n_embd, in));
    } else {
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "ffn_gate.weight", s.n_ff, s.n_embd, in));
      CHATAI_RETURN_IF_ERROR(sw.matrix(p + "ffn_up.weight", s.n_ff, s.n_embd, in));
    }
    CHATAI_RETURN_IF_ERROR(sw.matrix(p + "ffn_down.weight", s.n_embd, s.n_ff,
                                     out_scale / std::sqrt(static_cast<float>(s.n_ff))));
    if (gemma) CHATAI_RETURN_IF_ERROR(sw.norm(p + "post_ffw_norm.weight", s.n_embd));
  }
  return w.write(out);
}

}  // namespace chatai::engine
