// Python bindings of the tunnel: chatai.Tunnel (SSH or local transport to chatai-gate) and
// chatai.TunnelStream (one streaming answer, read as an iterator of bytes).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "chatai/tunnel/local_transport.hpp"
#include "chatai/tunnel/ssh_transport.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

std::chrono::milliseconds seconds(double s) { return std::chrono::milliseconds(static_cast<long long>(s * 1000)); }

// The answer of one request as it arrives, for a Python reader.
// Thread safety: filled on the tunnel's I/O thread, read from Python threads, under mutex_.
class py_stream {
 public:
  tunnel::stream_callbacks callbacks(const std::shared_ptr<py_stream>& self) {
    return {[self](std::string_view bytes) {
              std::lock_guard lock(self->mutex_);
              self->chunks_.emplace_back(bytes);
              self->ready_.notify_all();
            },
            [self](const status& outcome) {
              std::lock_guard lock(self->mutex_);
              self->outcome_ = outcome;
              self->ready_.notify_all();
            }};
  }

  void attach(std::shared_ptr<tunnel::stream> s) { stream_ = std::move(s); }

  // The next piece; b"" at the end; raises chatai.Error when the request failed, or
  // TimeoutError when nothing came within `timeout` seconds.
  py::bytes read(std::optional<double> timeout) {
    std::string chunk;
    bool timed_out = false;
    {
      py::gil_scoped_release release;
      std::unique_lock lock(mutex_);
      auto has = [&] { return !chunks_.empty() || outcome_.has_value(); };
      if (timeout)
        timed_out = !ready_.wait_for(lock, seconds(*timeout), has);
      else
        ready_.wait(lock, has);
      if (!chunks_.empty()) {
        chunk = std::move(chunks_.front());
        chunks_.pop_front();
      }
    }
    if (timed_out) {
      PyErr_SetString(PyExc_TimeoutError, "no answer in time");
      throw py::error_already_set();
    }
    if (!chunk.empty()) {
      stream_->consumed(chunk.size());
      return py::bytes(chunk);
    }
    std::lock_guard lock(mutex_);
    raise_if_error(*outcome_);
    return py::bytes();
  }

  void cancel() { stream_->cancel(); }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> chunks_;
  std::optional<status> outcome_;
  std::shared_ptr<tunnel::stream> stream_;
};

class py_tunnel {
 public:
  explicit py_tunnel(std::unique_ptr<tunnel::transport> t, tunnel::ssh_transport* ssh = nullptr)
      : transport_(std::move(t)), ssh_(ssh) {}

  std::shared_ptr<py_stream> request(const std::string& service, const py::bytes& body, const std::string& id,
                                     const std::string& user, const std::string& method, const std::string& path,
                                     const std::map<std::string, std::string>& headers, double first_byte_timeout,
                                     double idle_timeout, std::size_t window) {
    tunnel::gate_request r;
    r.id = id;
    r.user = user;
    r.service = service;
    r.method = method;
    r.path = path;
    r.headers.assign(headers.begin(), headers.end());
    r.body = body;
    tunnel::request_options o;
    o.first_byte_timeout = seconds(first_byte_timeout);
    o.idle_timeout = seconds(idle_timeout);
    o.window = window;
    auto s = std::make_shared<py_stream>();
    auto cb = s->callbacks(s);
    py::gil_scoped_release release;
    s->attach(transport_->request(r, std::move(cb), o));
    return s;
  }

  py::object status(double timeout) {
    result<std::string> doc = [&] {
      py::gil_scoped_release release;
      return transport_->status(seconds(timeout));
    }();
    return py::module_::import("json").attr("loads")(value_or_raise(std::move(doc)));
  }

  void keep_alive(double timeout) {
    chatai::status st = [&] {
      py::gil_scoped_release release;
      return transport_->keep_alive(seconds(timeout));
    }();
    raise_if_error(st);
  }

  void wait_connected(double timeout) {
    if (!ssh_) return;
    chatai::status st = [&] {
      py::gil_scoped_release release;
      return ssh_->wait_connected(seconds(timeout));
    }();
    raise_if_error(st);
  }

  py::dict health() const {
    const auto h = transport_->health();
    py::dict d;
    d["alive"] = h.alive;
    d["since_keep_alive"] =
        h.last_keep_alive == std::chrono::steady_clock::time_point{}
            ? py::none()
            : py::cast(std::chrono::duration<double>(std::chrono::steady_clock::now() - h.last_keep_alive).count());
    d["sessions_up"] = h.sessions_up;
    d["requests_running"] = h.requests_running;
    d["requests_queued"] = h.requests_queued;
    d["last_error"] = h.last_error;
    return d;
  }

  void close() {
    py::gil_scoped_release release;
    ssh_ = nullptr;
    transport_.reset();
  }

  tunnel::transport& get() {
    if (!transport_) throw python_error(error(errc::invalid_argument, "the tunnel is closed"));
    return *transport_;
  }

 private:
  std::unique_ptr<tunnel::transport> transport_;
  tunnel::ssh_transport* ssh_;
};

}  // namespace

