// Tests of the GGUF reader and writer: the real model, the tokenizer vocabularies, round
// trips of every value type, and corrupt files whose errors name the offending byte.
#include <doctest/doctest.h>

#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "chatai/engine/gguf.hpp"

using namespace chatai;
using namespace chatai::engine;
namespace fs = std::filesystem;

namespace {

using bytes_t = std::vector<std::byte>;

template <class T>
void patch(bytes_t& bytes, std::size_t offset, T value) {
  REQUIRE(offset + sizeof value <= bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

// Parses `bytes` and returns the error message ("" if it parsed).
std::string parse_error(const bytes_t& bytes) {
  auto file = gguf_file::parse(bytes);
  return file ? std::string() : file.err().message();
}

bool within(const gguf_file& file, const gguf_tensor& t) {
  const std::byte* begin = file.bytes().data();
  const std::byte* end = begin + file.bytes().size();
  return t.data >= begin && t.data + t.size <= end;
}

std::vector<std::byte> filled(std::size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return out;
}

struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("chatai-gguf-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
};

// A small valid file with metadata and two tensors, used as the base of corruptions.
bytes_t small_model() {
  gguf_writer w;
  REQUIRE(w.add_string("general.architecture", "llama"));
  REQUIRE(w.add_uint32("llama.block_count", 2));
  const std::vector<std::string> tokens = {"a", "b", "<s>"};
  REQUIRE(w.add_array("tokenizer.ggml.tokens", std::span<const std::string>(tokens)));
  const std::vector<float> scores = {0.5f, -1.0f, 0.0f};
  REQUIRE(w.add_array("tokenizer.ggml.scores", std::span<const float>(scores)));
  const std::array<std::int64_t, 2> shape_a = {4, 3};
  REQUIRE(w.add_tensor("a.weight", ggml_type::f32, shape_a, filled(48, 1)));
  const std::array<std::int64_t, 1> shape_b = {64};
  REQUIRE(w.add_tensor("b.weight", ggml_type::q4_0, shape_b, filled(36, 2)));
  return w.to_bytes();
}

}  // namespace

TEST_CASE("the ggml type table matches ggml's block layout") {
  CHECK(type_info(ggml_type::f32).type_size == 4);
  CHECK(type_info(ggml_type::q4_1).block_size == 32);
  CHECK(type_info(ggml_type::q4_1).type_size == 20);
  CHECK(type_info(ggml_type::q8_0).type_size == 34);
  CHECK(type_info(ggml_type::q6_k).block_size == 256);
  CHECK(type_info(ggml_type::q6_k).type_size == 210);
  CHECK(type_info(ggml_type::iq2_xxs).type_size == 66);
  CHECK_FALSE(type_info(ggml_type::iq4_xs).computable);
  CHECK(type_info(ggml_type::bf16).computable);
  CHECK(find_type_info(4) == nullptr);
  CHECK(find_type_info(1000) == nullptr);
  CHECK(parse_ggml_type("Q4_K") == ggml_type::q4_k);
  CHECK(parse_ggml_type("q4_k") == ggml_type::q4_k);
  CHECK_FALSE(parse_ggml_type("q4_2").has_value());
  CHECK(to_string(ggml_type::q2_k) == "q2_K");
  for (const auto& info : all_type_infos()) CHECK(find_type_info(static_cast<std::uint32_t>(info.type)) == &info);

  const std::array<std::int64_t, 2> shape = {576, 49152};
  CHECK(*tensor_byte_size(ggml_type::q4_1, shape) == 576 / 32 * 20 * 49152);
  const std::array<std::int64_t, 1> odd = {33};
  CHECK_FALSE(tensor_byte_size(ggml_type::q4_0, odd).ok());
  const std::array<std::int64_t, 2> zero = {32, 0};
  CHECK_FALSE(tensor_byte_size(ggml_type::f32, zero).ok());
  const std::array<std::int64_t, 3> huge = {1LL << 40, 1LL << 40, 1LL << 40};
  CHECK(tensor_byte_size(ggml_type::f32, huge).err().code() == errc::out_of_range);
}

TEST_CASE("the real model: SmolLM2-135M-Instruct Q4_1") {
  const std::string path = CHATAI_TEST_MODEL;
  if (path.empty()) {
    MESSAGE("no test model configured; skipped");
    return;
  }
  auto file = gguf_file::open(path);
  REQUIRE_MESSAGE(file.ok(), (file.ok() ? "" : file.err().message()));
  CHECK(file->version() == 3);
  CHECK(*file->architecture() == "llama");
  CHECK(*file->get_uint("llama.block_count") == 30);
  CHECK(*file->get_uint("llama.embedding_length") == 576);
  CHECK(*file->get_uint("llama.attention.head_count") == 9);
  CHECK(*file->get_float("llama.attention.layer_norm_rms_epsilon") > 0.0);
  CHECK(*file->get_string("tokenizer.ggml.model") == "gpt2");
  auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.ok());
  CHECK(tokens->size() == 49152);
  CHECK((*tokens)[0] == "<|endoftext|>");
  auto types = file->get_int32_array("tokenizer.ggml.token_type");
  REQUIRE(types.ok());
  CHECK(types->size() == 49152);
  CHECK(file->get_string("tokenizer.chat_template")->find("im_start") != std::string_view::npos);
  CHECK(file->keys().front() == "general.architecture");
  CHECK(file->has("tokenizer.ggml.merges"));

  CHECK(file->tensors().size() == 272);
  const gguf_tensor* embd = file->find_tensor("token_embd.weight");
  REQUIRE(embd != nullptr);
  CHECK(embd->shape == std::vector<std::int64_t>{576, 49152});
  CHECK(embd->element_count() == 576 * 49152);
  for (const auto& t : file->tensors()) {
    CHECK(within(*file, t));
    CHECK(t.offset % file->alignment() == 0);
    CHECK(*tensor_byte_size(t.type, t.shape) == t.size);
  }

  SUBCASE("typed accessors report the key and the mismatch") {
    auto wrong = file->get_uint("general.architecture");
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.err().code() == errc::invalid_argument);
    CHECK(wrong.err().message() == "metadata key 'general.architecture' is a string, not an unsigned integer");
    auto missing = file->get_string("no.such.key");
    CHECK(missing.err().code() == errc::not_found);
    CHECK_FALSE(file->get_float32_array("tokenizer.ggml.tokens").ok());
    CHECK(file->find("no.such.key") == nullptr);
    CHECK(file->find_tensor("no.such.tensor") == nullptr);
  }
}

