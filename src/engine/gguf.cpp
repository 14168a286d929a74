// The GGUF reader: maps a file read-only and validates every byte it will later hand out.
#include "chatai/engine/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace chatai::engine {

namespace {

constexpr std::uint32_t gguf_magic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr std::uint32_t max_dimensions = 4;
// The smallest encodings, used to reject counts the remaining bytes cannot hold before
// anything is allocated for them.
constexpr std::uint64_t min_kv_bytes = 8 + 4 + 1;           // key length, type, 1-byte value
constexpr std::uint64_t min_tensor_info_bytes = 8 + 4 + 8 + 4 + 8;  // name length, dims, one dim, type, offset

// Bytes per element of a fixed-size value type; 0 for string and array.
std::uint64_t fixed_size(gguf_value_type type) noexcept {
  switch (type) {
    case gguf_value_type::uint8:
    case gguf_value_type::int8:
    case gguf_value_type::boolean: return 1;
    case gguf_value_type::uint16:
    case gguf_value_type::int16: return 2;
    case gguf_value_type::uint32:
    case gguf_value_type::int32:
    case gguf_value_type::float32: return 4;
    case gguf_value_type::uint64:
    case gguf_value_type::int64:
    case gguf_value_type::float64: return 8;
    case gguf_value_type::string:
    case gguf_value_type::array: return 0;
  }
  return 0;
}

bool is_known_value_type(std::uint32_t type) noexcept { return type <= static_cast<std::uint32_t>(gguf_value_type::float64); }

bool is_unsigned(gguf_value_type t) noexcept {
  return t == gguf_value_type::uint8 || t == gguf_value_type::uint16 || t == gguf_value_type::uint32 ||
         t == gguf_value_type::uint64;
}

bool is_signed(gguf_value_type t) noexcept {
  return t == gguf_value_type::int8 || t == gguf_value_type::int16 || t == gguf_value_type::int32 ||
         t == gguf_value_type::int64;
}

bool is_float(gguf_value_type t) noexcept { return t == gguf_value_type::float32 || t == gguf_value_type::float64; }

template <class T>
T load(const std::byte* p) noexcept {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// Closes a file descriptor on every path out of open().
class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { ::close(fd_); }

 private:
  int fd_;
};

error os_error(const std::filesystem::path& path, std::string_view what, int err) {
  errc code = errc::io_error;
  if (err == ENOENT || err == ENOTDIR) code = errc::not_found;
  if (err == EACCES || err == EPERM) code = errc::permission_denied;
  return error(code, path.string() + ": " + std::string(what) + ": " + std::strerror(err));
}

std::string quote(std::string_view text) {
  std::string out = "'";
  for (char c : text.substr(0, 200)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  if (text.size() > 200) out += "...";
  return out + "'";
}

}  // namespace

std::string_view to_string(gguf_value_type type) noexcept {
  switch (type) {
    case gguf_value_type::uint8: return "uint8";
    case gguf_value_type::int8: return "int8";
    case gguf_value_type::uint16: return "uint16";
    case gguf_value_type::int16: return "int16";
    case gguf_value_type::uint32: return "uint32";
    case gguf_value_type::int32: return "int32";
    case gguf_value_type::float32: return "float32";
    case gguf_value_type::boolean: return "bool";
    case gguf_value_type::string: return "string";
    case gguf_value_type::array: return "array";
    case gguf_value_type::uint64: return "uint64";
    case gguf_value_type::int64: return "int64";
    case gguf_value_type::float64: return "float64";
  }
  return "unknown";
}

// ---- gguf_value -------------------------------------------------------------------------

bool gguf_value::holds_integers() const noexcept { return is_unsigned(element_type_) || is_signed(element_type_); }

bool gguf_value::holds_floats() const noexcept { return is_float(element_type_); }

std::uint64_t gguf_value::uint_at(std::uint64_t i) const {
  assert(i < count_);
  const std::byte* p = data_ + i * fixed_size(element_type_);
  switch (element_type_) {
    case gguf_value_type::uint8:
    case gguf_value_type::boolean: return load<std::uint8_t>(p);
    case gguf_value_type::uint16: return load<std::uint16_t>(p);
    case gguf_value_type::uint32: return load<std::uint32_t>(p);
    case gguf_value_type::uint64: return load<std::uint64_t>(p);
    default: assert(false && "uint_at on a value that is not unsigned"); return 0;
  }
}

std::int64_t gguf_value::int_at(std::uint64_t i) const {
  assert(i < count_);
  const std::byte* p = data_ + i * fixed_size(element_type_);
  switch (element_type_) {
    case gguf_value_type::int8: return load<std::int8_t>(p);
    case gguf_value_type::int16: return load<std::int16_t>(p);
    case gguf_value_type::int32: return load<std::int32_t>(p);
    case gguf_value_type::int64: return load<std::int64_t>(p);
    default: return static_cast<std::int64_t>(uint_at(i));
  }
}

double gguf_value::float_at(std::uint64_t i) const {
  assert(i < count_);
  const std::byte* p = data_ + i * fixed_size(element_type_);
  switch (element_type_) {
    case gguf_value_type::float32: return load<float>(p);
    case gguf_value_type::float64: return load<double>(p);
    case gguf_value_type::uint64: return static_cast<double>(load<std::uint64_t>(p));
    default: return static_cast<double>(int_at(i));
  }
}

bool gguf_value::bool_at(std::uint64_t i) const {
  assert(i < count_ && element_type_ == gguf_value_type::boolean);
  return load<std::uint8_t>(data_ + i) != 0;
}

std::string_view gguf_value::string_at(std::uint64_t i) const {
  assert(i < strings_.size());
  return strings_[i];
}

std::int64_t gguf_tensor::element_count() const noexcept {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

// ---- gguf_file ----------------------------------------------------------------------------

struct gguf_file::impl {
  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() {
    if (mapping != nullptr) ::munmap(mapping, mapping_size);
  }

  void* mapping = nullptr;  // owned when open() mapped the file
  std::size_t mapping_size = 0;
  std::span<const std::byte> bytes;
  std::uint32_t version = 0;
  std::uint32_t alignment = gguf_default_alignment;
  std::uint64_t data_offset = 0;
  std::vector<gguf_kv> metadata;
  std::unordered_map<std::string_view, std::size_t> metadata_index;
  std::vector<gguf_tensor> tensors;
  std::unordered_map<std::string_view, std::size_t> tensor_index;
};

// Reads the file front to back. Every read is bounds-checked first; every count is checked
// against the bytes left before memory is reserved for it.
class gguf_parser {
 public:
  gguf_parser(std::span<const std::byte> bytes, gguf_file::impl& out) : bytes_(bytes), out_(out) {}

  status run() {
    CHATAI_RETURN_IF_ERROR(read_header());
    for (std::uint64_t i = 0; i < kv_count_; ++i) CHATAI_RETURN_IF_ERROR(read_kv());
    for (std::uint64_t i = 0; i < tensor_count_; ++i) CHATAI_RETURN_IF_ERROR(read_tensor_info());
    return check_data_section();
  }

 private:
  error fail(std::uint64_t offset, std::string_view what, errc code = errc::parse_error) const {
    return error(code, "offset " + std::to_string(offset) + ": " + std::string(what));
  }

  std::uint64_t remaining() const noexcept { return bytes_.size() - pos_; }

  status need(std::uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return fail(pos_, std::string(what) + " needs " + std::to_string(n) + " bytes but the file ends after " +
                            std::to_string(remaining()));
    }
    return {};
  }

  template <class T>
  result<T> read(std::string_view what) {
    CHATAI_RETURN_IF_ERROR(need(sizeof(T), what));
    T value = load<T>(bytes_.data() + pos_);
    pos_ += sizeof(T);
    return value;
  }

  result<std::string_view> read_string(std::string_view what) {
    const std::uint64_t at = pos_;
    auto length = read<std::uint64_t>(std::string(what) + " length");
    if (!length) return std::move(length).err();
    if (*length > remaining()) {
      return fail(at, std::string(what) + " length " + std::to_string(*length) + " exceeds the " +
                          std::to_string(remaining()) + " bytes left in the file");
    }
    std::string_view text(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(*length));
    pos_ += *length;
    return text;
  }

  status read_header() {
    auto magic = read<std::uint32_t>("the GGUF magic");
    if (!magic) return std::move(magic).err();
    if (*magic != gguf_magic) {
      std::string shown;
      for (std::size_t i = 0; i < 4; ++i) {
        auto c = static_cast<unsigned char>(bytes_[i]);
        shown += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
      }
      return fail(0, "bad magic '" + shown + "': not a GGUF file");
    }
    auto version = read<std::uint32_t>("the version");
    if (!version) return std::move(version).err();
    if ((*version & 0xffffu) == 0 && (*version >> 24) >= 2 && (*version >> 24) <= 3) {
      return fail(4, "big-endian GGUF files are not supported", errc::unsupported);
    }
    if (*version != 2 && *version != 3) {
      return fail(4, "GGUF version " + std::to_string(*version) + " is not supported (chatai reads versions 2 and 3)",
                  errc::unsupported);
    }
    out_.version = *version;

    auto tensors = read<std::uint64_t>("the tensor count");
    if (!tensors) return std::move(tensors).err();
    auto kvs = read<std::uint64_t>("the metadata count");
    if (!kvs) return std::move(kvs).err();
    if (*tensors > remaining() / min_tensor_info_bytes) {
      return fail(8, "tensor count " + std::to_string(*tensors) + " is more than the file can hold");
    }
    if (*kvs > remaining() / min_kv_bytes) {
      return fail(16, "metadata count " + std::to_string(*kvs) + " is more than the file can hold");
    }
    tensor_count_ = *tensors;
    kv_count_ = *kvs;
    out_.metadata.reserve(kv_count_);
    out_.tensors.reserve(tensor_count_);
    tensor_info_offsets_.reserve(tensor_count_);
    return {};
  }

  result<gguf_value_type> read_value_type(std::string_view key) {
    const std::uint64_t at = pos_;
    auto type = read<std::uint32_t>("the value type of " + quote(key));
    if (!type) return std::move(type).err();
    if (!is_known_value_type(*type)) {
      return fail(at, "key " + quote(key) + " has unknown value type " + std::to_string(*type));
    }
    return static_cast<gguf_value_type>(*type);
  }

  status read_kv() {
    const std::uint64_t at = pos_;
    auto key = read_string("key");
    if (!key) return std::move(key).err();
    if (key->empty()) return fail(at, "empty metadata key");
    if (out_.metadata_index.contains(*key)) return fail(at, "duplicate key " + quote(*key));

    gguf_kv kv;
    kv.key = *key;
    kv.offset = at;
    auto type = read_value_type(*key);
    if (!type) return std::move(type).err();
    kv.value.type_ = *type;
    kv.value.element_type_ = *type;
    kv.value.count_ = 1;
    if (*type == gguf_value_type::array) {
      const std::uint64_t element_at = pos_;
      auto element = read_value_type(*key);
      if (!element) return std::move(element).err();
      if (*element == gguf_value_type::array) {
        return fail(element_at, "key " + quote(*key) + ": nested arrays are not supported", errc::unsupported);
      }
      kv.value.element_type_ = *element;
      const std::uint64_t count_at = pos_;
      auto count = read<std::uint64_t>("the array length of " + quote(*key));
      if (!count) return std::move(count).err();
      const std::uint64_t min_element = *element == gguf_value_type::string ? 8 : fixed_size(*element);
      if (*count > remaining() / min_element) {
        return fail(count_at, "key " + quote(*key) + ": array length " + std::to_string(*count) + " exceeds the " +
                                  std::to_string(remaining()) + " bytes left in the file");
      }
      kv.value.count_ = *count;
    }
    CHATAI_RETURN_IF_ERROR(read_elements(kv.value, kv.key));
    if (kv.key == "general.alignment") CHATAI_RETURN_IF_ERROR(check_alignment(kv));
    out_.metadata_index.emplace(kv.key, out_.metadata.size());
    out_.metadata.push_back(std::move(kv));
    return {};
  }

  status read_elements(gguf_value& value, std::string_view key) {
    if (value.element_type_ == gguf_value_type::string) {
      value.strings_.reserve(value.count_);
      for (std::uint64_t i = 0; i < value.count_; ++i) {
        auto text = read_string(value.is_array() ? "string element " + std::to_string(i) + " of " + quote(key)
                                                 : "string value of " + quote(key));
        if (!text) return std::move(text).err();
        value.strings_.push_back(*text);
      }
      return {};
    }
    const std::uint64_t bytes = value.count_ * fixed_size(value.element_type_);  // bounded by the count check
    CHATAI_RETURN_IF_ERROR(need(bytes, "the value of " + quote(key)));
    value.data_ = bytes_.data() + pos_;
    pos_ += bytes;
    return {};
  }

  status check_alignment(const gguf_kv& kv) {
    if (kv.value.type() != gguf_value_type::uint32) {
      return fail(kv.offset, "general.alignment has type " + std::string(to_string(kv.value.type())) + ", not uint32");
    }
    const std::uint64_t alignment = kv.value.uint_at(0);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return fail(kv.offset, "general.alignment " + std::to_string(alignment) + " is not a power of two");
    }
    out_.alignment = static_cast<std::uint32_t>(alignment);
    return {};
  }

