// Python bindings of the model server: chatai.Server starts `chatai serve` in-process and
// stops it (also as a context manager). Blocking calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>

#include "chatai/serve/server.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

// Owns a running server; stop() is final.
class py_server {
 public:
  explicit py_server(std::unique_ptr<serve::model_server> s) : server_(std::move(s)) {}

  serve::model_server& get() { return *server_; }

  void stop() {
    py::gil_scoped_release release;
    server_->stop();
  }

 private:
  std::unique_ptr<serve::model_server> server_;
};

}  // namespace

void bind_serve(py::module_& m) {
  py::class_<py_server>(m, "Server",
                        "The OpenAI-compatible model server (`chatai serve`) running in this process. The "
                        "constructor returns once the model is loaded; use it as a context manager or call stop().")
      .def(py::init([](const std::string& model, const std::string& host, int port,
                       const std::optional<std::string>& served_model_name, const std::string& device, int threads,
                       std::int64_t ctx, std::int64_t parallel, std::int64_t max_queue,
                       const std::optional<std::string>& api_key_file, std::int64_t prefix_cache_tokens) {
             if (port < 0 || port > 65535) throw python_error(error(errc::invalid_argument, "port must be within 0..65535"));
             serve::server_options o;
             o.model_path = model;
             o.host = host;
             o.port = static_cast<std::uint16_t>(port);
             if (served_model_name) o.served_model_name = *served_model_name;
             o.device = device;
             o.threads = threads;
             o.context = ctx;
             o.parallel = parallel;
             o.max_queue = max_queue;
             if (api_key_file) o.api_key_file = *api_key_file;
             if (prefix_cache_tokens < -1)
               throw python_error(error(errc::invalid_argument, "prefix_cache_tokens must be -1 (the default size), 0 (none) or more"));
             o.prefix_cache_tokens = prefix_cache_tokens;
             std::unique_ptr<serve::model_server> server;
             {
               py::gil_scoped_release release;
               auto started = serve::model_server::start(std::move(o));
               if (!started) throw python_error(started.err());
               auto ready = (*started)->wait_ready();
               if (!ready) throw python_error(ready.err());
               server = std::move(*started);
             }
             return std::make_unique<py_server>(std::move(server));
           }),
           py::arg("model"), py::arg("host") = "127.0.0.1", py::arg("port") = 0,
           py::arg("served_model_name") = py::none(), py::arg("device") = "auto", py::arg("threads") = 0,
           py::arg("ctx") = 0, py::arg("parallel") = 8, py::arg("max_queue") = 64, py::arg("api_key_file") = py::none(),
           py::arg("prefix_cache_tokens") = -1,
           "Loads `model` (a GGUF file) and serves it on host:port (port 0: any free port). Raises chatai.Error "
           "when the port cannot be bound, the model cannot be loaded or the API key file is unsafe.")
      .def_property_readonly("port", [](py_server& s) { return s.get().port(); }, "The bound port.")
      .def_property_readonly("host", [](py_server& s) { return s.get().host(); })
      .def_property_readonly("model", [](py_server& s) { return s.get().served_model_name(); },
                             "The model name clients send.")
      .def_property_readonly(
          "base_url", [](py_server& s) { return "http://" + s.get().host() + ":" + std::to_string(s.get().port()) + "/v1"; },
          "The URL to give an OpenAI client as base_url.")
      .def_property_readonly("state", [](py_server& s) { return std::string(serve::to_string(s.get().state())); },
                             "loading, ready, draining or stopped.")
      .def("drain", [](py_server& s) { s.get().drain(); },
           "Stops taking new requests (503) and lets those in flight finish; returns at once.")
      .def(
          "wait_drained",
          [](py_server& s) {
            py::gil_scoped_release release;
            s.get().wait_drained();
          },
          "Blocks until draining is complete or the server stopped.")
      .def("stop", &py_server::stop, "Stops now: requests in flight are cut off. Idempotent.")
      .def("__enter__", [](py_server& s) -> py_server& { return s; }, py::return_value_policy::reference)
      .def("__exit__", [](py_server& s, const py::args&) { s.stop(); });
}

}  // namespace chatai::python