TEST_CASE("the tokenizer vocabularies all parse") {
  const fs::path dir = fs::path(CHATAI_SHARED_DIR) / "testdata" / "tokenizers";
  REQUIRE(fs::is_directory(dir));
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    CAPTURE(entry.path().string());
    auto file = gguf_file::open(entry.path());
    REQUIRE_MESSAGE(file.ok(), (file.ok() ? "" : file.err().message()));
    CHECK(file->get_string("tokenizer.ggml.model").ok());
    auto tokens = file->get_string_array("tokenizer.ggml.tokens");
    REQUIRE(tokens.ok());
    CHECK(tokens->size() > 1000);
    if (file->has("tokenizer.ggml.scores")) CHECK(file->get_float32_array("tokenizer.ggml.scores")->size() == tokens->size());
    ++seen;
  }
  CHECK(seen >= 9);
}

TEST_CASE("open reports missing files and non-files with the path") {
  auto missing = gguf_file::open("/nonexistent/model.gguf");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code() == errc::not_found);
  CHECK(missing.err().message().find("/nonexistent/model.gguf") != std::string::npos);
  auto dir = gguf_file::open(fs::temp_directory_path());
  CHECK_FALSE(dir.ok());

  temp_dir tmp;
  const fs::path empty = tmp.path / "empty.gguf";
  std::ofstream(empty).close();
  auto e = gguf_file::open(empty);
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().message() == empty.string() + ": offset 0: the GGUF magic needs 4 bytes but the file ends after 0");
}

