// Model conversion: metadata copied entry by entry, matrices re-encoded row by row.
#include "chatai/engine/quantize.hpp"

#include <memory>
#include <string>
#include <vector>

#include "cpu/quant_reference.hpp"

namespace chatai::engine {
namespace {

template <class T, class Get>
status add_numbers(gguf_writer& w, std::string_view key, const gguf_value& v, Get get) {
  std::vector<T> values(v.size());
  for (std::uint64_t i = 0; i < v.size(); ++i) values[i] = static_cast<T>(get(i));
  return w.add_array(key, std::span<const T>(values));
}

}  // namespace

status copy_metadata_value(gguf_writer& w, std::string_view key, const gguf_value& v) {
  const auto u = [&v](std::uint64_t i) { return v.uint_at(i); };
  const auto s = [&v](std::uint64_t i) { return v.int_at(i); };
  const auto f = [&v](std::uint64_t i) { return v.float_at(i); };
  if (!v.is_array()) {
    switch (v.type()) {
      case gguf_value_type::uint8: return w.add_uint8(key, static_cast<std::uint8_t>(v.uint_at(0)));
      case gguf_value_type::int8: return w.add_int8(key, static_cast<std::int8_t>(v.int_at(0)));
      case gguf_value_type::uint16: return w.add_uint16(key, static_cast<std::uint16_t>(v.uint_at(0)));
      case gguf_value_type::int16: return w.add_int16(key, static_cast<std::int16_t>(v.int_at(0)));
      case gguf_value_type::uint32: return w.add_uint32(key, static_cast<std::uint32_t>(v.uint_at(0)));
      case gguf_value_type::int32: return w.add_int32(key, static_cast<std::int32_t>(v.int_at(0)));
      case gguf_value_type::uint64: return w.add_uint64(key, v.uint_at(0));
      case gguf_value_type::int64: return w.add_int64(key, v.int_at(0));
      case gguf_value_type::float32: return w.add_float32(key, static_cast<float>(v.float_at(0)));
      case gguf_value_type::float64: return w.add_float64(key, v.float_at(0));
      case gguf_value_type::boolean: return w.add_bool(key, v.bool_at(0));
      case gguf_value_type::string: return w.add_string(key, v.string_at(0));
      case gguf_value_type::array: break;
    }
    return error(errc::internal, "metadata " + std::string(key) + ": unexpected value type");
  }
  switch (v.element_type()) {
    case gguf_value_type::uint8: return add_numbers<std::uint8_t>(w, key, v, u);
    case gguf_value_type::int8: return add_numbers<std::int8_t>(w, key, v, s);
    case gguf_value_type::uint16: return add_numbers<std::uint16_t>(w, key, v, u);
    case gguf_value_type::int16: return add_numbers<std::int16_t>(w, key, v, s);
    case gguf_value_type::uint32: return add_numbers<std::uint32_t>(w, key, v, u);
    case gguf_value_type::int32: return add_numbers<std::int32_t>(w, key, v, s);
    case gguf_value_type::uint64: return add_numbers<std::uint64_t>(w, key, v, u);
    case gguf_value_type::int64: return add_numbers<std::int64_t>(w, key, v, s);
    case gguf_value_type::float32: return add_numbers<float>(w, key, v, f);
    case gguf_value_type::float64: return add_numbers<double>(w, key, v, f);
    case gguf_value_type::boolean: {
      const auto n = static_cast<std::size_t>(v.size());
      std::unique_ptr<bool[]> values(new bool[n]);
      for (std::size_t i = 0; i < n; ++i) values[i] = v.bool_at(i);
      return w.add_array(key, std::span<const bool>(values.get(), n));
    }
    case gguf_value_type::string: return w.add_array(key, v.strings());
    case gguf_value_type::array: break;
  }
  return error(errc::unsupported, "metadata " + std::string(key) + ": nested arrays are not supported");
}

status quantize_model(const gguf_file& in, const std::filesystem::path& out, const quantize_options& options) {
  for (ggml_type t : {options.type, options.fallback}) {
    if (!cpu::is_weight_type_supported(t)) {
      return error(errc::unsupported, "cannot quantize to " + std::string(to_string(t)));
    }
  }
  gguf_writer w;
  CHATAI_RETURN_IF_ERROR(w.set_alignment(in.alignment()));
  for (const gguf_kv& kv : in.metadata()) {
    if (kv.key == "general.alignment" || kv.key == "general.file_type") continue;
    CHATAI_RETURN_IF_ERROR(copy_metadata_value(w, kv.key, kv.value));
  }
  std::vector<float> row;
  std::vector<std::byte> encoded;
  for (const gguf_tensor& t : in.tensors()) {
    const std::string name(t.name);
    if (t.shape.size() != 2) {
      CHATAI_RETURN_IF_ERROR(w.add_tensor(t.name, t.type, t.shape, std::span(t.data, t.size)));
      continue;
    }
    if (!cpu::is_weight_type_supported(t.type)) {
      return error(errc::unsupported, "tensor " + name + " has type " + std::string(to_string(t.type)) +
                                          ", which cannot be converted");
    }
    const std::int64_t cols = t.shape[0], rows = t.shape[1];
    const ggml_type target = cols % type_info(options.type).block_size == 0 ? options.type : options.fallback;
    const auto& target_info = type_info(target);
    if (cols % target_info.block_size != 0) {
      return error(errc::unsupported, "tensor " + name + ": rows of " + std::to_string(cols) +
                                          " elements fit neither the type nor the fallback");
    }
    const auto& source_info = type_info(t.type);
    const std::size_t in_row = static_cast<std::size_t>(cols / source_info.block_size) * source_info.type_size;
    const std::size_t out_row = static_cast<std::size_t>(cols / target_info.block_size) * target_info.type_size;
    row.resize(static_cast<std::size_t>(cols));
    encoded.resize(out_row * static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
      cpu::dequantize_row(t.type, t.data + static_cast<std::size_t>(r) * in_row, row.data(), cols);
      cpu::quantize_row(target, row.data(), encoded.data() + static_cast<std::size_t>(r) * out_row, cols);
    }
    CHATAI_RETURN_IF_ERROR(w.add_tensor(t.name, target, t.shape, encoded));
  }
  return w.write(out);
}

}  // namespace chatai::engine
