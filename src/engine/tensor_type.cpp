// The ggml type table: block sizes and bytes per block, as ggml defines them.
#include "chatai/engine/tensor_type.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cstdint>
#include <string>

namespace chatai::engine {
namespace {

using enum ggml_type;

// Sorted by type number so lookups can bisect.
constexpr std::array type_table{
    ggml_type_info{f32, "f32", 1, 4, false, true},
    ggml_type_info{f16, "f16", 1, 2, false, true},
    ggml_type_info{q4_0, "q4_0", 32, 18, true, true},
    ggml_type_info{q4_1, "q4_1", 32, 20, true, true},
    ggml_type_info{q5_0, "q5_0", 32, 22, true, true},
    ggml_type_info{q5_1, "q5_1", 32, 24, true, true},
    ggml_type_info{q8_0, "q8_0", 32, 34, true, true},
    ggml_type_info{q8_1, "q8_1", 32, 36, true, false},
    ggml_type_info{q2_k, "q2_K", 256, 84, true, true},
    ggml_type_info{q3_k, "q3_K", 256, 110, true, true},
    ggml_type_info{q4_k, "q4_K", 256, 144, true, true},
    ggml_type_info{q5_k, "q5_K", 256, 176, true, true},
    ggml_type_info{q6_k, "q6_K", 256, 210, true, true},
    ggml_type_info{q8_k, "q8_K", 256, 292, true, false},
    ggml_type_info{iq2_xxs, "iq2_xxs", 256, 66, true, false},
    ggml_type_info{iq2_xs, "iq2_xs", 256, 74, true, false},
    ggml_type_info{iq3_xxs, "iq3_xxs", 256, 98, true, false},
    ggml_type_info{iq1_s, "iq1_s", 256, 50, true, false},
    ggml_type_info{iq4_nl, "iq4_nl", 32, 18, true, false},
    ggml_type_info{iq3_s, "iq3_s", 256, 110, true, false},
    ggml_type_info{iq2_s, "iq2_s", 256, 82, true, false},
    ggml_type_info{iq4_xs, "iq4_xs", 256, 136, true, false},
    ggml_type_info{i8, "i8", 1, 1, false, false},
    ggml_type_info{i16, "i16", 1, 2, false, false},
    ggml_type_info{i32, "i32", 1, 4, false, false},
    ggml_type_info{i64, "i64", 1, 8, false, false},
    ggml_type_info{f64, "f64", 1, 8, false, false},
    ggml_type_info{iq1_m, "iq1_m", 256, 56, true, false},
    ggml_type_info{bf16, "bf16", 1, 2, false, true},
    ggml_type_info{tq1_0, "tq1_0", 256, 54, true, false},
    ggml_type_info{tq2_0, "tq2_0", 256, 66, true, false},
    ggml_type_info{mxfp4, "mxfp4", 32, 17, true, false},
};

static_assert(std::ranges::is_sorted(type_table, {}, [](const ggml_type_info& t) { return t.type; }));

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return std::ranges::equal(a, b, [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

}  // namespace

const ggml_type_info* find_type_info(std::uint32_t type) noexcept {
  auto it = std::ranges::lower_bound(type_table, type, {},
                                     [](const ggml_type_info& t) { return static_cast<std::uint32_t>(t.type); });
  if (it == type_table.end() || static_cast<std::uint32_t>(it->type) != type) return nullptr;
  return &*it;
}

const ggml_type_info& type_info(ggml_type type) noexcept {
  const ggml_type_info* info = find_type_info(static_cast<std::uint32_t>(type));
  assert(info != nullptr);
  return *info;
}

std::span<const ggml_type_info> all_type_infos() noexcept { return type_table; }

std::optional<ggml_type> parse_ggml_type(std::string_view name) noexcept {
  for (const auto& info : type_table) {
    if (equal_ignoring_case(info.name, name)) return info.type;
  }
  return std::nullopt;
}

std::string_view to_string(ggml_type type) noexcept {
  const ggml_type_info* info = find_type_info(static_cast<std::uint32_t>(type));
  return info != nullptr ? info->name : "unknown";
}

result<std::uint64_t> tensor_byte_size(ggml_type type, std::span<const std::int64_t> shape) {
  const ggml_type_info* info = find_type_info(static_cast<std::uint32_t>(type));
  if (info == nullptr) {
    return error(errc::invalid_argument, "unknown tensor type " + std::to_string(static_cast<std::uint32_t>(type)));
  }
  std::uint64_t elements = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] <= 0) {
      return error(errc::invalid_argument,
                   "dimension " + std::to_string(d) + " is " + std::to_string(shape[d]) + ", not positive");
    }
    if (__builtin_mul_overflow(elements, static_cast<std::uint64_t>(shape[d]), &elements) ||
        elements > static_cast<std::uint64_t>(INT64_MAX)) {
      return error(errc::out_of_range, "the element count overflows 64 bits");
    }
  }
  if (!shape.empty() && shape[0] % info->block_size != 0) {
    return error(errc::invalid_argument, "dimension 0 (" + std::to_string(shape[0]) +
                                             ") is not a multiple of the block size " +
                                             std::to_string(info->block_size) + " of " + std::string(info->name));
  }
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(elements / static_cast<std::uint64_t>(info->block_size), info->type_size, &bytes)) {
    return error(errc::out_of_range, "the byte size overflows 64 bits");
  }
  return bytes;
}

}  // namespace chatai::engine