TEST_CASE("writer round trip of every value type") {
  gguf_writer w;
  REQUIRE(w.add_uint8("t.u8", 200));
  REQUIRE(w.add_int8("t.i8", -100));
  REQUIRE(w.add_uint16("t.u16", 60000));
  REQUIRE(w.add_int16("t.i16", -30000));
  REQUIRE(w.add_uint32("t.u32", 4000000000u));
  REQUIRE(w.add_int32("t.i32", -2000000000));
  REQUIRE(w.add_uint64("t.u64", 18000000000000000000ull));
  REQUIRE(w.add_int64("t.i64", -9000000000000000000ll));
  REQUIRE(w.add_float32("t.f32", 1.5f));
  REQUIRE(w.add_float64("t.f64", -2.25));
  REQUIRE(w.add_bool("t.bool", true));
  REQUIRE(w.add_string("t.str", "h\xc3\xa9llo"));
  REQUIRE(w.add_string("t.empty", ""));
  const std::vector<std::uint8_t> au8 = {1, 2, 255};
  const std::vector<std::int8_t> ai8 = {-1, 0, 127};
  const std::vector<std::uint16_t> au16 = {65535};
  const std::vector<std::int16_t> ai16 = {-32768, 32767};
  const std::vector<std::uint32_t> au32 = {7, 8};
  const std::vector<std::int32_t> ai32 = {-5, 0, 5};
  const std::vector<std::uint64_t> au64 = {1ull << 63};
  const std::vector<std::int64_t> ai64 = {-(1ll << 62), 3};
  const std::vector<float> af32 = {0.25f, -0.5f};
  const std::vector<double> af64 = {1e300};
  const std::array<bool, 3> abool = {true, false, true};
  const std::vector<std::string> astr = {"one", "", "three"};
  const std::vector<std::string_view> asv = {"x"};
  REQUIRE(w.add_array("a.u8", std::span<const std::uint8_t>(au8)));
  REQUIRE(w.add_array("a.i8", std::span<const std::int8_t>(ai8)));
  REQUIRE(w.add_array("a.u16", std::span<const std::uint16_t>(au16)));
  REQUIRE(w.add_array("a.i16", std::span<const std::int16_t>(ai16)));
  REQUIRE(w.add_array("a.u32", std::span<const std::uint32_t>(au32)));
  REQUIRE(w.add_array("a.i32", std::span<const std::int32_t>(ai32)));
  REQUIRE(w.add_array("a.u64", std::span<const std::uint64_t>(au64)));
  REQUIRE(w.add_array("a.i64", std::span<const std::int64_t>(ai64)));
  REQUIRE(w.add_array("a.f32", std::span<const float>(af32)));
  REQUIRE(w.add_array("a.f64", std::span<const double>(af64)));
  REQUIRE(w.add_array("a.bool", std::span<const bool>(abool)));
  REQUIRE(w.add_array("a.str", std::span<const std::string>(astr)));
  REQUIRE(w.add_array("a.sv", std::span<const std::string_view>(asv)));
  REQUIRE(w.add_array("a.empty", std::span<const std::int32_t>()));
  REQUIRE(w.set_alignment(64));
  const std::array<std::int64_t, 2> shape = {32, 2};
  const auto q8 = filled(68, 3);
  REQUIRE(w.add_tensor("q8", ggml_type::q8_0, shape, q8));
  const std::array<std::int64_t, 1> shape1 = {3};
  const auto f16 = filled(6, 4);
  REQUIRE(w.add_tensor("f16", ggml_type::f16, shape1, f16));

  const bytes_t bytes = w.to_bytes();
  auto file = gguf_file::parse(bytes);
  REQUIRE_MESSAGE(file.ok(), (file.ok() ? "" : file.err().message()));
  CHECK(file->version() == 3);
  CHECK(file->alignment() == 64);
  CHECK(file->data_offset() % 64 == 0);
  CHECK(file->keys().size() == 28);
  CHECK(file->keys()[0] == "t.u8");
  CHECK(file->keys().back() == "general.alignment");

  CHECK(*file->get_uint("t.u8") == 200);
  CHECK(*file->get_int("t.i8") == -100);
  CHECK(*file->get_uint("t.u16") == 60000);
  CHECK(*file->get_int("t.i16") == -30000);
  CHECK(*file->get_uint("t.u32") == 4000000000u);
  CHECK(*file->get_int("t.i32") == -2000000000);
  CHECK(*file->get_uint("t.u64") == 18000000000000000000ull);
  CHECK_FALSE(file->get_int("t.u64").ok());
  CHECK(*file->get_int("t.i64") == -9000000000000000000ll);
  CHECK_FALSE(file->get_uint("t.i64").ok());
  CHECK(*file->get_float("t.f32") == 1.5);
  CHECK(*file->get_float("t.f64") == -2.25);
  CHECK(*file->get_bool("t.bool"));
  CHECK(*file->get_string("t.str") == "h\xc3\xa9llo");
  CHECK(file->get_string("t.empty")->empty());
  for (const char* key : {"t.u8", "t.i8", "t.u16", "t.i16", "t.u32", "t.i32", "t.u64", "t.i64"}) {
    CHECK(file->find(key)->holds_integers());
  }
  CHECK(file->find("t.f32")->type() == gguf_value_type::float32);
  CHECK(file->find("t.bool")->type() == gguf_value_type::boolean);

  const gguf_value* v = file->find("a.u8");
  REQUIRE(v != nullptr);
  CHECK(v->is_array());
  CHECK(v->element_type() == gguf_value_type::uint8);
  CHECK(v->uint_at(2) == 255);
  CHECK(file->find("a.i8")->int_at(0) == -1);
  CHECK(file->find("a.u16")->uint_at(0) == 65535);
  CHECK(file->find("a.i16")->int_at(0) == -32768);
  CHECK(*file->get_int32_array("a.u32") == std::vector<std::int32_t>{7, 8});
  CHECK(*file->get_int32_array("a.i32") == ai32);
  CHECK(file->find("a.u64")->uint_at(0) == 1ull << 63);
  CHECK_FALSE(file->get_int32_array("a.u64").ok());
  CHECK(file->find("a.i64")->int_at(0) == -(1ll << 62));
  CHECK_FALSE(file->get_int32_array("a.i64").ok());
  CHECK(*file->get_float32_array("a.f32") == af32);
  CHECK(file->find("a.f64")->float_at(0) == 1e300);
  CHECK(file->find("a.bool")->bool_at(0));
  CHECK_FALSE(file->find("a.bool")->bool_at(1));
  auto strings = file->get_string_array("a.str");
  REQUIRE(strings.ok());
  CHECK(std::vector<std::string>(strings->begin(), strings->end()) == astr);
  CHECK(file->find("a.sv")->string_at(0) == "x");
  CHECK(file->get_int32_array("a.empty")->empty());

  REQUIRE(file->tensors().size() == 2);
  const gguf_tensor& t0 = file->tensors()[0];
  CHECK(t0.name == "q8");
  CHECK(t0.type == ggml_type::q8_0);
  CHECK(t0.shape == std::vector<std::int64_t>{32, 2});
  CHECK(t0.size == 68);
  CHECK(std::memcmp(t0.data, q8.data(), q8.size()) == 0);
  const gguf_tensor& t1 = file->tensors()[1];
  CHECK(t1.offset == 128);
  CHECK(std::memcmp(t1.data, f16.data(), f16.size()) == 0);

  SUBCASE("the same bytes through a file") {
    temp_dir tmp;
    const fs::path path = tmp.path / "round.gguf";
    REQUIRE(w.write(path));
    CHECK(fs::file_size(path) == bytes.size());
    CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 1);
    auto reread = gguf_file::open(path);
    REQUIRE(reread.ok());
    CHECK(std::equal(reread->bytes().begin(), reread->bytes().end(), bytes.begin(), bytes.end()));
  }
}

