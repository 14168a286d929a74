// The GGUF writer: encodes metadata as it is added, lays out tensor data when written.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <set>

#include "chatai/engine/gguf.hpp"

namespace chatai::engine {

namespace {

constexpr std::uint32_t gguf_version = 3;
constexpr std::string_view alignment_key = "general.alignment";

void put_bytes(std::vector<std::byte>& out, const void* data, std::size_t size) {
  const auto* p = static_cast<const std::byte*>(data);
  out.insert(out.end(), p, p + size);
}

template <class T>
void put(std::vector<std::byte>& out, T value) {
  put_bytes(out, &value, sizeof value);
}

void put_string(std::vector<std::byte>& out, std::string_view text) {
  put<std::uint64_t>(out, text.size());
  put_bytes(out, text.data(), text.size());
}

template <class T>
constexpr gguf_value_type value_type_of() {
  if constexpr (std::is_same_v<T, std::uint8_t>) return gguf_value_type::uint8;
  if constexpr (std::is_same_v<T, std::int8_t>) return gguf_value_type::int8;
  if constexpr (std::is_same_v<T, std::uint16_t>) return gguf_value_type::uint16;
  if constexpr (std::is_same_v<T, std::int16_t>) return gguf_value_type::int16;
  if constexpr (std::is_same_v<T, std::uint32_t>) return gguf_value_type::uint32;
  if constexpr (std::is_same_v<T, std::int32_t>) return gguf_value_type::int32;
  if constexpr (std::is_same_v<T, std::uint64_t>) return gguf_value_type::uint64;
  if constexpr (std::is_same_v<T, std::int64_t>) return gguf_value_type::int64;
  if constexpr (std::is_same_v<T, float>) return gguf_value_type::float32;
  if constexpr (std::is_same_v<T, double>) return gguf_value_type::float64;
  if constexpr (std::is_same_v<T, bool>) return gguf_value_type::boolean;
}

std::uint64_t align_up(std::uint64_t n, std::uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

struct gguf_writer::impl {
  struct kv {
    std::string key;
    std::vector<std::byte> encoded;  // the value's type and bytes, as the file holds them
  };
  struct tensor {
    std::string name;
    ggml_type type;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> data;  // empty when `fill` produces the bytes
    tensor_filler fill;
    std::uint64_t size = 0;       // bytes
  };

  std::vector<kv> metadata;
  std::set<std::string, std::less<>> keys;
  std::vector<tensor> tensors;
  std::set<std::string, std::less<>> tensor_names;
  std::uint32_t alignment = gguf_default_alignment;

  status add(std::string_view key, std::vector<std::byte> encoded) {
    if (key.empty()) return error(errc::invalid_argument, "empty metadata key");
    // The alignment key decides the file's layout, so only set_alignment() may write it.
    if (key == alignment_key) return error(errc::invalid_argument, "set general.alignment with set_alignment()");
    if (keys.contains(key)) return error(errc::invalid_argument, "duplicate metadata key '" + std::string(key) + "'");
    keys.emplace(key);
    metadata.push_back({std::string(key), std::move(encoded)});
    return {};
  }

  template <class T>
  status add_scalar(std::string_view key, T value) {
    std::vector<std::byte> encoded;
    put(encoded, value_type_of<T>());
    if constexpr (std::is_same_v<T, bool>) {
      put<std::uint8_t>(encoded, value ? 1 : 0);
    } else {
      put(encoded, value);
    }
    return add(key, std::move(encoded));
  }

  template <class T>
  status add_numeric_array(std::string_view key, std::span<const T> values) {
    std::vector<std::byte> encoded;
    put(encoded, gguf_value_type::array);
    put(encoded, value_type_of<T>());
    put<std::uint64_t>(encoded, values.size());
    for (T v : values) {
      if constexpr (std::is_same_v<T, bool>) {
        put<std::uint8_t>(encoded, v ? 1 : 0);
      } else {
        put(encoded, v);
      }
    }
    return add(key, std::move(encoded));
  }

  template <class S>
  status add_string_array(std::string_view key, std::span<const S> values) {
    std::vector<std::byte> encoded;
    put(encoded, gguf_value_type::array);
    put(encoded, gguf_value_type::string);
    put<std::uint64_t>(encoded, values.size());
    for (const S& v : values) put_string(encoded, v);
    return add(key, std::move(encoded));
  }

  // Produces the file in pieces; `sink(data, size)` returns false to stop. The result is
  // false when the sink stopped, or the error of a tensor_filler.
  template <class Sink>
  result<bool> emit(Sink&& sink) const {
    std::vector<std::byte> head;
    put_bytes(head, "GGUF", 4);
    put(head, gguf_version);
    put<std::uint64_t>(head, tensors.size());
    put<std::uint64_t>(head, metadata.size());
    for (const auto& entry : metadata) {
      put_string(head, entry.key);
      put_bytes(head, entry.encoded.data(), entry.encoded.size());
    }
    std::vector<std::uint64_t> offsets;
    std::uint64_t offset = 0;
    for (const auto& t : tensors) {
      offsets.push_back(offset);
      put_string(head, t.name);
      put<std::uint32_t>(head, static_cast<std::uint32_t>(t.shape.size()));
      for (std::int64_t d : t.shape) put(head, d);
      put(head, t.type);
      put(head, offset);
      offset = align_up(offset + t.size, alignment);
    }
    head.resize(align_up(head.size(), alignment));
    if (!sink(head.data(), head.size())) return false;

    const std::vector<std::byte> padding(alignment);
    std::uint64_t written = 0;
    std::vector<std::byte> rows;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const tensor& t = tensors[i];
      if (!sink(padding.data(), offsets[i] - written)) return false;
      if (t.fill) {
        std::uint64_t n_rows = 1;
        for (std::size_t d = 1; d < t.shape.size(); ++d) n_rows *= static_cast<std::uint64_t>(t.shape[d]);
        const std::uint64_t row_bytes = t.size / n_rows;
        const std::uint64_t chunk = std::max<std::uint64_t>(1, (16u << 20) / row_bytes);
        for (std::uint64_t r = 0; r < n_rows; r += chunk) {
          const std::uint64_t n = std::min(chunk, n_rows - r);
          rows.resize(static_cast<std::size_t>(n * row_bytes));
          if (auto st = t.fill(static_cast<std::int64_t>(r), rows); !st) {
            return std::move(st).err().with_context("tensor '" + t.name + "'");
          }
          if (!sink(rows.data(), rows.size())) return false;
        }
      } else if (!sink(t.data.data(), t.data.size())) {
        return false;
      }
      written = offsets[i] + t.size;
    }
    return true;
  }

  status check_tensor(std::string_view name, ggml_type type, std::span<const std::int64_t> shape, std::uint64_t& size) const {
    const std::string label = "tensor '" + std::string(name) + "'";
    if (name.empty()) return error(errc::invalid_argument, "empty tensor name");
    if (tensor_names.contains(name)) return error(errc::invalid_argument, "duplicate " + label);
    if (shape.empty() || shape.size() > 4) {
      return error(errc::invalid_argument, label + " has " + std::to_string(shape.size()) + " dimensions (1 to 4 are allowed)");
    }
    auto bytes = tensor_byte_size(type, shape);
    if (!bytes) return error(errc::invalid_argument, label + ": " + bytes.err().message());
    size = *bytes;
    return {};
  }
};

gguf_writer::gguf_writer() : impl_(std::make_unique<impl>()) {}
gguf_writer::gguf_writer(gguf_writer&&) noexcept = default;
gguf_writer& gguf_writer::operator=(gguf_writer&&) noexcept = default;
gguf_writer::~gguf_writer() = default;

status gguf_writer::add_uint8(std::string_view key, std::uint8_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_int8(std::string_view key, std::int8_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_uint16(std::string_view key, std::uint16_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_int16(std::string_view key, std::int16_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_uint32(std::string_view key, std::uint32_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_int32(std::string_view key, std::int32_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_uint64(std::string_view key, std::uint64_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_int64(std::string_view key, std::int64_t value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_float32(std::string_view key, float value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_float64(std::string_view key, double value) { return impl_->add_scalar(key, value); }
status gguf_writer::add_bool(std::string_view key, bool value) { return impl_->add_scalar(key, value); }

status gguf_writer::add_string(std::string_view key, std::string_view value) {
  std::vector<std::byte> encoded;
  put(encoded, gguf_value_type::string);
  put_string(encoded, value);
  return impl_->add(key, std::move(encoded));
}

status gguf_writer::add_array(std::string_view key, std::span<const std::uint8_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::int8_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::uint16_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::int16_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::uint32_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::int32_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::uint64_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::int64_t> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const float> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const double> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const bool> values) { return impl_->add_numeric_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::string> values) { return impl_->add_string_array(key, values); }
status gguf_writer::add_array(std::string_view key, std::span<const std::string_view> values) { return impl_->add_string_array(key, values); }

status gguf_writer::set_alignment(std::uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return error(errc::invalid_argument, "alignment " + std::to_string(alignment) + " is not a power of two");
  }
  std::vector<std::byte> encoded;
  put(encoded, gguf_value_type::uint32);
  put(encoded, alignment);
  impl_->alignment = alignment;
  for (auto& entry : impl_->metadata) {
    if (entry.key == alignment_key) {
      entry.encoded = std::move(encoded);
      return {};
    }
  }
  impl_->keys.emplace(alignment_key);
  impl_->metadata.push_back({std::string(alignment_key), std::move(encoded)});
  return {};
}

status gguf_writer::add_tensor(std::string_view name, ggml_type type, std::span<const std::int64_t> shape,
                               std::span<const std::byte> data) {
  std::uint64_t size = 0;
  CHATAI_RETURN_IF_ERROR(impl_->check_tensor(name, type, shape, size));
  if (size != data.size()) {
    return error(errc::invalid_argument, "tensor '" + std::string(name) + "' needs " + std::to_string(size) +
                                             " bytes of data, got " + std::to_string(data.size()));
  }
  impl_->tensor_names.emplace(name);
  impl_->tensors.push_back({std::string(name), type, {shape.begin(), shape.end()}, {data.begin(), data.end()}, {}, size});
  return {};
}

status gguf_writer::add_tensor(std::string_view name, ggml_type type, std::span<const std::int64_t> shape,
                               tensor_filler fill) {
  std::uint64_t size = 0;
  CHATAI_RETURN_IF_ERROR(impl_->check_tensor(name, type, shape, size));
  if (!fill) return error(errc::invalid_argument, "tensor '" + std::string(name) + "' has no filler");
  impl_->tensor_names.emplace(name);
  impl_->tensors.push_back({std::string(name), type, {shape.begin(), shape.end()}, {}, std::move(fill), size});
  return {};
}

std::vector<std::byte> gguf_writer::to_bytes() const {
  std::vector<std::byte> out;
  const auto done = impl_->emit([&out](const void* data, std::size_t size) {
    put_bytes(out, data, size);
    return true;
  });
  if (!done) return {};
  return out;
}

status gguf_writer::write(const std::filesystem::path& path) const {
  std::string temp = path.string() + ".tmp-XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) return error(errc::io_error, path.string() + ": cannot create a temporary file: " + std::strerror(errno));

  int failure = 0;
  const auto emitted = impl_->emit([fd, &failure](const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        failure = errno;
        return false;
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  });
  if (!emitted) {
    ::close(fd);
    ::unlink(temp.c_str());
    return std::move(emitted).err().with_context(path.string());
  }
  const bool written = *emitted;
  const char* step = "cannot write";
  if (written) {
    if (::fchmod(fd, 0644) != 0) {
      failure = errno;
      step = "cannot set permissions";
    } else if (::fsync(fd) != 0) {
      failure = errno;
      step = "cannot flush";
    }
  }
  if (::close(fd) != 0 && failure == 0) {
    failure = errno;
    step = "cannot close";
  }
  if (failure == 0 && ::rename(temp.c_str(), path.c_str()) != 0) {
    failure = errno;
    step = "cannot rename the temporary file";
  }
  if (failure != 0) {
    ::unlink(temp.c_str());
    return error(errc::io_error, path.string() + ": " + step + ": " + std::strerror(failure));
  }
  // Make the rename itself durable; a directory that cannot be flushed leaves the file intact.
  const std::filesystem::path parent = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  if (const int dir = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return {};
}

}  // namespace chatai::engine
