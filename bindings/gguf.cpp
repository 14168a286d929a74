// Python bindings of the GGUF reader and writer: chatai.GGUFFile and chatai.GGUFWriter.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Python.h>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/engine/gguf.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

using engine::gguf_file;
using engine::gguf_value;
using engine::gguf_value_type;
using engine::gguf_writer;

py::object element(const gguf_value& v, std::uint64_t i) {
  switch (v.element_type()) {
    case gguf_value_type::string: return to_str(v.string_at(i));
    case gguf_value_type::boolean: return py::bool_(v.bool_at(i));
    case gguf_value_type::float32:
    case gguf_value_type::float64: return py::float_(v.float_at(i));
    case gguf_value_type::uint64: return py::int_(v.uint_at(i));
    default: return py::int_(v.int_at(i));
  }
}

py::object to_python(const gguf_value& v) {
  if (!v.is_array()) return element(v, 0);
  py::list out(static_cast<std::size_t>(v.size()));
  for (std::uint64_t i = 0; i < v.size(); ++i) out[static_cast<std::size_t>(i)] = element(v, i);
  return out;
}

// A tensor's description, detached from the file.
struct tensor_info {
  std::string name;
  std::string type;
  std::vector<std::int64_t> shape;
  std::uint64_t offset;
  std::uint64_t size;
};

// An open file. Thread safety: as gguf_file (immutable); Python's GIL serialises calls anyway.
class py_gguf_file {
 public:
  explicit py_gguf_file(const std::string& path) : file_(open(path)) {}

  std::uint32_t version() const { return file_.version(); }
  std::uint32_t alignment() const { return file_.alignment(); }
  std::uint64_t data_offset() const { return file_.data_offset(); }

  py::object architecture() const {
    auto arch = file_.architecture();
    return arch.ok() ? py::object(to_str(*arch)) : py::object(py::none());
  }

  py::dict metadata() const {
    py::dict out;
    for (const auto& kv : file_.metadata()) out[to_str(kv.key)] = to_python(kv.value);
    return out;
  }

  py::list keys() const {
    py::list out;
    for (const auto& kv : file_.metadata()) out.append(to_str(kv.key));
    return out;
  }

  py::object get(const std::string& key) const {
    const gguf_value* v = file_.find(key);
    return v == nullptr ? py::object(py::none()) : to_python(*v);
  }

  std::string value_type(const std::string& key) const {
    const gguf_value* v = file_.find(key);
    if (v == nullptr) throw python_error(error(errc::not_found, "metadata key '" + key + "' is missing"));
    return std::string(to_string(v->type()));
  }

  std::vector<tensor_info> tensors() const {
    std::vector<tensor_info> out;
    out.reserve(file_.tensors().size());
    for (const auto& t : file_.tensors()) {
      out.push_back({std::string(t.name), std::string(to_string(t.type)), t.shape, t.offset, t.size});
    }
    return out;
  }

  py::bytes tensor_data(const std::string& name) const {
    const engine::gguf_tensor* t = file_.find_tensor(name);
    if (t == nullptr) throw python_error(error(errc::not_found, "no tensor named '" + name + "'"));
    return py::bytes(reinterpret_cast<const char*>(t->data), static_cast<std::size_t>(t->size));
  }

 private:
  static gguf_file open(const std::string& path) {
    py::gil_scoped_release unlocked;
    return value_or_raise(gguf_file::open(path));
  }

  gguf_file file_;
};

engine::ggml_type parse_type(const std::string& name) {
  auto type = engine::parse_ggml_type(name);
  if (!type) throw python_error(error(errc::invalid_argument, "unknown tensor type '" + name + "'"));
  return *type;
}

template <class T>
void add_numbers(gguf_writer& w, const std::string& key, const py::list& values) {
  const auto numbers = values.cast<std::vector<T>>();
  raise_if_error(w.add_array(key, std::span<const T>(numbers)));
}

// Adds an array whose elements all have `element_type` (GGUF's name: "int32", "string", ...).
void add_array(gguf_writer& w, const std::string& key, const py::list& values, const std::string& element_type) {
  if (element_type == "uint8") return add_numbers<std::uint8_t>(w, key, values);
  if (element_type == "int8") return add_numbers<std::int8_t>(w, key, values);
  if (element_type == "uint16") return add_numbers<std::uint16_t>(w, key, values);
  if (element_type == "int16") return add_numbers<std::int16_t>(w, key, values);
  if (element_type == "uint32") return add_numbers<std::uint32_t>(w, key, values);
  if (element_type == "int32") return add_numbers<std::int32_t>(w, key, values);
  if (element_type == "uint64") return add_numbers<std::uint64_t>(w, key, values);
  if (element_type == "int64") return add_numbers<std::int64_t>(w, key, values);
  if (element_type == "float32") return add_numbers<float>(w, key, values);
  if (element_type == "float64") return add_numbers<double>(w, key, values);
  if (element_type == "bool") {
    const auto flags = values.cast<std::vector<bool>>();
    const std::unique_ptr<bool[]> packed(new bool[flags.size()]);
    std::copy(flags.begin(), flags.end(), packed.get());
    return raise_if_error(w.add_array(key, std::span<const bool>(packed.get(), flags.size())));
  }
  if (element_type == "string") {
    const auto strings = values.cast<std::vector<std::string>>();
    return raise_if_error(w.add_array(key, std::span<const std::string>(strings)));
  }
  throw python_error(error(errc::invalid_argument, "unknown array element type '" + element_type + "'"));
}

}  // namespace

