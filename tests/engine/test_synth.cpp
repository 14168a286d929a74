// Synthetic models: the GGUF writer's streamed tensors, seeded and reproducible weights, the
// 135M shape with a real tokenizer loading and generating on the CPU backend, and the
// runtime's choice of device on a machine without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/cuda_backend.hpp"
#include "chatai/engine/generator.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/runtime.hpp"
#include "chatai/engine/synth.hpp"
#include "temp_dir.hpp"

using namespace chatai;
using namespace chatai::engine;
namespace fs = std::filesystem;

namespace {


std::vector<char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A small shape: two layers, grouped-query attention, rows that fill the K-quant blocks.
synth_shape tiny_shape() { return {"tiny", 512, 256, 256, 2, 4, 2, 512, 10000.0f, false}; }

// The logits of every position of a fixed prompt: [16 × n_vocab].
std::vector<float> prompt_logits(const fs::path& path) {
  auto m = model::load(path);
  REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string() : m.err().message()));
  auto b = create_cpu_backend(std::move(*m), {2});
  REQUIRE(b.ok());
  std::vector<token_id> tokens;
  for (token_id t = 0; t < 16; ++t) tokens.push_back((t * 37 + 11) % 512);
  auto seq = (*b)->create_sequence(0);
  REQUIRE(seq.ok());
  logits_out out;
  const auto st = (*b)->forward({{{*seq, tokens, logits_mode::all}}}, out);
  REQUIRE_MESSAGE(st.ok(), (st.ok() ? std::string() : st.err().message()));
  return out.values;
}

fs::path shared_tokenizer(const char* name) { return fs::path(CHATAI_SHARED_DIR) / "testdata" / "tokenizers" / name; }

}  // namespace

TEST_CASE("a streamed tensor writes the same file as one given whole") {
  std::vector<std::byte> data(3 * 64 * sizeof(float));  // 3 rows of 64 f32
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7);
  const std::int64_t shape[] = {64, 3};
  gguf_writer whole, streamed;
  REQUIRE(whole.add_tensor("t", ggml_type::f32, shape, data).ok());
  std::vector<std::int64_t> calls;
  REQUIRE(streamed
              .add_tensor("t", ggml_type::f32, shape,
                          [&](std::int64_t first_row, std::span<std::byte> rows) -> status {
                            calls.push_back(first_row);
                            std::copy_n(data.begin() + first_row * 256, rows.size(), rows.begin());
                            return {};
                          })
              .ok());
  CHECK(streamed.to_bytes() == whole.to_bytes());
  CHECK(calls == std::vector<std::int64_t>{0});

  // A filler's error fails the write, names the tensor and leaves no file behind.
  test::temp_dir dir("chatai-synth");
  gguf_writer failing;
  REQUIRE(failing
              .add_tensor("broken", ggml_type::f32, shape,
                          [](std::int64_t, std::span<std::byte>) -> status { return error(errc::internal, "no rows"); })
              .ok());
  const auto st = failing.write(dir.path() / "out.gguf");
  REQUIRE_FALSE(st.ok());
  CHECK(st.err().message().find("broken") != std::string::npos);
  CHECK(fs::is_empty(dir.path()));
  CHECK(failing.to_bytes().empty());
}

TEST_CASE("synthetic weights depend on the seed alone") {
  test::temp_dir dir("chatai-synth");
  synth_options o;
  o.shape = tiny_shape();
  o.type = ggml_type::q4_k;
  o.seed = 42;
  o.threads = 1;
  REQUIRE(synthesize_model(o, dir.path() / "a.gguf").ok());
  o.threads = 2;
  REQUIRE(synthesize_model(o, dir.path() / "b.gguf").ok());
  o.seed = 43;
  REQUIRE(synthesize_model(o, dir.path() / "c.gguf").ok());
  CHECK(read_all(dir.path() / "a.gguf") == read_all(dir.path() / "b.gguf"));
  CHECK(read_all(dir.path() / "a.gguf") != read_all(dir.path() / "c.gguf"));

  auto m = model::load(dir.path() / "a.gguf");
  REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string() : m.err().message()));
  const auto& hp = (*m)->hparams();
  CHECK(hp.n_vocab == 512);
  CHECK(hp.n_layer == 2);
  CHECK(hp.n_head_kv == 2);
  CHECK((*m)->layers()[0].wq.type == ggml_type::q4_k);
  CHECK_FALSE(hp.tied_output);

  o.type = ggml_type::iq2_xxs;
  const auto bad = synthesize_model(o, dir.path() / "d.gguf");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().message().find("type") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "d.gguf"));
}

