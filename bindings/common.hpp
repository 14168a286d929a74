// Shared pieces of the Python bindings: turning chatai errors into the Python exception
// chatai.Error (with a `code` attribute naming the error category).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "chatai/core/status.hpp"

namespace chatai::python {

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
