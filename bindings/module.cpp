// The Python module chatai._chatai: bindings of the C++ API (one file per bound class as
// the module grows; blocking calls release the GIL).
#include <pybind11/pybind11.h>

#include "chatai_version.h"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {
void bind_gguf(py::module_& m);  // gguf.cpp
void bind_gate(py::module_& m);  // gate.cpp
void bind_tunnel(py::module_& m);  // tunnel.cpp
void bind_model(py::module_& m);  // model.cpp
void bind_serve(py::module_& m);  // serve.cpp
void bind_scheduler(py::module_& m);  // scheduler.cpp
void bind_gateway(py::module_& m);  // gateway.cpp
}  // namespace chatai::python

PYBIND11_MODULE(_chatai, m) {
  m.doc() = "chatai: a Slurm-native, OpenAI-compatible LLM service";
  m.attr("__version__") = CHATAI_VERSION_STRING;
  m.def("version", [] { return std::string(CHATAI_VERSION_STRING); }, "The library version.");

  // Failures of chatai calls raise chatai.Error; its `code` names the category.
  static py::exception<chatai::python::python_error> error_type(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const chatai::python::python_error& e) {
      py::object instance = py::reinterpret_borrow<py::object>(error_type.ptr())(e.what());
      instance.attr("code") = e.code();
      PyErr_SetObject(error_type.ptr(), instance.ptr());
    }
  });

  chatai::python::bind_gguf(m);
  chatai::python::bind_gate(m);
  chatai::python::bind_tunnel(m);
  chatai::python::bind_model(m);
  chatai::python::bind_serve(m);
  chatai::python::bind_scheduler(m);
  chatai::python::bind_gateway(m);
}
