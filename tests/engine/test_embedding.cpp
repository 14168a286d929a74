// Hidden states and embeddings on the CPU backend: the hidden rows are what the output
// projection turns into the logits, pooling and normalisation follow their definitions,
// chunking changes nothing, the temporary sequence is freed, and misuse is an error.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/embedding.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/synth.hpp"
#include "chatai/engine/vocabulary.hpp"
#include "temp_dir.hpp"

using namespace chatai;
using namespace chatai::engine;
namespace fs = std::filesystem;

namespace {

void require_ok(const status& st) { REQUIRE_MESSAGE(st.ok(), (st.ok() ? std::string() : st.err().message())); }

// A small f32 model, so that the backend computes in f32 throughout.
std::shared_ptr<const model> small_model(const fs::path& dir) {
  synth_options o;
  o.shape = {"tiny", 512, 256, 256, 2, 4, 2, 512, 10000.0f, false};
  o.type = ggml_type::f32;
  o.seed = 5;
  const fs::path path = dir / "tiny.gguf";
  require_ok(synthesize_model(o, path));
  auto m = model::load(path);
  REQUIRE(m.ok());
  return *m;
}

// A backend that counts the sequences alive in the one it wraps.
class counting_backend final : public backend {
 public:
  explicit counting_backend(std::unique_ptr<backend> inner) : inner_(std::move(inner)) {}
  std::string description() const override { return inner_->description(); }
  const model_hparams& hparams() const noexcept override { return inner_->hparams(); }
  result<sequence_id> create_sequence(std::int64_t max_tokens) override {
    auto s = inner_->create_sequence(max_tokens);
    if (s) ++live;
    return s;
  }
  status free_sequence(sequence_id sequence) override {
    auto st = inner_->free_sequence(sequence);
    if (st) --live;
    return st;
  }
  result<std::int64_t> sequence_length(sequence_id s) const override { return inner_->sequence_length(s); }
  result<std::int64_t> sequence_capacity(sequence_id s) const override { return inner_->sequence_capacity(s); }
  status truncate_sequence(sequence_id s, std::int64_t length) override { return inner_->truncate_sequence(s, length); }
  std::int64_t page_tokens() const noexcept override { return inner_->page_tokens(); }
  status share_prefix(sequence_id from, sequence_id to, std::int64_t tokens) override {
    return inner_->share_prefix(from, to, tokens);
  }
  status forward(const batch& step, logits_out& out) override { return inner_->forward(step, out); }

  int live = 0;