  status read_tensor_info() {
    const std::uint64_t at = pos_;
    auto name = read_string("tensor name");
    if (!name) return std::move(name).err();
    if (out_.tensor_index.contains(*name)) return fail(at, "duplicate tensor name " + quote(*name));
    const std::string label = "tensor " + quote(*name);

    const std::uint64_t dims_at = pos_;
    auto dims = read<std::uint32_t>("the dimension count of " + label);
    if (!dims) return std::move(dims).err();
    if (*dims == 0 || *dims > max_dimensions) {
      return fail(dims_at, label + " has " + std::to_string(*dims) + " dimensions (1 to 4 are allowed)");
    }
    gguf_tensor tensor;
    tensor.name = *name;
    for (std::uint32_t d = 0; d < *dims; ++d) {
      auto extent = read<std::uint64_t>("dimension " + std::to_string(d) + " of " + label);
      if (!extent) return std::move(extent).err();
      tensor.shape.push_back(static_cast<std::int64_t>(*extent));
    }

    const std::uint64_t type_at = pos_;
    auto type = read<std::uint32_t>("the type of " + label);
    if (!type) return std::move(type).err();
    if (find_type_info(*type) == nullptr) {
      return fail(type_at, label + " has unknown type " + std::to_string(*type));
    }
    tensor.type = static_cast<ggml_type>(*type);
    auto size = tensor_byte_size(tensor.type, tensor.shape);
    if (!size) return fail(dims_at, label + ": " + size.err().message());
    tensor.size = *size;

    const std::uint64_t offset_at = pos_;
    auto offset = read<std::uint64_t>("the data offset of " + label);
    if (!offset) return std::move(offset).err();
    if (*offset % out_.alignment != 0) {
      return fail(offset_at, label + " data offset " + std::to_string(*offset) + " is not a multiple of the alignment " +
                                 std::to_string(out_.alignment));
    }
    tensor.offset = *offset;
    out_.tensor_index.emplace(tensor.name, out_.tensors.size());
    out_.tensors.push_back(std::move(tensor));
    tensor_info_offsets_.push_back(offset_at);
    return {};
  }

