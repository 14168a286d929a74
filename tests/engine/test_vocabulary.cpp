// Tests of the tokenizers: llama.cpp's test cases for each vocabulary family, the real model's
// vocabulary against reference ids, round trips, special tokens and streamed decoding.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/vocabulary.hpp"

using namespace chatai;
using namespace chatai::engine;

namespace {

const std::filesystem::path tokenizer_data = std::filesystem::path(CHATAI_SHARED_DIR) / "testdata" / "tokenizers";

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

vocabulary load_vocabulary(const std::filesystem::path& path) {
  auto file = gguf_file::open(path);
  REQUIRE_MESSAGE(file.ok(), path.string());
  auto vocab = vocabulary::from_gguf(*file);
  REQUIRE_MESSAGE(vocab.ok(), path.string() << ": " << vocab.err().message());
  return std::move(vocab).value();
}

struct tokenizer_case {
  std::string text;
  std::vector<token_id> ids;
};

// llama.cpp's test format: X.gguf.inp holds the inputs, each followed by a line
// "__ggml_vocab_test__"; X.gguf.out one line of ids per input.
std::vector<tokenizer_case> read_cases(const std::filesystem::path& vocab_path) {
  const std::string inputs = read_all(vocab_path.string() + ".inp");
  const std::string outputs = read_all(vocab_path.string() + ".out");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<tokenizer_case> cases;
  for (std::size_t pos = 0; pos < inputs.size();) {
    std::size_t end = inputs.find(separator, pos);
    if (end == std::string::npos) end = inputs.size();
    cases.push_back({inputs.substr(pos, end - pos), {}});
    pos = end + separator.size();
  }
  std::istringstream lines(outputs);
  std::string line;
  std::size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    REQUIRE(i < cases.size());
    std::istringstream ids(line);
    for (token_id id; ids >> id;) cases[i].ids.push_back(id);
  }
  REQUIRE(i == cases.size());
  return cases;
}

std::vector<std::filesystem::path> vocabulary_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(tokenizer_data)) {
    if (entry.path().extension() == ".gguf") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string show(const std::vector<token_id>& ids) {
  std::string out;
  for (const token_id id : ids) out += " " + std::to_string(id);
  return out;
}

}  // namespace

TEST_CASE("every llama.cpp tokenizer case of every vocabulary family") {
  const auto files = vocabulary_files();
  REQUIRE(files.size() == 9);
  for (const auto& path : files) {
    const vocabulary vocab = load_vocabulary(path);
    const auto cases = read_cases(path);
    std::size_t passed = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const auto ids = vocab.encode(cases[i].text);
      if (ids == cases[i].ids) {
        ++passed;
      } else {
        FAIL_CHECK(path.filename().string() << " case " << i << " \"" << cases[i].text << "\"\n  expected"
                                            << show(cases[i].ids) << "\n  got     " << show(ids));
      }
    }
    MESSAGE(path.filename().string() << ": " << passed << " of " << cases.size() << " cases pass");
  }
}

namespace {

rapidjson::Document read_reference() {
  const auto path = std::filesystem::path(CHATAI_SOURCE_DIR) / "tests" / "engine" / "reference" / "tokenizer_reference.json";
  auto doc = json::parse(read_all(path));
  REQUIRE_MESSAGE(doc.ok(), path.string());
  return std::move(doc).value();
}

std::vector<std::string> strings_of(const rapidjson::Value& array) {
  std::vector<std::string> out;
  for (const auto& v : array.GetArray()) out.emplace_back(v.GetString(), v.GetStringLength());
  return out;
}

std::vector<token_id> ids_of(const rapidjson::Value& array) {
  std::vector<token_id> out;
  for (const auto& v : array.GetArray()) out.push_back(v.GetInt());
  return out;
}

vocabulary real_model_vocabulary() {
  REQUIRE_MESSAGE(std::string_view(CHATAI_TEST_MODEL) != "", "the test model was not found at configure time");
  return load_vocabulary(CHATAI_TEST_MODEL);
}

bool is_well_formed(std::string_view text) {
  std::string copy(text);
  for (std::size_t pos = 0; pos < copy.size();) {
    const auto lead = static_cast<unsigned char>(copy[pos]);
    const std::size_t length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 ? 2 : 0;
    if (length == 0 || pos + length > copy.size()) return false;
    for (std::size_t i = 1; i < length; ++i) {
      if ((static_cast<unsigned char>(copy[pos + i]) & 0xC0) != 0x80) return false;
    }
    pos += length;
  }
  return true;
}

// A byte-level BPE vocabulary of the 256 byte characters plus `extra` tokens.
vocabulary_spec byte_level_spec(std::vector<std::string> extra, std::vector<std::string> merges) {
  vocabulary_spec spec;
  for (int b = 0; b < 256; ++b) {
    const bool own = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    static int shifted = 0;
    if (b == 0) shifted = 0;
    const char32_t c = own ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
    std::string utf8;
    if (c < 0x80) {
      utf8 += static_cast<char>(c);
    } else {
      utf8 += static_cast<char>(0xC0 | (c >> 6));
      utf8 += static_cast<char>(0x80 | (c & 0x3F));
    }
    spec.tokens.push_back(utf8);
  }
  spec.tokens.insert(spec.tokens.end(), extra.begin(), extra.end());
  spec.merges = std::move(merges);
  spec.pre = pre_tokenizer::gpt2;
  return spec;
}

}  // namespace