TEST_CASE("synthetic models carry each architecture's tensors and keys") {
  test::temp_dir dir("chatai-synth");
  synth_options o;
  o.shape = tiny_shape();
  o.shape.head_dim = 128;  // q_dim 512, twice n_embd
  o.shape.rope_dim = 64;
  o.type = ggml_type::q8_0;
  for (model_arch arch : {model_arch::llama, model_arch::qwen2, model_arch::qwen3, model_arch::phi3}) {
    CAPTURE(to_string(arch));
    o.arch = arch;
    const fs::path path = dir.path() / (std::string(to_string(arch)) + ".gguf");
    REQUIRE(synthesize_model(o, path).ok());
    auto f = gguf_file::open(path);
    REQUIRE(f.ok());
    CHECK((f->find_tensor("blk.0.attn_q.bias") != nullptr) == (arch == model_arch::qwen2));
    CHECK((f->find_tensor("blk.0.attn_k_norm.weight") != nullptr) == (arch == model_arch::qwen3));
    CHECK((f->find_tensor("blk.0.attn_qkv.weight") != nullptr) == (arch == model_arch::phi3));
    CHECK((f->find_tensor("blk.0.ffn_gate.weight") != nullptr) == (arch != model_arch::phi3));
    auto m = model::load(path);
    REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string() : m.err().message()));
    const auto& hp = (*m)->hparams();
    CHECK(hp.arch == arch);
    CHECK(hp.head_dim == 128);
    CHECK(hp.q_dim() == 512);
    CHECK(hp.rope_dim == 64);
    std::int64_t bytes = 0;  // the fused matrices weigh what the separate ones do
    for (const layer_weights& l : (*m)->layers()) {
      for (const weight_matrix* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
        bytes += w->rows * static_cast<std::int64_t>(w->row_bytes);
      }
    }
    bytes += static_cast<std::int64_t>((*m)->output().row_bytes) * hp.n_vocab;
    CHECK(bytes == synth_matrix_bytes(o.shape, o.type));
    CHECK(prompt_logits(path).size() == 16 * 512);
  }
  o.shape.rope_dim = 130;
  const auto bad = synthesize_model(o, dir.path() / "bad.gguf");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().message().find("rope_dim 130 must be even and at most head_dim 128") != std::string::npos);
}

TEST_CASE("synthetic models of the 5-, 3- and 2-bit types compute like their f32 version") {
  test::temp_dir dir("chatai-synth");
  synth_options o;
  o.shape = tiny_shape();
  o.seed = 7;
  o.type = ggml_type::f32;
  REQUIRE(synthesize_model(o, dir.path() / "f32.gguf").ok());
  const auto want = prompt_logits(dir.path() / "f32.gguf");
  // Bounds on the relative RMS logit error, about 1.4 times the measured ones (0.055 for
  // the 5-bit types, 0.23 q3_k, 0.38 q2_k), which follow the weights' round-trip error.
  const std::pair<ggml_type, double> bounds[] = {{ggml_type::q5_0, 0.08}, {ggml_type::q5_1, 0.08},
                                                 {ggml_type::q5_k, 0.08}, {ggml_type::q3_k, 0.33},
                                                 {ggml_type::q2_k, 0.55}};
  for (const auto& [type, bound] : bounds) {
    CAPTURE(to_string(type));
    o.type = type;
    const fs::path path = dir.path() / (std::string(to_string(type)) + ".gguf");
    REQUIRE(synthesize_model(o, path).ok());
    const auto got = prompt_logits(path);
    REQUIRE(got.size() == want.size());
    double diff = 0, ref = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      REQUIRE(std::isfinite(got[i]));
      diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      ref += double(want[i]) * want[i];
    }
    const double rms_error = std::sqrt(diff / ref);
    MESSAGE(to_string(type) << ": relative RMS error " << rms_error);
    CHECK(rms_error < bound);
  }
}