  status check_data_section() {
    const std::uint64_t size = bytes_.size();
    const std::uint64_t padding = (out_.alignment - pos_ % out_.alignment) % out_.alignment;
    out_.data_offset = pos_ + padding;  // pos_ <= size, so this cannot overflow
    if (out_.tensors.empty()) return {};
    if (out_.data_offset > size) {
      return fail(pos_, "the data section would begin at " + std::to_string(out_.data_offset) +
                            ", after the end of the file (" + std::to_string(size) + " bytes)");
    }
    const std::uint64_t available = size - out_.data_offset;
    for (std::size_t i = 0; i < out_.tensors.size(); ++i) {
      gguf_tensor& t = out_.tensors[i];
      if (t.offset > available || t.size > available - t.offset) {
        return fail(tensor_info_offsets_[i],
                    "tensor " + quote(t.name) + " data at " + std::to_string(t.offset) + " (" + std::to_string(t.size) +
                        " bytes) lies beyond the end of the data section (" + std::to_string(available) + " bytes)");
      }
      t.data = bytes_.data() + out_.data_offset + t.offset;
    }
    std::vector<std::size_t> order(out_.tensors.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::ranges::sort(order, {}, [this](std::size_t i) { return out_.tensors[i].offset; });
    for (std::size_t k = 1; k < order.size(); ++k) {
      const gguf_tensor& before = out_.tensors[order[k - 1]];
      const gguf_tensor& after = out_.tensors[order[k]];
      if (before.offset + before.size > after.offset) {
        return fail(tensor_info_offsets_[order[k]],
                    "tensor " + quote(after.name) + " data overlaps tensor " + quote(before.name));
      }
    }
    return {};
  }

  std::span<const std::byte> bytes_;
  gguf_file::impl& out_;
  std::uint64_t pos_ = 0;
  std::uint64_t kv_count_ = 0;
  std::uint64_t tensor_count_ = 0;
  std::vector<std::uint64_t> tensor_info_offsets_;  // where each tensor's offset field lies
};

gguf_file::gguf_file(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
gguf_file::gguf_file(gguf_file&&) noexcept = default;
gguf_file& gguf_file::operator=(gguf_file&&) noexcept = default;
gguf_file::~gguf_file() = default;

result<gguf_file> gguf_file::parse(std::span<const std::byte> bytes) {
  auto state = std::make_unique<impl>();
  state->bytes = bytes;
  CHATAI_RETURN_IF_ERROR(gguf_parser(bytes, *state).run());
  return gguf_file(std::move(state));
}

result<gguf_file> gguf_file::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error(path, "cannot open", errno);
  fd_guard closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return os_error(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) return error(errc::invalid_argument, path.string() + ": not a regular file");

  auto state = std::make_unique<impl>();
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size > 0) {
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) return os_error(path, "cannot map", errno);
    state->mapping = mapping;
    state->mapping_size = size;
    state->bytes = {static_cast<const std::byte*>(mapping), size};
  }
  if (auto st2 = gguf_parser(state->bytes, *state).run(); !st2) {
    return std::move(st2).err().with_context(path.string());
  }
  return gguf_file(std::move(state));
}