TEST_CASE("the pre-tokenizers split as the Hugging Face expressions do") {
  const auto reference = read_reference();
  const std::pair<const char*, pre_tokenizer> kinds[] = {
      {"gpt2", pre_tokenizer::gpt2},
      {"llama3", pre_tokenizer::llama3},
      {"qwen2", pre_tokenizer::qwen2},
      {"starcoder", pre_tokenizer::starcoder},
  };
  for (const auto& [name, kind] : kinds) {
    for (const auto& item : reference["pre_tokenize"][name].GetArray()) {
      const std::string text(item[0].GetString(), item[0].GetStringLength());
      CHECK_MESSAGE(pre_tokenize(kind, text) == strings_of(item[1]), name << ": \"" << text << "\"");
    }
  }
}

TEST_CASE("the real model's vocabulary gives the reference ids") {
  const vocabulary vocab = real_model_vocabulary();
  CHECK(vocab.model() == tokenizer_model::bpe);
  CHECK(vocab.pre() == pre_tokenizer::starcoder);
  CHECK(vocab.size() == 49152);
  CHECK(vocab.bos() == 1);
  CHECK(vocab.eos() == 2);
  CHECK_FALSE(vocab.add_bos());
  CHECK(vocab.is_end_of_generation(2));
  CHECK_FALSE(vocab.is_end_of_generation(1));

  const auto reference = read_reference();
  for (const auto& item : reference["smollm2"].GetArray()) {
    const std::string text(item[0].GetString(), item[0].GetStringLength());
    const auto ids = vocab.encode(text);
    CHECK_MESSAGE(ids == ids_of(item[1]), "\"" << text << "\" gave" << show(ids));
    CHECK(vocab.decode(ids).value() == text);
  }

  // smollm splits digits one by one, as StarCoder's tokenizer does.
  const auto digits = vocab.encode("12345");
  REQUIRE(digits.size() == 5);
  for (std::size_t i = 0; i < digits.size(); ++i) CHECK(vocab.token_to_piece(digits[i]) == std::string(1, "12345"[i]));
}

TEST_CASE("decoding undoes encoding for every test text of every family") {
  for (const auto& path : vocabulary_files()) {
    const vocabulary vocab = load_vocabulary(path);
    for (const auto& c : read_cases(path)) {
      const auto ids = vocab.encode(c.text);
      auto text = vocab.decode(ids);
      REQUIRE(text.ok());
      CHECK_MESSAGE(*text == c.text, path.filename().string() << ": \"" << c.text << "\" came back as \"" << *text << "\"");
    }
  }
}

TEST_CASE("SentencePiece: space prefix, byte fallback, BOS") {
  const vocabulary vocab = load_vocabulary(tokenizer_data / "ggml-vocab-llama-spm.gguf");
  CHECK(vocab.model() == tokenizer_model::spm);
  CHECK(vocab.add_bos());
  CHECK(vocab.add_space_prefix());
  const auto hello = vocab.encode("Hello", {.add_bos = true});
  REQUIRE(hello.size() == 2);
  CHECK(hello[0] == vocab.bos());
  CHECK(vocab.text(hello[1]) == "\xE2\x96\x81Hello");
  CHECK(vocab.token_to_piece(hello[1]) == " Hello");
  CHECK(vocab.decode(hello).value() == "Hello");
  CHECK(vocab.decode(hello, true).value() == "<s>Hello");

  // A character the vocabulary lacks is spelt in its UTF-8 bytes.
  const auto ids = vocab.encode("\xF0\x9F\xA6\x99");  // U+1F999
  std::vector<token_type> types;
  for (const token_id id : ids) types.push_back(vocab.type(id));
  CHECK(std::count(types.begin(), types.end(), token_type::byte) == 4);
  CHECK(vocab.decode(ids).value() == "\xF0\x9F\xA6\x99");
}

TEST_CASE("special tokens are read from the text only when asked") {
  const vocabulary vocab = real_model_vocabulary();
  const std::string text = "<|im_start|>user\nHi there<|im_end|>\n";
  const auto plain = vocab.encode(text);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
  CHECK(vocab.decode(plain).value() == text);

  const auto special = vocab.encode(text, {.parse_special = true});
  REQUIRE(special.size() >= 3);
  CHECK(special.front() == 1);
  CHECK(std::count(special.begin(), special.end(), 2) == 1);
  CHECK(vocab.decode(special, true).value() == text);
  CHECK(vocab.decode(special).value() == "user\nHi there\n");
  CHECK(vocab.token_to_piece(1).empty());
  CHECK(vocab.token_to_piece(1, true) == "<|im_start|>");

  const auto with_ends = vocab.encode("Hi", {.add_bos = true, .add_eos = true});
  CHECK(with_ends.front() == vocab.bos());
  CHECK(with_ends.back() == vocab.eos());
}