 private:
  std::unique_ptr<backend> inner_;
};

std::unique_ptr<counting_backend> cpu_of(std::shared_ptr<const model> m) {
  cpu_backend_options o;
  o.n_threads = 2;
  auto b = create_cpu_backend(std::move(m), o);
  REQUIRE(b.ok());
  return std::make_unique<counting_backend>(std::move(*b));
}

std::vector<token_id> some_tokens(std::int64_t n, std::int64_t n_vocab) {
  std::vector<token_id> t(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = static_cast<token_id>((i * 37 + 11) % n_vocab);
  return t;
}

// Every token's hidden state, in one step: [n × n_embd].
logits_out hidden_rows(backend& b, const std::vector<token_id>& tokens) {
  auto seq = b.create_sequence(0);
  REQUIRE(seq.ok());
  logits_out out;
  require_ok(b.forward({{{*seq, tokens, logits_mode::hidden}}}, out));
  REQUIRE(b.free_sequence(*seq).ok());
  return out;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST_CASE("hidden rows are the final-normed states that the output projection turns into logits") {
  test::temp_dir dir("chatai-embedding");
  auto m = small_model(dir.path());
  auto b = cpu_of(m);
  const model_hparams& hp = m->hparams();
  const auto tokens = some_tokens(19, hp.n_vocab);
  const logits_out hidden = hidden_rows(*b, tokens);
  CHECK(hidden.width == hp.n_embd);
  CHECK(hidden.n_rows() == 19);
  CHECK(hidden.entry_rows == std::vector<std::int64_t>{0, 19});

  auto seq = b->create_sequence(0);
  REQUIRE(seq.ok());
  logits_out logits;
  require_ok(b->forward({{{*seq, tokens, logits_mode::all}}}, logits));
  REQUIRE(b->free_sequence(*seq).ok());
  CHECK(logits.width == hp.n_vocab);
  const weight_matrix& output = m->output();
  REQUIRE(output.type == ggml_type::f32);
  double worst = 0, scale = 0;
  for (std::int64_t t = 0; t < 19; ++t) {
    const auto h = hidden.row(t);
    const auto want = logits.row(t);
    for (std::int64_t v = 0; v < hp.n_vocab; ++v) {
      const auto* w = reinterpret_cast<const float*>(output.row(v));
      double dot = 0;
      for (std::int64_t i = 0; i < hp.n_embd; ++i) dot += double(w[i]) * h[static_cast<std::size_t>(i)];
      worst = std::max(worst, std::abs(dot - want[static_cast<std::size_t>(v)]));
      scale = std::max(scale, std::abs(double(want[static_cast<std::size_t>(v)])));
    }
  }
  CHECK(worst <= 1e-4 * std::max(scale, 1.0));

  // A step asks for logits or hidden states, not both; nothing changes on that error.
  auto s1 = b->create_sequence(0), s2 = b->create_sequence(0);
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  const auto mixed = b->forward({{{*s1, tokens, logits_mode::hidden}, {*s2, tokens, logits_mode::last}}}, logits);
  REQUIRE_FALSE(mixed.ok());
  CHECK(mixed.err().code() == errc::invalid_argument);
  CHECK(b->sequence_length(*s1).value() == 0);
  // Entries that ask for nothing may join either kind of step.
  require_ok(b->forward({{{*s1, tokens, logits_mode::hidden}, {*s2, tokens, logits_mode::none}}}, logits));
  CHECK(logits.entry_rows == std::vector<std::int64_t>{0, 19, 19});
  CHECK(max_abs_diff(logits.values, hidden.values) < 1e-5);
}

TEST_CASE("mean and last pooling, normalised or not, chunked or not") {
  test::temp_dir dir("chatai-embedding");
  auto m = small_model(dir.path());
  auto b = cpu_of(m);
  const std::int64_t n_embd = m->hparams().n_embd;
  const auto tokens = some_tokens(45, m->hparams().n_vocab);
  const logits_out rows = hidden_rows(*b, tokens);

  std::vector<float> mean(static_cast<std::size_t>(n_embd), 0.0f);
  for (std::int64_t i = 0; i < n_embd; ++i) {
    double sum = 0;
    for (std::int64_t t = 0; t < 45; ++t) sum += rows.row(t)[static_cast<std::size_t>(i)];
    mean[static_cast<std::size_t>(i)] = static_cast<float>(sum / 45);
  }
  const auto last = rows.row(44);

  embedding_options o;
  o.normalize = false;
  o.pool = pooling::mean;
  auto got_mean = embed(*b, tokens, o);
  REQUIRE(got_mean.ok());
  CHECK(max_abs_diff(*got_mean, mean) < 1e-5);
  o.pool = pooling::last;
  auto got_last = embed(*b, tokens, o);
  REQUIRE(got_last.ok());
  CHECK(max_abs_diff(*got_last, last) < 1e-5);

  // Normalised: the same direction at unit length.
  o.normalize = true;
  o.pool = pooling::mean;
  auto unit = embed(*b, tokens, o);
  REQUIRE(unit.ok());
  double norm = 0, mean_norm = 0;
  for (std::size_t i = 0; i < unit->size(); ++i) {
    norm += double((*unit)[i]) * (*unit)[i];
    mean_norm += double(mean[i]) * mean[i];
  }
  CHECK(std::abs(norm - 1.0) < 1e-5);
  for (std::size_t i = 0; i < unit->size(); ++i) CHECK(std::abs((*unit)[i] - mean[i] / std::sqrt(mean_norm)) < 1e-5);

  // Chunks of 7 tokens (the last one shorter) give what one step gives.
  for (pooling p : {pooling::mean, pooling::last}) {
    CAPTURE(to_string(p));
    o.pool = p;
    o.chunk_tokens = 1000;
    auto whole = embed(*b, tokens, o);
    o.chunk_tokens = 7;
    auto job = embedding_job::start(*b, tokens, o);
    REQUIRE(job.ok());
    int steps = 0;
    while (!(*job)->done()) {
      require_ok((*job)->step());
      ++steps;
    }
    CHECK(steps == 7);
    REQUIRE(whole.ok());
    CHECK(max_abs_diff((*job)->vector(), *whole) < 1e-5);
    CHECK(b->live == 1);
  }
  CHECK(b->live == 0);  // every temporary sequence was freed
}

TEST_CASE("embedding errors: no tokens, too many, outside the vocabulary") {
  test::temp_dir dir("chatai-embedding");
  auto m = small_model(dir.path());
  auto b = cpu_of(m);
  embedding_options o;
  o.max_tokens = 10;
  CHECK(embed(*b, {}, o).err().code() == errc::invalid_argument);
  const auto eleven = some_tokens(11, 512);
  const auto too_long = embed(*b, eleven, o);
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.err().code() == errc::out_of_range);
  CHECK(too_long.err().message() == "the input has 11 tokens, the context holds 10");
  CHECK(embed(*b, std::span(eleven).first(10), o).ok());
  const std::vector<token_id> outside = {3, 512};
  CHECK(embed(*b, outside, o).err().code() == errc::invalid_argument);
  o.chunk_tokens = 0;
  CHECK(embed(*b, std::span(eleven).first(3), o).err().code() == errc::invalid_argument);
  // Without a limit the model's training context (256) bounds the input.
  o = {};
  CHECK(embed(*b, some_tokens(257, 512), o).err().code() == errc::out_of_range);
  CHECK(b->live == 0);
}

TEST_CASE("pooling names, the GGUF default and the tokens of an input text") {
  CHECK(parse_pooling("mean").value() == pooling::mean);
  CHECK(parse_pooling("last").value() == pooling::last);
  CHECK(parse_pooling("cls").err().code() == errc::invalid_argument);
  CHECK(to_string(pooling::last) == "last");

  test::temp_dir dir("chatai-embedding");
  const auto file_with = [&](std::optional<std::uint32_t> type) {
    gguf_writer w;
    REQUIRE(w.add_string("general.architecture", "qwen2").ok());
    if (type) REQUIRE(w.add_uint32("qwen2.pooling_type", *type).ok());
    const fs::path path = dir.path() / "meta.gguf";
    require_ok(w.write(path));
    auto f = gguf_file::open(path);
    REQUIRE(f.ok());
    return default_pooling(*f);
  };
  CHECK(file_with(std::nullopt) == pooling::mean);
  CHECK(file_with(1) == pooling::mean);
  CHECK(file_with(3) == pooling::last);
  CHECK(file_with(2) == pooling::mean);  // cls: not computed, mean stands in

  vocabulary_spec spec;
  spec.tokens = {"a", "b", "<s>", "</s>"};
  spec.types = {token_type::normal, token_type::normal, token_type::control, token_type::control};
  spec.pre = pre_tokenizer::gpt2;
  spec.bos = 2;
  spec.eos = 3;
  auto plain = vocabulary::create(spec);
  REQUIRE(plain.ok());
  CHECK(encode_embedding_input(*plain, "ab") == std::vector<token_id>{0, 1});
  spec.add_bos = true;
  spec.add_eos = true;
  auto both = vocabulary::create(spec);
  REQUIRE(both.ok());
  CHECK(encode_embedding_input(*both, "ab") == std::vector<token_id>{2, 0, 1, 3});
}