void bind_tunnel(py::module_& m) {
  py::class_<py_stream, std::shared_ptr<py_stream>>(m, "TunnelStream",
                                                    "The answer of one request through the tunnel, as it arrives.")
      .def("read", &py_stream::read, py::arg("timeout") = py::none(),
           "The next piece of the HTTP response (bytes); b'' once it ended. Raises chatai.Error when the request "
           "failed (code cancelled, timeout, unavailable, permission_denied) and TimeoutError when nothing arrived "
           "within `timeout` seconds.")
      .def("cancel", &py_stream::cancel, "Ends the request: the gate sees its client leave at once.")
      .def("__iter__", [](std::shared_ptr<py_stream> s) { return s; })
      .def("__next__", [](py_stream& s) {
        py::bytes b = s.read(std::nullopt);
        if (py::len(b) == 0) throw py::stop_iteration();
        return b;
      });

  py::class_<py_tunnel>(m, "Tunnel",
                        "The transport to chatai-gate: a pool of SSH sessions (Tunnel(...)) or the gate as a local "
                        "child process (Tunnel.local(...)).")
      .def(py::init([](const std::string& host, const std::string& user, const std::string& key,
                       const std::string& known_hosts, int port, const std::string& passphrase, bool trust_on_first_use,
                       int sessions, int channels_per_session, double connect_timeout, double reconnect_initial,
                       double reconnect_max, double keep_alive_interval) {
             tunnel::ssh_options o;
             o.host = host;
             o.user = user;
             o.key_file = key;
             o.known_hosts = known_hosts;
             o.port = port;
             o.passphrase = passphrase;
             o.trust_on_first_use = trust_on_first_use;
             o.sessions = sessions;
             o.channels_per_session = channels_per_session;
             o.connect_timeout = seconds(connect_timeout);
             o.reconnect_initial = seconds(reconnect_initial);
             o.reconnect_max = seconds(reconnect_max);
             o.keep_alive_interval = seconds(keep_alive_interval);
             auto t = value_or_raise(tunnel::ssh_transport::create(std::move(o)));
             auto* raw = t.get();
             return std::make_unique<py_tunnel>(std::move(t), raw);
           }),
           py::arg("host"), py::arg("user"), py::arg("key"), py::arg("known_hosts"), py::kw_only(), py::arg("port") = 22,
           py::arg("passphrase") = "", py::arg("trust_on_first_use") = false, py::arg("sessions") = 8,
           py::arg("channels_per_session") = 10, py::arg("connect_timeout") = 5.0, py::arg("reconnect_initial") = 0.1,
           py::arg("reconnect_max") = 2.0, py::arg("keep_alive_interval") = 5.0,
           "Connects in the background to user@host with the private key file `key`; the server's host key must "
           "be in `known_hosts` (unless trust_on_first_use). keep_alive_interval 0 turns keep-alives off.")
      .def_static(
          "local",
          [](const std::string& gate_program, const std::string& gate_config, int max_running,
             double keep_alive_interval) {
            tunnel::local_options o;
            o.gate_program = gate_program;
            o.gate_config = gate_config;
            o.max_running = max_running;
            o.keep_alive_interval = seconds(keep_alive_interval);
            return std::make_unique<py_tunnel>(value_or_raise(tunnel::local_transport::create(std::move(o))));
          },
          py::arg("gate_program"), py::arg("gate_config"), py::kw_only(), py::arg("max_running") = 64,
          py::arg("keep_alive_interval") = 5.0, "Runs chatai-gate --config gate_config as a child per request.")
      .def(
          "request",
          [](py_tunnel& t, const std::string& service, const py::bytes& body, const std::string& id,
             const std::string& user, const std::string& method, const std::string& path,
             const std::map<std::string, std::string>& headers, double first_byte_timeout, double idle_timeout,
             std::size_t window) {
            t.get();
            return t.request(service, body, id, user, method, path, headers, first_byte_timeout, idle_timeout, window);
          },
          py::arg("service"), py::arg("body"), py::kw_only(), py::arg("id") = "req", py::arg("user") = "",
          py::arg("method") = "POST", py::arg("path") = "/v1/chat/completions",
          py::arg("headers") = std::map<std::string, std::string>{}, py::arg("first_byte_timeout") = 30.0,
          py::arg("idle_timeout") = 60.0, py::arg("window") = std::size_t{1} << 20,
          "Sends one request (gate protocol version 1) and returns its TunnelStream at once: the backend's "
          "HTTP/1.1 response, streamed.")
      .def("status", [](py_tunnel& t, double timeout) { t.get(); return t.status(timeout); },
           py::arg("timeout") = 10.0, "The gate's status document (services, models, backends, demand) as a dict.")
      .def("keep_alive", [](py_tunnel& t, double timeout) { t.get(); t.keep_alive(timeout); },
           py::arg("timeout") = 10.0, "Runs one keep-alive now (the gate runs a scheduler tick when one is due).")
      .def("wait_connected", [](py_tunnel& t, double timeout) { t.get(); t.wait_connected(timeout); },
           py::arg("timeout") = 10.0,
           "Waits until an SSH session is up; raises chatai.Error for a failed attempt (permission_denied: the "
           "host key or client key was refused) or when none came up in time.")
      .def("health", [](py_tunnel& t) { t.get(); return t.health(); },
           "A dict: alive, since_keep_alive (seconds or None), sessions_up, requests_running, requests_queued, "
           "last_error.")
      .def("close", &py_tunnel::close, "Ends every request and closes the sessions.")
      .def("__enter__", [](py_tunnel& t) -> py_tunnel& { return t; }, py::return_value_policy::reference)
      .def("__exit__", [](py_tunnel& t, py::args) { t.close(); });
}

}  // namespace chatai::python
