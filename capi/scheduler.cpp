// The C ABI of the Slurm adapter's scheduler: one deployment's autoscaler, as `chatai scheduler` runs it.
#include <string>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/slurm/scheduler.hpp"

struct chatai_scheduler {
  explicit chatai_scheduler(chatai::slurm::deployment_config config) : sched(std::move(config)) {}

  chatai::slurm::scheduler sched;
};

using chatai::capi::copy_out;
using chatai::capi::fail;
using chatai::capi::guard;

extern "C" {

chatai_status chatai_scheduler_create(chatai_scheduler** out, const char* config_path) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || config_path == nullptr)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and config_path must not be NULL");
    *out = nullptr;
    auto config = chatai::slurm::load_deployment(config_path);
    if (!config) return fail(config.err());
    *out = new chatai_scheduler(std::move(*config));
    return CHATAI_OK;
  });
}

void chatai_scheduler_free(chatai_scheduler* scheduler) { delete scheduler; }

chatai_status chatai_scheduler_init(chatai_scheduler* scheduler) {
  return guard([&]() -> chatai_status {
    if (scheduler == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "scheduler must not be NULL");
    auto st = scheduler->sched.init();
    return st ? CHATAI_OK : fail(st.err());
  });
}

chatai_status chatai_scheduler_tick(chatai_scheduler* scheduler, char* report, size_t report_size, size_t* length) {
  return guard([&]() -> chatai_status {
    if (scheduler == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "scheduler must not be NULL");
    if (report == nullptr && report_size > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "report is NULL but report_size is not 0");
    auto done = scheduler->sched.tick();
    if (!done) return fail(done.err());
    return copy_out(chatai::slurm::to_json(*done), report, report_size, length);
  });
}

chatai_status chatai_scheduler_status(const chatai_scheduler* scheduler, char* buffer, size_t buffer_size,
                                      size_t* length) {
  return guard([&]() -> chatai_status {
    if (scheduler == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "scheduler must not be NULL");
    if (buffer == nullptr && buffer_size > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "buffer is NULL but buffer_size is not 0");
    auto st = scheduler->sched.status();
    if (!st) return fail(st.err());
    return copy_out(chatai::slurm::to_json(*st), buffer, buffer_size, length);
  });
}

}  // extern "C"
