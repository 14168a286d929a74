// Tensor element types as ggml numbers them in GGUF files, with their block layout.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "chatai/core/status.hpp"

namespace chatai::engine {

// The values are ggml's and appear in files: never renumber. Gaps are types ggml removed.
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
};

// How a type stores elements: `block_size` elements take `type_size` bytes.
struct ggml_type_info {
  ggml_type type;
  std::string_view name;     // ggml's name: "f32", "q4_0", "iq2_xxs"
  std::int64_t block_size;   // elements per block (1 for unquantized types)
  std::uint32_t type_size;   // bytes per block
  bool quantized;
  bool computable;           // the engine's backends compute with weights of this type
};

// The info of a known type, or nullptr for a number that names none (unknown or removed).
// Thread safety: all functions in this header are safe from any thread.
const ggml_type_info* find_type_info(std::uint32_t type) noexcept;
// The info of a known enumerator.
const ggml_type_info& type_info(ggml_type type) noexcept;
// Every known type, in numeric order.
std::span<const ggml_type_info> all_type_infos() noexcept;

// The type with ggml's name ("q4_0"; case-insensitive), if any.
std::optional<ggml_type> parse_ggml_type(std::string_view name) noexcept;
std::string_view to_string(ggml_type type) noexcept;

// Bytes taken by a tensor of `shape` (dimension 0 first, varying fastest). Errors: a
// dimension that is not positive, dimension 0 not a multiple of the block size, or a size
// that does not fit in 64 bits.
result<std::uint64_t> tensor_byte_size(ggml_type type, std::span<const std::int64_t> shape);

}  // namespace chatai::engine
