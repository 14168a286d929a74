// GGUF model files: a validating reader over a read-only memory mapping, and a writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine {

// Metadata value types; the numbers are GGUF's.
enum class gguf_value_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

// GGUF's name of a value type ("uint32", "string", "bool", ...).
std::string_view to_string(gguf_value_type type) noexcept;

// The alignment of tensor data when a file has no general.alignment key.
inline constexpr std::uint32_t gguf_default_alignment = 32;

// One metadata value as the file stores it: a scalar, a string, or an array whose elements
// all have one type. A scalar reads as an array of one element, so element accessors serve
// both. Strings point into the file's bytes.
// Thread safety: immutable; safe from any thread while its gguf_file lives.
class gguf_value {
 public:
  gguf_value_type type() const noexcept { return type_; }
  // The elements' type: for an array the type of its elements, otherwise type().
  gguf_value_type element_type() const noexcept { return element_type_; }
  bool is_array() const noexcept { return type_ == gguf_value_type::array; }
  // Number of elements: the array's length, 1 for a scalar.
  std::uint64_t size() const noexcept { return count_; }

  // Element `i` (i < size()), converted from the element type. Asking an element for a kind
  // it does not hold (a string as a number, a number as a string) is a programming error.
  std::uint64_t uint_at(std::uint64_t i) const;   // unsigned element types, bool
  std::int64_t int_at(std::uint64_t i) const;     // integer element types, bool (uint64 wraps)
  double float_at(std::uint64_t i) const;         // any numeric element type, bool
  bool bool_at(std::uint64_t i) const;            // bool elements
  std::string_view string_at(std::uint64_t i) const;  // string elements
  // All string elements at once (empty unless element_type() is string).
  std::span<const std::string_view> strings() const noexcept { return strings_; }

  // Whether the element type is an integer type (not bool) or a floating-point type.
  bool holds_integers() const noexcept;
  bool holds_floats() const noexcept;

 private:
  friend class gguf_parser;
  gguf_value_type type_ = gguf_value_type::uint8;
  gguf_value_type element_type_ = gguf_value_type::uint8;
  std::uint64_t count_ = 0;
  const std::byte* data_ = nullptr;  // numeric elements, packed little-endian, unaligned
  std::vector<std::string_view> strings_;
};

// A metadata entry: its key, value and where it begins in the file.
struct gguf_kv {
  std::string_view key;
  gguf_value value;
  std::uint64_t offset = 0;
};

// A tensor's description and its bytes in the file.
struct gguf_tensor {
  std::string_view name;
  ggml_type type = ggml_type::f32;
  std::vector<std::int64_t> shape;  // dimension 0 first: it varies fastest (ggml's ne[])
  std::uint64_t offset = 0;         // from the start of the data section
  std::uint64_t size = 0;           // bytes
  const std::byte* data = nullptr;  // offset bytes after the data section's start

  std::int64_t element_count() const noexcept;
};

// A parsed GGUF file (version 2 or 3). Every offset, size, type and count was validated
// while parsing, so tensor data pointers address bytes inside the file. Opened files are
// memory-mapped read-only; tensor data is never copied.
// Thread safety: immutable after open/parse; const members are safe from any thread.
class gguf_file {
 public:
  // Maps and parses a file. Errors: not_found / io_error (with the path), parse_error for
  // malformed contents, unsupported for versions other than 2 and 3 or nested arrays. Every
  // content error message begins with "offset N: ", the byte where the problem lies.
  static result<gguf_file> open(const std::filesystem::path& path);
  // Parses bytes that the caller keeps alive and unchanged for the life of the result.
  static result<gguf_file> parse(std::span<const std::byte> bytes);
  // A temporary buffer would dangle: keep the bytes in a named object.
  static result<gguf_file> parse(std::vector<std::byte>&&) = delete;

  gguf_file(gguf_file&&) noexcept;
  gguf_file& operator=(gguf_file&&) noexcept;
  ~gguf_file();

  std::uint32_t version() const noexcept;
  std::uint32_t alignment() const noexcept;
  std::uint64_t data_offset() const noexcept;  // where the data section begins
  std::span<const std::byte> bytes() const noexcept;  // the whole file

  // Metadata in file order.
  std::span<const gguf_kv> metadata() const noexcept;
  std::vector<std::string_view> keys() const;
  bool has(std::string_view key) const noexcept;
  // The value of `key`, or nullptr when absent.
  const gguf_value* find(std::string_view key) const noexcept;