std::uint32_t gguf_file::version() const noexcept { return impl_->version; }
std::uint32_t gguf_file::alignment() const noexcept { return impl_->alignment; }
std::uint64_t gguf_file::data_offset() const noexcept { return impl_->data_offset; }
std::span<const std::byte> gguf_file::bytes() const noexcept { return impl_->bytes; }
std::span<const gguf_kv> gguf_file::metadata() const noexcept { return impl_->metadata; }
std::span<const gguf_tensor> gguf_file::tensors() const noexcept { return impl_->tensors; }

std::vector<std::string_view> gguf_file::keys() const {
  std::vector<std::string_view> out;
  out.reserve(impl_->metadata.size());
  for (const auto& kv : impl_->metadata) out.push_back(kv.key);
  return out;
}

bool gguf_file::has(std::string_view key) const noexcept { return impl_->metadata_index.contains(key); }

const gguf_value* gguf_file::find(std::string_view key) const noexcept {
  auto it = impl_->metadata_index.find(key);
  return it == impl_->metadata_index.end() ? nullptr : &impl_->metadata[it->second].value;
}

const gguf_tensor* gguf_file::find_tensor(std::string_view name) const noexcept {
  auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

namespace {

std::string describe(const gguf_value& v) {
  if (!v.is_array()) return "a " + std::string(to_string(v.type()));
  return "an array of " + std::string(to_string(v.element_type()));
}

error wrong_type(std::string_view key, const gguf_value& v, std::string_view wanted) {
  return error(errc::invalid_argument,
               "metadata key " + quote(key) + " is " + describe(v) + ", not " + std::string(wanted));
}

error out_of_range_value(std::string_view key, std::string_view value, std::string_view wanted) {
  return error(errc::invalid_argument,
               "metadata key " + quote(key) + " holds " + std::string(value) + ", out of range for " + std::string(wanted));
}

// The value of `key` if it is a scalar (or, with `array`, an array) of a type `accepts`.
template <class Accepts>
result<const gguf_value*> lookup(const gguf_file& file, std::string_view key, bool array, Accepts accepts,
                                 std::string_view wanted) {
  const gguf_value* v = file.find(key);
  if (v == nullptr) return error(errc::not_found, "metadata key " + quote(key) + " is missing");
  if (v->is_array() != array || !accepts(v->element_type())) return wrong_type(key, *v, wanted);
  return v;
}

bool integer_type(gguf_value_type t) { return is_unsigned(t) || is_signed(t); }

}  // namespace

result<std::string_view> gguf_file::get_string(std::string_view key) const {
  auto v = lookup(*this, key, false, [](gguf_value_type t) { return t == gguf_value_type::string; }, "a string");
  if (!v) return std::move(v).err();
  return (*v)->string_at(0);
}

result<std::uint64_t> gguf_file::get_uint(std::string_view key) const {
  auto v = lookup(*this, key, false, integer_type, "an unsigned integer");
  if (!v) return std::move(v).err();
  if (is_signed((*v)->type())) {
    const std::int64_t value = (*v)->int_at(0);
    if (value < 0) return out_of_range_value(key, std::to_string(value), "an unsigned integer");
    return static_cast<std::uint64_t>(value);
  }
  return (*v)->uint_at(0);
}

result<std::int64_t> gguf_file::get_int(std::string_view key) const {
  auto v = lookup(*this, key, false, integer_type, "an integer");
  if (!v) return std::move(v).err();
  if ((*v)->type() == gguf_value_type::uint64) {
    const std::uint64_t value = (*v)->uint_at(0);
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return out_of_range_value(key, std::to_string(value), "int64");
    }
  }
  return (*v)->int_at(0);
}