void bind_gguf(py::module_& m) {
  py::class_<tensor_info>(m, "GGUFTensor", "A tensor's description in a GGUF file.")
      .def_readonly("name", &tensor_info::name)
      .def_readonly("type", &tensor_info::type, "ggml's type name: 'f32', 'q4_0', 'q6_K', ...")
      .def_readonly("shape", &tensor_info::shape, "dimension 0 first (it varies fastest)")
      .def_readonly("offset", &tensor_info::offset, "bytes from the start of the data section")
      .def_readonly("size", &tensor_info::size, "bytes")
      .def("__repr__", [](const tensor_info& t) {
        std::string shape;
        for (std::size_t d = 0; d < t.shape.size(); ++d) shape += (d > 0 ? ", " : "") + std::to_string(t.shape[d]);
        return "GGUFTensor(name='" + t.name + "', type='" + t.type + "', shape=[" + shape + "], offset=" +
               std::to_string(t.offset) + ")";
      });

  py::class_<py_gguf_file>(m, "GGUFFile", "A GGUF model file, memory-mapped read-only and validated when opened.")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def_property_readonly("version", &py_gguf_file::version)
      .def_property_readonly("alignment", &py_gguf_file::alignment)
      .def_property_readonly("data_offset", &py_gguf_file::data_offset)
      .def_property_readonly("architecture", &py_gguf_file::architecture, "general.architecture, or None")
      .def_property_readonly("metadata", &py_gguf_file::metadata,
                             "every key and value as a new dict (arrays become lists)")
      .def("keys", &py_gguf_file::keys, "the metadata keys in file order")
      .def("get", &py_gguf_file::get, py::arg("key"), "the value of a key, or None")
      .def("value_type", &py_gguf_file::value_type, py::arg("key"), "GGUF's type name of a key's value")
      .def_property_readonly("tensors", &py_gguf_file::tensors)
      .def("tensor_data", &py_gguf_file::tensor_data, py::arg("name"), "a copy of a tensor's bytes");

  py::class_<gguf_writer>(m, "GGUFWriter", "Builds a GGUF version 3 file.")
      .def(py::init<>())
      .def("add_uint8", [](gguf_writer& w, const std::string& k, std::uint8_t v) { raise_if_error(w.add_uint8(k, v)); })
      .def("add_int8", [](gguf_writer& w, const std::string& k, std::int8_t v) { raise_if_error(w.add_int8(k, v)); })
      .def("add_uint16", [](gguf_writer& w, const std::string& k, std::uint16_t v) { raise_if_error(w.add_uint16(k, v)); })
      .def("add_int16", [](gguf_writer& w, const std::string& k, std::int16_t v) { raise_if_error(w.add_int16(k, v)); })
      .def("add_uint32", [](gguf_writer& w, const std::string& k, std::uint32_t v) { raise_if_error(w.add_uint32(k, v)); })
      .def("add_int32", [](gguf_writer& w, const std::string& k, std::int32_t v) { raise_if_error(w.add_int32(k, v)); })
      .def("add_uint64", [](gguf_writer& w, const std::string& k, std::uint64_t v) { raise_if_error(w.add_uint64(k, v)); })
      .def("add_int64", [](gguf_writer& w, const std::string& k, std::int64_t v) { raise_if_error(w.add_int64(k, v)); })
      .def("add_float32", [](gguf_writer& w, const std::string& k, float v) { raise_if_error(w.add_float32(k, v)); })
      .def("add_float64", [](gguf_writer& w, const std::string& k, double v) { raise_if_error(w.add_float64(k, v)); })
      .def("add_bool", [](gguf_writer& w, const std::string& k, bool v) { raise_if_error(w.add_bool(k, v)); })
      .def("add_string", [](gguf_writer& w, const std::string& k, const std::string& v) { raise_if_error(w.add_string(k, v)); })
      .def("add_array", &add_array, py::arg("key"), py::arg("values"), py::arg("element_type"),
           "an array of one element type: 'uint8' ... 'float64', 'bool' or 'string'")
      .def("set_alignment", [](gguf_writer& w, std::uint32_t a) { raise_if_error(w.set_alignment(a)); })
      .def(
          "add_tensor",
          [](gguf_writer& w, const std::string& name, const std::string& type, const std::vector<std::int64_t>& shape,
             const py::bytes& data) {
            const std::string_view bytes(data);
            raise_if_error(w.add_tensor(name, parse_type(type), shape,
                                        std::as_bytes(std::span<const char>(bytes.data(), bytes.size()))));
          },
          py::arg("name"), py::arg("type"), py::arg("shape"), py::arg("data"),
          "type is ggml's name ('f32', 'q4_0', ...); shape puts dimension 0 first")
      .def("to_bytes",
           [](const gguf_writer& w) {
             const auto bytes = w.to_bytes();
             return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
           })
      .def(
          "write",
          [](const gguf_writer& w, const std::string& path) {
            status st;
            {
              py::gil_scoped_release unlocked;
              st = w.write(path);
            }
            raise_if_error(st);
          },
          py::arg("path"), "writes atomically (a temporary file renamed into place)");
}

}  // namespace chatai::python