  // Typed accessors. Errors: not_found when the key is absent, invalid_argument when the
  // stored type does not convert (a string read as a number, a negative value read as
  // unsigned, a value out of range of the result type).
  result<std::string_view> get_string(std::string_view key) const;
  result<std::uint64_t> get_uint(std::string_view key) const;   // any integer type, value >= 0
  result<std::int64_t> get_int(std::string_view key) const;     // any integer type, value in range
  result<double> get_float(std::string_view key) const;         // float32 or float64
  result<bool> get_bool(std::string_view key) const;
  result<std::span<const std::string_view>> get_string_array(std::string_view key) const;
  result<std::vector<std::int32_t>> get_int32_array(std::string_view key) const;  // any integer elements in range
  result<std::vector<float>> get_float32_array(std::string_view key) const;       // float32 or float64 elements

  // general.architecture ("llama", ...).
  result<std::string_view> architecture() const { return get_string("general.architecture"); }

  // Tensors in file order.
  std::span<const gguf_tensor> tensors() const noexcept;
  // The tensor named `name`, or nullptr.
  const gguf_tensor* find_tensor(std::string_view name) const noexcept;

 private:
  friend class gguf_parser;
  struct impl;
  explicit gguf_file(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

// Builds a GGUF version 3 file: metadata in the order added, then tensor infos and data.
// Thread safety: not thread-safe; use one writer per thread.
class gguf_writer {
 public:
  gguf_writer();
  gguf_writer(gguf_writer&&) noexcept;
  gguf_writer& operator=(gguf_writer&&) noexcept;
  ~gguf_writer();

  // Adding a key that already exists is invalid_argument, as is an empty key.
  status add_uint8(std::string_view key, std::uint8_t value);
  status add_int8(std::string_view key, std::int8_t value);
  status add_uint16(std::string_view key, std::uint16_t value);
  status add_int16(std::string_view key, std::int16_t value);
  status add_uint32(std::string_view key, std::uint32_t value);
  status add_int32(std::string_view key, std::int32_t value);
  status add_uint64(std::string_view key, std::uint64_t value);
  status add_int64(std::string_view key, std::int64_t value);
  status add_float32(std::string_view key, float value);
  status add_float64(std::string_view key, double value);
  status add_bool(std::string_view key, bool value);
  status add_string(std::string_view key, std::string_view value);

  status add_array(std::string_view key, std::span<const std::uint8_t> values);
  status add_array(std::string_view key, std::span<const std::int8_t> values);
  status add_array(std::string_view key, std::span<const std::uint16_t> values);
  status add_array(std::string_view key, std::span<const std::int16_t> values);
  status add_array(std::string_view key, std::span<const std::uint32_t> values);
  status add_array(std::string_view key, std::span<const std::int32_t> values);
  status add_array(std::string_view key, std::span<const std::uint64_t> values);
  status add_array(std::string_view key, std::span<const std::int64_t> values);
  status add_array(std::string_view key, std::span<const float> values);
  status add_array(std::string_view key, std::span<const double> values);
  status add_array(std::string_view key, std::span<const bool> values);
  status add_array(std::string_view key, std::span<const std::string> values);
  status add_array(std::string_view key, std::span<const std::string_view> values);

  // Sets the alignment of tensor data (a power of two) and records it as general.alignment.
  status set_alignment(std::uint32_t alignment);

  // Adds a tensor; its bytes are copied. Errors (invalid_argument): a duplicate or empty
  // name, more than 4 dimensions, a shape tensor_byte_size rejects, or `data` not exactly
  // that many bytes.
  status add_tensor(std::string_view name, ggml_type type, std::span<const std::int64_t> shape,
                    std::span<const std::byte> data);

  // Produces rows [first_row, first_row + n) of a tensor into `rows` (n whole rows of
  // shape[0] elements); called in order while the file is written, a few MiB at a time.
  using tensor_filler = std::function<status(std::int64_t first_row, std::span<std::byte> rows)>;
  // Adds a tensor whose bytes are produced when the file is written, so that files larger
  // than memory can be written. Errors: those of add_tensor except the data size; an error
  // of `fill` fails the write or to_bytes().
  status add_tensor(std::string_view name, ggml_type type, std::span<const std::int64_t> shape, tensor_filler fill);

  // The whole file in memory; empty when a tensor_filler fails.
  std::vector<std::byte> to_bytes() const;
  // Writes the file atomically: to a temporary file in the same directory, flushed to disk,
  // then renamed over `path`. On failure `path` is unchanged and no temporary file remains.
  status write(const std::filesystem::path& path) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::engine
