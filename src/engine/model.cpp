// Loading a llama-family model: hyperparameters from metadata, weights bound and checked.
#include "chatai/engine/model.hpp"

#include <cmath>
#include <numbers>
#include <string>

#include "cpu/quant_reference.hpp"

namespace chatai::engine {
namespace {

error invalid(std::string message) { return error(errc::invalid_argument, std::move(message)); }

std::string shape_text(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Reads "<arch>.<name>" as a positive integer.
result<std::int64_t> positive(const gguf_file& f, const std::string& key) {
  auto v = f.get_uint(key);
  if (!v) return invalid("metadata " + key + ": " + v.err().message());
  if (*v == 0 || *v > (1ull << 40)) return invalid("metadata " + key + ": " + std::to_string(*v) + " is not a usable size");
  return static_cast<std::int64_t>(*v);
}

result<float> real(const gguf_file& f, const std::string& key) {
  auto v = f.get_float(key);
  if (!v) return invalid("metadata " + key + ": " + v.err().message());
  if (!std::isfinite(*v)) return invalid("metadata " + key + ": not a finite number");
  return static_cast<float>(*v);
}

// Looks up a tensor and checks its shape, dimension 0 first (ggml's order).
result<const gguf_tensor*> find(const gguf_file& f, const std::string& name, std::span<const std::int64_t> shape,
                                std::string_view meaning) {
  const gguf_tensor* t = f.find_tensor(name);
  if (!t) return invalid("tensor " + name + " is missing; expected shape " + shape_text(shape) + " (" + std::string(meaning) + ")");
  if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
    return invalid("tensor " + name + " has shape " + shape_text(t->shape) + "; expected " + shape_text(shape) + " (" +
                   std::string(meaning) + ")");
  }
  if (!cpu::is_weight_type_supported(t->type)) {
    return error(errc::unsupported, "tensor " + name + " has type " + std::string(to_string(t->type)) +
                                        ", which the engine does not compute with");
  }
  return t;
}

result<weight_matrix> matrix(const gguf_file& f, const std::string& name, std::int64_t rows, std::int64_t cols,
                             std::string_view meaning) {
  const std::int64_t shape[] = {cols, rows};
  auto t = find(f, name, shape, meaning);
  if (!t) return std::move(t).err();
  const gguf_tensor& g = **t;
  const auto& info = type_info(g.type);
  if (cols % info.block_size != 0) {
    return invalid("tensor " + name + ": rows of " + std::to_string(cols) + " elements do not fill whole " +
                   std::string(info.name) + " blocks of " + std::to_string(info.block_size));
  }
  const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
  return weight_matrix{g.name, g.type, rows, cols, row_bytes, g.data};
}

// Rows [first, first + count) of `m`: every row is whole blocks, so a range is a matrix too.
weight_matrix row_range(const weight_matrix& m, std::int64_t first, std::int64_t count) {
  weight_matrix out = m;
  out.rows = count;
  out.data = m.row(first);
  return out;
}

// A 1-D tensor converted to f32 (norms, biases and RoPE factors are small).
result<std::vector<float>> vector(const gguf_file& f, const std::string& name, std::int64_t n, std::string_view meaning) {
  const std::int64_t shape[] = {n};
  auto t = find(f, name, shape, meaning);
  if (!t) return std::move(t).err();
  if (type_info((*t)->type).quantized) {
    return error(errc::unsupported, "tensor " + name + " is quantized (" + std::string(to_string((*t)->type)) +
                                        "); vectors must be f32, f16 or bf16");
  }
  std::vector<float> out(static_cast<std::size_t>(n));
  cpu::dequantize_row((*t)->type, (*t)->data, out.data(), n);
  return out;
}

// The divisors of each rotary frequency that Llama 3's scaling applies.
std::vector<float> llama3_factors(const model_hparams& hp, float factor, float low_freq_factor, float high_freq_factor,
                                  float original_context) {
  std::vector<float> out(static_cast<std::size_t>(hp.rope_dim / 2));
  const double low_freq_wavelen = original_context / low_freq_factor;
  const double high_freq_wavelen = original_context / high_freq_factor;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double freq = std::pow(static_cast<double>(hp.rope_freq_base), -2.0 * static_cast<double>(i) / static_cast<double>(hp.rope_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double scaled;
    if (wavelen < high_freq_wavelen) {
      scaled = freq;
    } else if (wavelen > low_freq_wavelen) {
      scaled = freq / factor;
    } else {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      scaled = (1.0 - smooth) * freq / factor + smooth * freq;
    }
    out[i] = static_cast<float>(freq / scaled);
  }
  return out;
}

// An optional non-negative real "<key>", or `fallback` when absent.
result<float> optional_real(const gguf_file& f, const std::string& key, float fallback) {
  if (!f.has(key)) return fallback;
  auto v = real(f, key);
  if (!v) return std::move(v).err();
  if (*v < 0.0f) return invalid("metadata " + key + " must not be negative");
  return *v;
}

// What Gemma 2 and 3 add to the common keys (the rules of their reference implementation):
// scaled embeddings, GELU, soft caps, the sliding window and its layers, the query scale of
// the 27B models (n_embd / n_head instead of the head size), Gemma 3's local rotary base.
status read_gemma(const gguf_file& f, const std::string& a, model_hparams& hp) {
  hp.embed_scale = std::sqrt(static_cast<float>(hp.n_embd));
  const bool two = hp.arch == model_arch::gemma2;
  auto attn_cap = optional_real(f, a + ".attn_logit_softcapping", two ? 50.0f : 0.0f);
  if (!attn_cap) return std::move(attn_cap).err();
  auto final_cap = optional_real(f, a + ".final_logit_softcapping", two ? 30.0f : 0.0f);
  if (!final_cap) return std::move(final_cap).err();
  hp.attn_softcap = two ? *attn_cap : 0.0f;  // Gemma 3 normalizes queries and keys instead
  hp.final_softcap = *final_cap;
  std::int64_t window = two ? 4096 : 0;
  const std::string window_key = a + ".attention.sliding_window";
  if (f.has(window_key)) {
    auto v = f.get_uint(window_key);
    if (!v) return invalid("metadata " + window_key + ": " + v.err().message());
    if (*v > (1ull << 40)) return invalid("metadata " + window_key + ": " + std::to_string(*v) + " is not a usable size");
    window = static_cast<std::int64_t>(*v);
  }
  hp.sliding_window = window;
  hp.swa_pattern = two ? 2 : 6;
  if (!two) {
    hp.rope_freq_base_swa = 10000.0f;
    hp.rope_freq_scale_swa = 1.0f;
  }
  // The 27B models: Gemma 2 with 46 layers, Gemma 3 with 62.
  if ((two && hp.n_layer == 46) || (!two && hp.n_layer == 62)) {
    hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head));
  }
  return {};
}

result<model_hparams> read_hparams(const gguf_file& f) {
  auto arch_name = f.architecture();
  if (!arch_name) return invalid("metadata general.architecture: " + arch_name.err().message());
  model_hparams hp;
  if (*arch_name == "llama") {
    hp.arch = model_arch::llama;
    hp.rope_pairs = rope_pairing::adjacent;
  } else if (*arch_name == "qwen2") {
    hp.arch = model_arch::qwen2;
    hp.rope_pairs = rope_pairing::neox;
  } else if (*arch_name == "qwen3") {
    hp.arch = model_arch::qwen3;
    hp.rope_pairs = rope_pairing::neox;
  } else if (*arch_name == "phi3") {
    hp.arch = model_arch::phi3;
    hp.rope_pairs = rope_pairing::neox;
  } else if (*arch_name == "gemma2" || *arch_name == "gemma3") {
    hp.arch = *arch_name == "gemma2" ? model_arch::gemma2 : model_arch::gemma3;
    hp.rope_pairs = rope_pairing::neox;
    hp.activation = ffn_activation::gelu_tanh;
  } else {
    return error(errc::unsupported, "architecture '" + std::string(*arch_name) +
                                        "' is not supported (llama, qwen2, qwen3, phi3, gemma2, gemma3)");
  }
  const std::string a(*arch_name);
  auto read = [&](const char* name, std::int64_t& out) -> status {
    auto v = positive(f, a + "." + name);
    if (!v) return std::move(v).err();
    out = *v;
    return {};
  };
  CHATAI_RETURN_IF_ERROR(read("block_count", hp.n_layer));
  CHATAI_RETURN_IF_ERROR(read("context_length", hp.n_ctx_train));
  CHATAI_RETURN_IF_ERROR(read("embedding_length", hp.n_embd));
  CHATAI_RETURN_IF_ERROR(read("feed_forward_length", hp.n_ff));
  CHATAI_RETURN_IF_ERROR(read("attention.head_count", hp.n_head));
  hp.n_head_kv = hp.n_head;
  if (f.has(a + ".attention.head_count_kv")) CHATAI_RETURN_IF_ERROR(read("attention.head_count_kv", hp.n_head_kv));
  if (hp.n_head % hp.n_head_kv != 0) {
    return invalid("metadata " + a + ".attention.head_count_kv: " + std::to_string(hp.n_head_kv) +
                   " does not divide attention.head_count " + std::to_string(hp.n_head));
  }
  if (f.has(a + ".attention.key_length")) {
    CHATAI_RETURN_IF_ERROR(read("attention.key_length", hp.head_dim));
    std::int64_t value_length = hp.head_dim;
    if (f.has(a + ".attention.value_length")) CHATAI_RETURN_IF_ERROR(read("attention.value_length", value_length));
    if (value_length != hp.head_dim) {
      return error(errc::unsupported, "metadata " + a + ".attention.value_length " + std::to_string(value_length) +
                                          " differs from attention.key_length " + std::to_string(hp.head_dim));
    }
  } else {
    if (hp.n_embd % hp.n_head != 0) {
      return invalid("metadata " + a + ".embedding_length " + std::to_string(hp.n_embd) +
                     " is not a multiple of attention.head_count " + std::to_string(hp.n_head));
    }
    hp.head_dim = hp.n_embd / hp.n_head;
  }
  auto eps = real(f, a + ".attention.layer_norm_rms_epsilon");
  if (!eps) return std::move(eps).err();
  if (*eps <= 0.0f) return invalid("metadata " + a + ".attention.layer_norm_rms_epsilon must be positive");
  hp.rms_eps = *eps;
  if (f.has(a + ".rope.freq_base")) {
    auto base = real(f, a + ".rope.freq_base");
    if (!base) return std::move(base).err();
    if (*base <= 1.0f) return invalid("metadata " + a + ".rope.freq_base must exceed 1");
    hp.rope_freq_base = *base;
  }
  hp.rope_dim = hp.head_dim;
  if (f.has(a + ".rope.dimension_count")) CHATAI_RETURN_IF_ERROR(read("rope.dimension_count", hp.rope_dim));
  if (hp.rope_dim > hp.head_dim || hp.rope_dim % 2 != 0) {
    return invalid("metadata " + a + ".rope.dimension_count " + std::to_string(hp.rope_dim) +
                   " must be even and at most the head size " + std::to_string(hp.head_dim));
  }
  hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  if (hp.arch == model_arch::gemma2 || hp.arch == model_arch::gemma3) {
    CHATAI_RETURN_IF_ERROR(read_gemma(f, a, hp));
  }
  if (f.has(a + ".vocab_size")) {
    CHATAI_RETURN_IF_ERROR(read("vocab_size", hp.n_vocab));
  } else if (const gguf_tensor* embd = f.find_tensor("token_embd.weight"); embd && embd->shape.size() == 2) {
    hp.n_vocab = embd->shape[1];
  } else {
    return invalid("metadata " + a + ".vocab_size is missing and token_embd.weight does not give it");
  }
  return hp;
}

}  // namespace