TEST_CASE("writer rejects bad input and leaves no file behind on failure") {
  gguf_writer w;
  REQUIRE(w.add_uint32("k", 1));
  CHECK(w.add_string("k", "again").err().message() == "duplicate metadata key 'k'");
  CHECK_FALSE(w.add_bool("", true).ok());
  CHECK_FALSE(w.add_uint32("general.alignment", 64).ok());
  const std::vector<std::uint32_t> alignments = {64};
  CHECK_FALSE(w.add_array("general.alignment", std::span<const std::uint32_t>(alignments)).ok());
  CHECK_FALSE(w.set_alignment(0).ok());
  CHECK_FALSE(w.set_alignment(48).ok());
  REQUIRE(w.set_alignment(16));
  REQUIRE(w.set_alignment(8));
  const std::array<std::int64_t, 1> shape = {32};
  CHECK(w.add_tensor("t", ggml_type::q4_0, shape, filled(17, 0)).err().message() ==
        "tensor 't' needs 18 bytes of data, got 17");
  const std::array<std::int64_t, 1> odd = {31};
  CHECK_FALSE(w.add_tensor("t", ggml_type::q4_0, odd, filled(18, 0)).ok());
  const std::array<std::int64_t, 5> five = {1, 1, 1, 1, 1};
  CHECK_FALSE(w.add_tensor("t", ggml_type::f32, five, filled(4, 0)).ok());
  REQUIRE(w.add_tensor("t", ggml_type::q4_0, shape, filled(18, 0)));
  CHECK_FALSE(w.add_tensor("t", ggml_type::q4_0, shape, filled(18, 0)).ok());
  const bytes_t bytes = w.to_bytes();
  auto parsed = gguf_file::parse(bytes);
  REQUIRE(parsed.ok());
  CHECK(parsed->alignment() == 8);
  CHECK(parsed->keys().size() == 2);

  temp_dir tmp;
  CHECK(w.write(tmp.path / "missing-dir" / "x.gguf").err().code() == errc::io_error);
  CHECK(fs::is_empty(tmp.path));
}