TEST_CASE("user-defined tokens split the text longest first, even without parse_special") {
  auto spec = byte_level_spec({"ab", "abc", "<x>"}, {});
  spec.types.assign(spec.tokens.size(), token_type::normal);
  spec.types[256] = token_type::user_defined;
  spec.types[257] = token_type::user_defined;
  spec.types[258] = token_type::control;
  auto vocab = vocabulary::create(spec);
  REQUIRE(vocab.ok());
  CHECK(vocab->encode("xabcab") == std::vector<token_id>{'x', 257, 256});
  CHECK(vocab->encode("<x>").size() == 3);
  CHECK(vocab->encode("<x>", {.parse_special = true}) == std::vector<token_id>{258});
}

TEST_CASE("BPE merges by rank, the leftmost pair first on ties") {
  // Token ids: the byte characters are 0-255 in GPT-2's order, where 'a' is 'a'.
  auto ab_first = vocabulary::create(byte_level_spec({"ab", "bc"}, {"a b", "b c"}));
  auto bc_first = vocabulary::create(byte_level_spec({"ab", "bc"}, {"b c", "a b"}));
  REQUIRE(ab_first.ok());
  REQUIRE(bc_first.ok());
  CHECK(ab_first->encode("abc") == std::vector<token_id>{256, 'c'});
  CHECK(bc_first->encode("abc") == std::vector<token_id>{'a', 257});
  auto aa = vocabulary::create(byte_level_spec({"aa"}, {"a a"}));
  REQUIRE(aa.ok());
  CHECK(aa->encode("aaa") == std::vector<token_id>{256, 'a'});

  // ignore_merges keeps a word that is a token whole, whatever the merges would give.
  auto spec = byte_level_spec({"ab", "abc"}, {"a b"});
  CHECK(vocabulary::create(spec)->encode("abc") == std::vector<token_id>{256, 'c'});
  spec.ignore_merges = true;
  CHECK(vocabulary::create(spec)->encode("abc") == std::vector<token_id>{257});
}

TEST_CASE("ill-formed UTF-8 reads as U+FFFD") {
  const vocabulary vocab = real_model_vocabulary();
  CHECK(vocab.decode(vocab.encode("a\xFF b\xE2\x82")).value() == "a\xEF\xBF\xBD b\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("the streaming decoder returns whole UTF-8 sequences only") {
  const vocabulary vocab = real_model_vocabulary();
  const std::string text = "llamas \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 and \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB";
  const auto ids = vocab.encode(text);
  streaming_decoder decoder(vocab);
  std::string joined;
  std::size_t held = 0;
  for (const token_id id : ids) {
    const std::string part = decoder.push(id);
    CHECK(is_well_formed(part));
    if (part.empty()) ++held;
    joined += part;
  }
  joined += decoder.finish();
  CHECK(joined == text);
  CHECK(held > 0);

  // An unfinished sequence at the end becomes U+FFFD; a byte that starts none at once.
  const auto partial = vocab.encode("\xF0\x9F\xA6\x99");
  REQUIRE(partial.size() > 1);
  CHECK(decoder.push(partial[0]).empty());
  CHECK(decoder.finish() == "\xEF\xBF\xBD");
  CHECK(decoder.push(vocab.find("\xC4\xA2")) == "\xEF\xBF\xBD");  // U+0122 stands for byte 0x80
}

TEST_CASE("bad vocabularies and ids are errors") {
  CHECK(vocabulary::create({}).err().code() == errc::invalid_argument);
  auto spec = byte_level_spec({}, {});
  spec.scores = {1.0f};
  CHECK(vocabulary::create(spec).err().code() == errc::invalid_argument);
  CHECK(pre_tokenizer_from_name("no-such-pre").err().code() == errc::unsupported);
  CHECK(*pre_tokenizer_from_name("smollm") == pre_tokenizer::starcoder);
  CHECK(*pre_tokenizer_from_name("llama-bpe") == pre_tokenizer::llama3);

  gguf_writer writer;
  REQUIRE(writer.add_string("general.architecture", "llama").ok());
  auto bytes = writer.to_bytes();
  auto no_tokenizer = gguf_file::parse(bytes);
  REQUIRE(no_tokenizer.ok());
  CHECK(vocabulary::from_gguf(*no_tokenizer).err().code() == errc::not_found);

  gguf_writer bert;
  REQUIRE(bert.add_string("tokenizer.ggml.model", "bert").ok());
  auto bert_bytes = bert.to_bytes();
  auto bert_file = gguf_file::parse(bert_bytes);
  REQUIRE(bert_file.ok());
  CHECK(vocabulary::from_gguf(*bert_file).err().code() == errc::unsupported);

  const vocabulary vocab = *vocabulary::create(byte_level_spec({}, {}));
  const token_id bad[] = {'a', 256};
  CHECK(vocab.decode(bad).err().code() == errc::out_of_range);
  CHECK(vocab.token_to_piece(-1).empty());
  CHECK(vocab.text(256).empty());
}
