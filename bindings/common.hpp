// Shared pieces of the Python bindings: turning chatai errors into the Python exception
// chatai.Error (with a `code` attribute naming the error category), and text into str.
#pragma once

#include <pybind11/pybind11.h>

#include <Python.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "chatai/core/status.hpp"

namespace chatai::python {

// Invalid UTF-8 (possible in token pieces) becomes U+FFFD rather than an exception.
inline pybind11::str to_str(std::string_view text) {
  PyObject* obj = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
  if (obj == nullptr) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::str>(obj);
}

class python_error : public std::runtime_error {
 public:
  explicit python_error(const error& err) : std::runtime_error(err.message()), code_(to_string(err.code())) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

inline void raise_if_error(const status& st) {
  if (!st) throw python_error(st.err());
}

template <class T>
T value_or_raise(result<T> r) {
  if (!r) throw python_error(r.err());
  return std::move(r).value();
}

}  // namespace chatai::python
