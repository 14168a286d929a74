// Python bindings of the gateway: chatai.Gateway(config) built from a config file or its JSON
// text, with start/stop/port/url, also as a context manager (which starts it). Blocking calls
// release the GIL.
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "chatai/gateway/gateway.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

// JSON text starts with '{' (after blanks); anything else is a path.
bool looks_like_json(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{';
}

class py_gateway {
 public:
  explicit py_gateway(std::unique_ptr<gateway::gateway> g) : gateway_(std::move(g)) {}

  gateway::gateway& get() { return *gateway_; }

  void start() {
    py::gil_scoped_release release;
    raise_if_error(gateway_->start());
  }

  void stop() {
    py::gil_scoped_release release;
    gateway_->stop();
  }

 private:
  std::unique_ptr<gateway::gateway> gateway_;
};

}  // namespace

void bind_gateway(py::module_& m) {
  py::class_<py_gateway>(m, "Gateway",
                         "The web-facing OpenAI API (`chatai gateway`) in this process: API keys, limits, usage "
                         "accounting and routing through the tunnel. Call start() or use it as a context manager.")
      .def(py::init([](const std::string& config) {
             auto parsed = looks_like_json(config) ? gateway::parse_config(config, "config")
                                                   : gateway::load_config(config);
             if (!parsed) throw python_error(parsed.err());
             std::unique_ptr<gateway::gateway> g;
             {
               py::gil_scoped_release release;
               g = value_or_raise(gateway::gateway::create(std::move(*parsed)));
             }
             return std::make_unique<py_gateway>(std::move(g));
           }),
           py::arg("config"),
           "`config` is the config's JSON text or the path of its file. Raises chatai.Error naming the field "
           "that is wrong, or when the database cannot be opened.")
      .def("start", &py_gateway::start, "Fetches the cluster's status once and listens. Raises chatai.Error when "
                                        "the address cannot be bound or it was started before.")
      .def("stop", &py_gateway::stop, "Stops listening, lets streams in flight end, writes queued usage. Idempotent.")
      .def_property_readonly("port", [](py_gateway& g) { return g.get().port(); }, "The bound port (0 before start).")
      .def_property_readonly("url", [](py_gateway& g) { return g.get().url(); }, "http://host:port")
      .def("__enter__",
           [](py_gateway& g) -> py_gateway& {
             if (g.get().port() == 0) g.start();
             return g;
           },
           py::return_value_policy::reference)
      .def("__exit__", [](py_gateway& g, const py::args&) { g.stop(); });
}

}  // namespace chatai::python
