// Python bindings of the Slurm adapter's scheduler: chatai.Scheduler runs one deployment's
// init, tick and status as `chatai scheduler` does. Blocking calls release the GIL.
#include <pybind11/pybind11.h>

#include <string>

#include "chatai/slurm/scheduler.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

// The tick report and the status as dicts with the keys of their JSON documents (chatai.h).
py::dict to_dict(const std::string& json_text) {
  return py::module_::import("json").attr("loads")(json_text).cast<py::dict>();
}

}  // namespace

void bind_scheduler(py::module_& m) {
  py::class_<slurm::scheduler>(m, "Scheduler",
                               "The Slurm adapter's autoscaler over one deployment file, as `chatai scheduler` "
                               "runs it. Every tick works from the state directory's files, so ticks may run in "
                               "different processes; they never overlap.")
      .def(py::init([](const std::string& config_path) {
             return slurm::scheduler(value_or_raise(slurm::load_deployment(config_path)));
           }),
           py::arg("config_path"),
           "Loads and checks the deployment file; raises chatai.Error naming the file and the field.")
      .def(
          "init",
          [](slurm::scheduler& self) {
            status st;
            {
              py::gil_scoped_release release;
              st = self.init();
            }
            raise_if_error(st);
          },
          "Creates the state directory's layout and publishes the services in the registry.")
      .def(
          "tick",
          [](slurm::scheduler& self) {
            std::string report;
            {
              py::gil_scoped_release release;
              auto done = self.tick();
              if (!done) throw python_error(done.err());
              report = slurm::to_json(*done);
            }
            return to_dict(report);
          },
          "Runs one round of scheduling and returns its report: submitted, cancelled, adopted, rotated, probes, "
          "unknown_listings (launchers whose listing failed: none of their jobs was touched) and duration_ms. "
          "Raises chatai.Error (code unavailable while another tick runs).")
      .def(
          "status",
          [](const slurm::scheduler& self) {
            std::string text;
            {
              py::gil_scoped_release release;
              auto st = self.status();
              if (!st) throw python_error(st.err());
              text = slurm::to_json(*st);
            }
            return to_dict(text);
          },
          "The state recorded by the last tick, without asking Slurm: {'last_tick_ms', 'services': [...], "
          "'jobs': [...]}; a ready job has its host and port.");
}

}  // namespace chatai::python