std::string_view to_string(model_arch arch) noexcept {
  switch (arch) {
    case model_arch::llama: return "llama";
    case model_arch::qwen2: return "qwen2";
    case model_arch::qwen3: return "qwen3";
    case model_arch::phi3: return "phi3";
    case model_arch::gemma2: return "gemma2";
    case model_arch::gemma3: return "gemma3";
  }
  return "unknown";
}

std::vector<double> model::rope_inv_freq(std::int64_t layer) const {
  const model_hparams& hp = hparams_;
  const bool own = hp.windowed(layer) && hp.rope_freq_base_swa > 0.0f;
  const double base = own ? hp.rope_freq_base_swa : hp.rope_freq_base;
  std::vector<double> out(static_cast<std::size_t>(hp.rope_dim / 2));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double freq = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(hp.rope_dim));
    out[i] = own ? freq * hp.rope_freq_scale_swa : freq / rope_freq_factors_[i] * hp.rope_freq_scale;
  }
  return out;
}

model::model(gguf_file file, model_hparams hparams) : file_(std::move(file)), hparams_(hparams) {}

result<std::shared_ptr<const model>> model::load(const std::filesystem::path& path) {
  auto f = gguf_file::open(path);
  if (!f) return std::move(f).err();
  auto m = from_file(std::move(*f));
  if (!m) return std::move(m).err().with_context(path.string());
  return m;
}