TEST_CASE("version 2 files parse like version 3") {
  bytes_t bytes = small_model();
  patch<std::uint32_t>(bytes, 4, 2);
  auto file = gguf_file::parse(bytes);
  REQUIRE(file.ok());
  CHECK(file->version() == 2);
}

// The layout of small_model(), byte by byte: header 0-23; general.architecture at 24 (type
// at 52, string length at 56); llama.block_count at 69; tokenizer.ggml.tokens at 102
// (element type 135, count 139, strings at 147, 156, 165); tokenizer.ggml.scores at 176
// (count 213); tensor a.weight at 233 (dims count 249, dims 253 and 261, type 269, offset
// 273); b.weight at 281 (dims count 297, dim 301, type 309, offset 313); data at 352.
TEST_CASE("corrupt files give errors that name the offset") {
  const bytes_t base = small_model();
  REQUIRE(base.size() == 452);
  REQUIRE(gguf_file::parse(base).ok());
  REQUIRE(gguf_file::parse(base)->data_offset() == 352);

  struct corruption {
    const char* name;
    std::function<void(bytes_t&)> apply;
    const char* expected;  // the start of the message
    errc code = errc::parse_error;
  };
  const auto put_text = [](bytes_t& b, std::size_t at, std::string_view text) {
    std::memcpy(b.data() + at, text.data(), text.size());
  };
  const std::vector<corruption> cases = {
      {"bad magic", [](bytes_t& b) { b[0] = std::byte{'X'}; }, "offset 0: bad magic 'XGUF': not a GGUF file"},
      {"version 1", [](bytes_t& b) { patch<std::uint32_t>(b, 4, 1); },
       "offset 4: GGUF version 1 is not supported (chatai reads versions 2 and 3)", errc::unsupported},
      {"version 4", [](bytes_t& b) { patch<std::uint32_t>(b, 4, 4); }, "offset 4: GGUF version 4 is not supported",
       errc::unsupported},
      {"big-endian", [](bytes_t& b) { patch<std::uint32_t>(b, 4, 0x03000000); },
       "offset 4: big-endian GGUF files are not supported", errc::unsupported},
      {"huge tensor count", [](bytes_t& b) { patch<std::uint64_t>(b, 8, 1ull << 40); },
       "offset 8: tensor count 1099511627776 is more than the file can hold"},
      {"huge metadata count", [](bytes_t& b) { patch<std::uint64_t>(b, 16, ~0ull); },
       "offset 16: metadata count 18446744073709551615 is more than the file can hold"},
      {"huge key length", [](bytes_t& b) { patch<std::uint64_t>(b, 24, 9999999); },
       "offset 24: key length 9999999 exceeds the 420 bytes left in the file"},
      {"key length at the limit", [](bytes_t& b) { patch<std::uint64_t>(b, 24, ~0ull); },
       "offset 24: key length 18446744073709551615 exceeds"},
      {"empty key", [](bytes_t& b) { patch<std::uint64_t>(b, 24, 0); }, "offset 24: empty metadata key"},
      {"huge string length", [](bytes_t& b) { patch<std::uint64_t>(b, 56, 1ull << 62); },
       "offset 56: string value of 'general.architecture' length 4611686018427387904 exceeds"},
      {"unknown value type", [](bytes_t& b) { patch<std::uint32_t>(b, 52, 13); },
       "offset 52: key 'general.architecture' has unknown value type 13"},
      {"huge array count", [](bytes_t& b) { patch<std::uint64_t>(b, 139, 1ull << 60); },
       "offset 139: key 'tokenizer.ggml.tokens': array length 1152921504606846976 exceeds"},
      {"float array past the end", [](bytes_t& b) { patch<std::uint64_t>(b, 213, 1000); },
       "offset 213: key 'tokenizer.ggml.scores': array length 1000 exceeds"},
      {"nested array", [](bytes_t& b) { patch<std::uint32_t>(b, 135, 9); },
       "offset 135: key 'tokenizer.ggml.tokens': nested arrays are not supported", errc::unsupported},
      {"unknown array element type", [](bytes_t& b) { patch<std::uint32_t>(b, 135, 99); },
       "offset 135: key 'tokenizer.ggml.tokens' has unknown value type 99"},
      {"huge string element", [](bytes_t& b) { patch<std::uint64_t>(b, 156, 1000); },
       "offset 156: string element 1 of 'tokenizer.ggml.tokens' length 1000 exceeds"},
      {"duplicate key", [&](bytes_t& b) { put_text(b, 184, "tokenizer.ggml.tokens"); },
       "offset 176: duplicate key 'tokenizer.ggml.tokens'"},
      {"too many dimensions", [](bytes_t& b) { patch<std::uint32_t>(b, 249, 5); },
       "offset 249: tensor 'a.weight' has 5 dimensions (1 to 4 are allowed)"},
      {"no dimensions", [](bytes_t& b) { patch<std::uint32_t>(b, 249, 0); },
       "offset 249: tensor 'a.weight' has 0 dimensions"},
      {"zero dimension", [](bytes_t& b) { patch<std::uint64_t>(b, 261, 0); },
       "offset 249: tensor 'a.weight': dimension 1 is 0, not positive"},
      {"negative dimension", [](bytes_t& b) { patch<std::int64_t>(b, 253, -4); },
       "offset 249: tensor 'a.weight': dimension 0 is -4, not positive"},
      {"overflowing shape", [](bytes_t& b) { patch<std::int64_t>(b, 253, 1ll << 62); patch<std::int64_t>(b, 261, 1ll << 62); },
       "offset 249: tensor 'a.weight': the element count overflows 64 bits"},
      {"not a whole block", [](bytes_t& b) { patch<std::uint64_t>(b, 301, 48); },
       "offset 297: tensor 'b.weight': dimension 0 (48) is not a multiple of the block size 32 of q4_0"},
      {"unknown tensor type", [](bytes_t& b) { patch<std::uint32_t>(b, 269, 4); },
       "offset 269: tensor 'a.weight' has unknown type 4"},
      {"misaligned tensor", [](bytes_t& b) { patch<std::uint64_t>(b, 273, 1); },
       "offset 273: tensor 'a.weight' data offset 1 is not a multiple of the alignment 32"},
      {"tensor out of bounds", [](bytes_t& b) { patch<std::uint64_t>(b, 313, 1u << 20); },
       "offset 313: tensor 'b.weight' data at 1048576 (36 bytes) lies beyond the end of the data section (100 bytes)"},
      {"tensor end past the file", [](bytes_t& b) { patch<std::uint64_t>(b, 313, 96); },
       "offset 313: tensor 'b.weight' data at 96 (36 bytes) lies beyond"},
      {"tensor offset that wraps", [](bytes_t& b) { patch<std::uint64_t>(b, 313, ~0ull - 31); },
       "offset 313: tensor 'b.weight' data at 18446744073709551584"},
      {"overlapping tensors", [](bytes_t& b) { patch<std::uint64_t>(b, 313, 32); },
       "offset 313: tensor 'b.weight' data overlaps tensor 'a.weight'"},
      {"duplicate tensor name", [&](bytes_t& b) { put_text(b, 289, "a.weight"); },
       "offset 281: duplicate tensor name 'a.weight'"},
      {"data section past the end", [](bytes_t& b) { b.resize(330); },
       "offset 321: the data section would begin at 352, after the end of the file (330 bytes)"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    bytes_t bytes = base;
    c.apply(bytes);
    auto file = gguf_file::parse(bytes);
    REQUIRE_FALSE(file.ok());
    CHECK(file.err().message().starts_with(c.expected));
    CHECK(file.err().code() == c.code);
  }
}

TEST_CASE("general.alignment must be a uint32 power of two") {
  gguf_writer w;
  REQUIRE(w.set_alignment(32));
  const bytes_t base = w.to_bytes();
  REQUIRE(gguf_file::parse(base).ok());
  // general.alignment: key length at 24, type at 49, value at 53.
  for (std::uint32_t bad : {0u, 3u, 48u}) {
    bytes_t bytes = base;
    patch<std::uint32_t>(bytes, 53, bad);
    CHECK(parse_error(bytes) == "offset 24: general.alignment " + std::to_string(bad) + " is not a power of two");
  }
  bytes_t typed = base;
  patch<std::uint32_t>(typed, 49, 5);
  CHECK(parse_error(typed) == "offset 24: general.alignment has type int32, not uint32");

  bytes_t big = base;
  patch<std::uint32_t>(big, 53, 1u << 20);
  auto file = gguf_file::parse(big);
  REQUIRE(file.ok());
  CHECK(file->alignment() == 1u << 20);
}

TEST_CASE("every truncation of a valid file fails cleanly, naming an offset") {
  const bytes_t base = small_model();
  for (std::size_t n = 0; n < base.size(); ++n) {
    CAPTURE(n);
    const bytes_t cut(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string message = parse_error(cut);
    REQUIRE_FALSE(message.empty());
    CHECK(message.starts_with("offset "));
  }
}

TEST_CASE("flipping any byte of the header never reads out of bounds") {
  const bytes_t base = small_model();
  for (std::size_t i = 0; i < 352; ++i) {
    for (unsigned value : {0x00u, 0x01u, 0x7fu, 0x80u, 0xffu}) {
      bytes_t bytes = base;
      bytes[i] = static_cast<std::byte>(value);
      auto file = gguf_file::parse(bytes);
      if (!file) {
        CHECK(file.err().message().starts_with("offset "));
        continue;
      }
      for (const auto& t : file->tensors()) CHECK(within(*file, t));
    }
  }
}