result<double> gguf_file::get_float(std::string_view key) const {
  auto v = lookup(*this, key, false, is_float, "a float");
  if (!v) return std::move(v).err();
  return (*v)->float_at(0);
}

result<bool> gguf_file::get_bool(std::string_view key) const {
  auto v = lookup(*this, key, false, [](gguf_value_type t) { return t == gguf_value_type::boolean; }, "a bool");
  if (!v) return std::move(v).err();
  return (*v)->bool_at(0);
}

result<std::span<const std::string_view>> gguf_file::get_string_array(std::string_view key) const {
  auto v = lookup(*this, key, true, [](gguf_value_type t) { return t == gguf_value_type::string; },
                  "an array of strings");
  if (!v) return std::move(v).err();
  return (*v)->strings();
}

result<std::vector<std::int32_t>> gguf_file::get_int32_array(std::string_view key) const {
  auto v = lookup(*this, key, true, integer_type, "an array of integers");
  if (!v) return std::move(v).err();
  const gguf_value& value = **v;
  std::vector<std::int32_t> out;
  out.reserve(value.size());
  for (std::uint64_t i = 0; i < value.size(); ++i) {
    if (value.element_type() == gguf_value_type::uint64 &&
        value.uint_at(i) > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
      return out_of_range_value(key, "element " + std::to_string(i) + " = " + std::to_string(value.uint_at(i)), "int32");
    }
    const std::int64_t element = value.int_at(i);
    if (element < std::numeric_limits<std::int32_t>::min() || element > std::numeric_limits<std::int32_t>::max()) {
      return out_of_range_value(key, "element " + std::to_string(i) + " = " + std::to_string(element), "int32");
    }
    out.push_back(static_cast<std::int32_t>(element));
  }
  return out;
}

result<std::vector<float>> gguf_file::get_float32_array(std::string_view key) const {
  auto v = lookup(*this, key, true, is_float, "an array of floats");
  if (!v) return std::move(v).err();
  const gguf_value& value = **v;
  std::vector<float> out(static_cast<std::size_t>(value.size()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(value.float_at(i));
  return out;
}

}  // namespace chatai::engine