result<std::shared_ptr<const model>> model::from_file(gguf_file file) {
  auto hp = read_hparams(file);
  if (!hp) return std::move(hp).err();
  auto m = std::make_shared<model>(std::move(file), *hp);
  CHATAI_RETURN_IF_ERROR(m->bind_weights());
  return std::shared_ptr<const model>(std::move(m));
}

status model::bind_weights() {
  const gguf_file& f = file_;
  model_hparams& hp = hparams_;
  const std::string a(to_string(hp.arch));

  auto embd = matrix(f, "token_embd.weight", hp.n_vocab, hp.n_embd, "n_embd, n_vocab");
  if (!embd) return std::move(embd).err();
  token_embd_ = *embd;
  if (f.find_tensor("output.weight")) {
    auto out = matrix(f, "output.weight", hp.n_vocab, hp.n_embd, "n_embd, n_vocab");
    if (!out) return std::move(out).err();
    output_ = *out;
  } else {
    output_ = token_embd_;
    hp.tied_output = true;
  }
  auto norm = vector(f, "output_norm.weight", hp.n_embd, "n_embd");
  if (!norm) return std::move(norm).err();
  output_norm_ = std::move(*norm);

  layers_.resize(static_cast<std::size_t>(hp.n_layer));
  const bool biases_required = hp.arch == model_arch::qwen2;
  // Only qwen3 and gemma3 normalize heads, and they have no biases: backends may add biases
  // after the norm.
  const bool head_norms = hp.arch == model_arch::qwen3 || hp.arch == model_arch::gemma3;
  const bool post_norms = hp.arch == model_arch::gemma2 || hp.arch == model_arch::gemma3;
  for (std::int64_t i = 0; i < hp.n_layer; ++i) {
    layer_weights& l = layers_[static_cast<std::size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    auto bind = [&](weight_matrix& out, const char* name, std::int64_t rows, std::int64_t cols, const char* meaning) -> status {
      auto m = matrix(f, p + name, rows, cols, meaning);
      if (!m) return std::move(m).err();
      out = *m;
      return {};
    };
    auto bind_vector = [&](std::vector<float>& out, const char* name, std::int64_t n, const char* meaning, bool required) -> status {
      if (!required && !f.find_tensor(p + name)) return {};
      auto v = vector(f, p + name, n, meaning);
      if (!v) return std::move(v).err();
      out = std::move(*v);
      return {};
    };
    CHATAI_RETURN_IF_ERROR(bind_vector(l.attn_norm, "attn_norm.weight", hp.n_embd, "n_embd", true));
    // phi3 conversions fuse Q, K and V into one matrix, their rows in that order.
    if (hp.arch == model_arch::phi3 && f.find_tensor(p + "attn_qkv.weight")) {
      weight_matrix qkv;
      CHATAI_RETURN_IF_ERROR(bind(qkv, "attn_qkv.weight", hp.q_dim() + 2 * hp.kv_dim(), hp.n_embd,
                                  "n_embd, (n_head + 2 * n_head_kv) * head_dim"));
      l.wq = row_range(qkv, 0, hp.q_dim());
      l.wk = row_range(qkv, hp.q_dim(), hp.kv_dim());
      l.wv = row_range(qkv, hp.q_dim() + hp.kv_dim(), hp.kv_dim());
    } else {
      CHATAI_RETURN_IF_ERROR(bind(l.wq, "attn_q.weight", hp.q_dim(), hp.n_embd, "n_embd, n_head * head_dim"));
      CHATAI_RETURN_IF_ERROR(bind(l.wk, "attn_k.weight", hp.kv_dim(), hp.n_embd, "n_embd, n_head_kv * head_dim"));
      CHATAI_RETURN_IF_ERROR(bind(l.wv, "attn_v.weight", hp.kv_dim(), hp.n_embd, "n_embd, n_head_kv * head_dim"));
    }
    CHATAI_RETURN_IF_ERROR(bind_vector(l.bq, "attn_q.bias", hp.q_dim(), "n_head * head_dim", biases_required));
    CHATAI_RETURN_IF_ERROR(bind_vector(l.bk, "attn_k.bias", hp.kv_dim(), "n_head_kv * head_dim", biases_required));
    CHATAI_RETURN_IF_ERROR(bind_vector(l.bv, "attn_v.bias", hp.kv_dim(), "n_head_kv * head_dim", biases_required));
    if (head_norms) {
      CHATAI_RETURN_IF_ERROR(bind_vector(l.q_norm, "attn_q_norm.weight", hp.head_dim, "head_dim", true));
      CHATAI_RETURN_IF_ERROR(bind_vector(l.k_norm, "attn_k_norm.weight", hp.head_dim, "head_dim", true));
    }
    CHATAI_RETURN_IF_ERROR(bind(l.wo, "attn_output.weight", hp.n_embd, hp.q_dim(), "n_head * head_dim, n_embd"));
    if (post_norms) {
      CHATAI_RETURN_IF_ERROR(bind_vector(l.post_attn_norm, "post_attention_norm.weight", hp.n_embd, "n_embd", true));
      CHATAI_RETURN_IF_ERROR(bind_vector(l.post_ffn_norm, "post_ffw_norm.weight", hp.n_embd, "n_embd", true));
    }
    CHATAI_RETURN_IF_ERROR(bind_vector(l.ffn_norm, "ffn_norm.weight", hp.n_embd, "n_embd", true));
    // phi3 conversions fuse the gate and up projections into ffn_up, the gate's rows first.
    if (hp.arch == model_arch::phi3 && !f.find_tensor(p + "ffn_gate.weight")) {
      weight_matrix gate_up;
      CHATAI_RETURN_IF_ERROR(bind(gate_up, "ffn_up.weight", 2 * hp.n_ff, hp.n_embd, "n_embd, 2 * n_ff"));
      l.w_gate = row_range(gate_up, 0, hp.n_ff);
      l.w_up = row_range(gate_up, hp.n_ff, hp.n_ff);
    } else {
      CHATAI_RETURN_IF_ERROR(bind(l.w_gate, "ffn_gate.weight", hp.n_ff, hp.n_embd, "n_embd, n_ff"));
      CHATAI_RETURN_IF_ERROR(bind(l.w_up, "ffn_up.weight", hp.n_ff, hp.n_embd, "n_embd, n_ff"));
    }
    CHATAI_RETURN_IF_ERROR(bind(l.w_down, "ffn_down.weight", hp.n_embd, hp.n_ff, "n_ff, n_embd"));
  }

  // LongRoPE (Phi-3 and Phi-4 mini with 128k contexts) picks one of two factor sets by the
  // context in use and scales the rotated values by an attention factor as well; a single set
  // applied as rope_freqs is would compute another model.
  for (const char* name : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
    if (f.find_tensor(name)) {
      return error(errc::unsupported, "tensor " + std::string(name) + ": LongRoPE scaling (the long-context " + a +
                                          " variants) is not supported");
    }
  }

  // RoPE scaling: a rope_freqs tensor (Llama 3 conversions) wins over the metadata.
  rope_freq_factors_.assign(static_cast<std::size_t>(hp.rope_dim / 2), 1.0f);
  std::string scaling = "none";
  if (f.has(a + ".rope.scaling.type")) {
    auto s = f.get_string(a + ".rope.scaling.type");
    if (!s) return invalid("metadata " + a + ".rope.scaling.type: " + s.err().message());
    scaling = std::string(*s);
  }
  if (scaling == "linear") {
    auto factor = real(f, a + ".rope.scaling.factor");
    if (!factor) return std::move(factor).err();
    if (*factor <= 0.0f) return invalid("metadata " + a + ".rope.scaling.factor must be positive");
    hp.rope_freq_scale = 1.0f / *factor;
  } else if (scaling == "llama3") {
    float values[4];
    const char* keys[4] = {"factor", "low_freq_factor", "high_freq_factor", "original_context_length"};
    for (int k = 0; k < 4; ++k) {
      const std::string key = a + ".rope.scaling." + keys[k];
      if (k == 3) {
        auto n = positive(f, key);
        if (!n) return std::move(n).err();
        values[k] = static_cast<float>(*n);
      } else {
        auto r = real(f, key);
        if (!r) return std::move(r).err();
        if (*r <= 0.0f) return invalid("metadata " + key + " must be positive");
        values[k] = *r;
      }
    }
    if (values[2] <= values[1]) {
      return invalid("metadata " + a + ".rope.scaling.high_freq_factor must exceed low_freq_factor");
    }
    rope_freq_factors_ = llama3_factors(hp, values[0], values[1], values[2], values[3]);
  } else if (scaling != "none") {
    return error(errc::unsupported, "metadata " + a + ".rope.scaling.type '" + scaling +
                                        "' is not supported (none, linear, llama3)");
  }
  if (f.find_tensor("rope_freqs.weight")) {
    auto factors = vector(f, "rope_freqs.weight", hp.rope_dim / 2, "rope_dim / 2");
    if (!factors) return std::move(factors).err();
    for (float x : *factors) {
      if (!(x > 0.0f) || !std::isfinite(x)) return invalid("tensor rope_freqs.weight holds a factor that is not positive");
    }
    rope_freq_factors_ = std::move(*factors);
  }
  return {};
}

}  // namespace chatai::engine
