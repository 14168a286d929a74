// libFuzzer target: the GGUF reader on arbitrary bytes; whatever it accepts is read in full.
#include <cstddef>
#include <cstdint>
#include <span>

#include "chatai/engine/gguf.hpp"

namespace {

// Reads every byte the parsed file hands out, so an out-of-bounds pointer trips the sanitizer.
unsigned touch(const chatai::engine::gguf_file& file) {
  using chatai::engine::gguf_value_type;
  unsigned sum = 0;
  for (const auto& kv : file.metadata()) {
    sum += static_cast<unsigned>(kv.key.size());
    const auto& v = kv.value;
    for (std::uint64_t i = 0; i < v.size(); ++i) {
      if (v.element_type() == gguf_value_type::string) {
        for (char c : v.string_at(i)) sum += static_cast<unsigned char>(c);
      } else if (v.element_type() == gguf_value_type::boolean) {
        sum += v.bool_at(i) ? 1u : 0u;
      } else {
        sum += static_cast<unsigned>(v.float_at(i) != 0.0);
      }
    }
    (void)file.get_uint(kv.key);
    (void)file.get_int(kv.key);
    (void)file.get_float(kv.key);
    (void)file.get_int32_array(kv.key);
    (void)file.get_float32_array(kv.key);
  }
  for (const auto& t : file.tensors()) {
    sum += static_cast<unsigned>(t.data[0]) + static_cast<unsigned>(t.data[t.size - 1]);
    sum += static_cast<unsigned>(t.element_count() & 1);
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto file = chatai::engine::gguf_file::parse(bytes);
  if (file) {
    volatile unsigned sink = touch(*file);
    (void)sink;
  }
  return 0;
}
