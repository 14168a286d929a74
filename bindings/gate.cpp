// Python bindings of the gate: chatai.gate.validate (the strict check of a request header
// line) and chatai.gate.run (one verb over two file descriptors, as chatai-gate runs it).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "chatai/gate/gate.hpp"
#include "chatai/gate/request.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

gate::gate_config config_or_defaults(const std::optional<std::string>& path) {
  if (!path) return gate::gate_config{};
  return value_or_raise(gate::load_config(*path));
}

}  // namespace

void bind_gate(py::module_& m) {
  auto g = m.def_submodule("gate", "Gate protocol version 1: request validation and the gate's verbs.");

  g.def(
      "validate",
      [](const std::string& header, const std::optional<std::string>& config) {
        const auto cfg = config_or_defaults(config);
        auto head = value_or_raise(gate::parse_head(header, cfg));
        py::dict headers;
        for (const auto& [name, value] : head.headers) headers[py::str(name)] = value;
        py::dict out;
        out["id"] = head.id;
        out["user"] = head.user;
        out["service"] = head.service;
        out["method"] = head.method;
        out["path"] = head.path;
        out["headers"] = headers;
        out["body_length"] = head.body_length;
        return out;
      },
      py::arg("header"), py::arg("config") = py::none(),
      "Checks one request header line (str or bytes, without its newline) against the allowlists and limits "
      "of the gate config file `config` (None: the built-in defaults). Returns its fields as a dict; "
      "raises chatai.Error (code invalid_argument: the gate answers 400; out_of_range: 413).");

  g.def(
      "http_status",
      [](const std::string& code) {
        for (const auto c : {errc::invalid_argument, errc::out_of_range, errc::not_found, errc::timeout})
          if (to_string(c) == code) return gate::http_status_for(c);
        return 400;
      },
      py::arg("code"), "The HTTP status the gate answers a refused request with, from chatai.Error.code.");

  g.def(
      "run",
      [](const std::string& config, const std::string& verb, int in_fd, int out_fd) {
        auto v = value_or_raise(proto::parse_command(verb.c_str()));
        const auto cfg = value_or_raise(gate::load_config(config));
        py::gil_scoped_release release;
        return gate::run(cfg, v, in_fd, out_fd);
      },
      py::arg("config"), py::arg("verb"), py::arg("in_fd"), py::arg("out_fd"),
      "Runs one verb ('keep-alive', 'status' or 'request') with the gate config file `config`, reading "
      "from in_fd and writing to out_fd (both stay open). Returns the exit status chatai-gate would "
      "have: 0 answered whole, 1 cut short. Raises chatai.Error for an unknown verb or a bad config. "
      "For 'request', keep in_fd open until the response ends: end-of-file means the client left.");
}

}  // namespace chatai::python