TEST_CASE("the 135M shape with a real tokenizer loads and generates on the CPU") {
  const fs::path tokenizer = shared_tokenizer("ggml-vocab-llama-spm.gguf");
  REQUIRE_MESSAGE(fs::exists(tokenizer), "missing " << tokenizer);
  test::temp_dir dir("chatai-synth");
  synth_options o;
  o.shape = *find_synth_shape("smollm2-135m");
  o.type = ggml_type::q8_0;
  o.tokenizer = tokenizer;
  const fs::path path = dir.path() / "smollm2-135m-q8_0.gguf";
  REQUIRE(synthesize_model(o, path).ok());

  runtime_options ro;
  ro.model_path = path;
  ro.device = "cpu";
  auto rt = runtime::load(ro);
  REQUIRE_MESSAGE(rt.ok(), (rt.ok() ? std::string() : rt.err().message()));
  const auto& hp = (*rt)->hparams();
  CHECK(hp.n_vocab == 49152);
  CHECK(hp.n_embd == 576);
  CHECK(hp.n_layer == 30);
  CHECK(hp.n_head == 9);
  CHECK(hp.n_head_kv == 3);
  CHECK(hp.n_ff == 1536);
  CHECK(hp.tied_output);
  CHECK((*rt)->vocab().size() == 49152);
  CHECK(synth_matrix_bytes(o.shape, o.type) > 100'000'000);

  // The logits of a real prompt are finite and of a sane scale.
  const auto prompt = (*rt)->encode_prompt("The quick brown fox", false);
  REQUIRE(prompt.size() > 2);
  auto& b = (*rt)->compute();
  auto seq = b.create_sequence(64);
  REQUIRE(seq.ok());
  logits_out out;
  REQUIRE(b.forward({{{*seq, prompt, logits_mode::last}}}, out).ok());
  double sum = 0, sq = 0;
  for (float v : out.last_row(0)) {
    REQUIRE(std::isfinite(v));
    sum += v;
    sq += double(v) * v;
  }
  const double n = double(hp.n_vocab), sd = std::sqrt(sq / n - (sum / n) * (sum / n));
  CHECK(sd > 0.1);
  CHECK(sd < 20.0);
  REQUIRE(b.free_sequence(*seq).ok());

  generator gen(b, (*rt)->vocab(), {});
  generation_request req;
  req.prompt = prompt;
  req.sampling.temperature = 0.0f;
  req.max_tokens = 6;
  req.ignore_eos = true;
  REQUIRE(gen.add(std::move(req)).ok());
  std::size_t generated = 0;
  while (gen.active() > 0) {
    auto events = gen.step();
    REQUIRE(events.ok());
    for (const auto& ev : *events) generated += ev.tokens.size();
  }
  CHECK(generated == 6);
}

TEST_CASE("device auto falls back to the CPU without a GPU; device cuda says why it cannot") {
  test::temp_dir dir("chatai-synth");
  synth_options o;
  o.shape = tiny_shape();
  o.tokenizer = shared_tokenizer("ggml-vocab-gpt-2.gguf");
  o.shape.n_vocab = 50304;
  REQUIRE(synthesize_model(o, dir.path() / "m.gguf").ok());
  const std::string summary = cuda_device_summary();
  CHECK_FALSE(summary.empty());
  if (cuda_available()) {
    MESSAGE("a CUDA device is present (" << summary << "): the fallback is not exercised");
    return;
  }
  runtime_options ro;
  ro.model_path = dir.path() / "m.gguf";
  ro.device = "cuda";
  auto cuda = runtime::load(ro);
  REQUIRE_FALSE(cuda.ok());
  CHECK(cuda.err().code() == errc::unavailable);
  CHECK(cuda.err().message().find("cuda") != std::string::npos);
  ro.device = "auto";
  auto fallback = runtime::load(ro);
  REQUIRE_MESSAGE(fallback.ok(), (fallback.ok() ? std::string() : fallback.err().message()));
  CHECK((*fallback)->compute().description().rfind("cpu", 0) == 0);

  auto m = model::load(ro.model_path);
  REQUIRE(m.ok());
  auto direct = create_cuda_backend(*m);
  REQUIRE_FALSE(direct.ok());
  CHECK(direct.err().code() == errc::unavailable);
}
