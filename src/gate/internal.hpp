// Pieces shared by the gate's translation units.
#pragma once

#include <memory>
#include <string_view>

#include "chatai/gate/config.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::gate::detail {

// Writes all of `data` to `fd`. A closed reader makes it return false (EPIPE) instead of
// raising SIGPIPE: the signal is blocked on this thread for the write and a pending one is
// taken back.
// A thread that keeps SIGPIPE blocked for good (the session's workers and the backend threads
// they start) sets sigpipe_blocked_here, and write_all then leaves the mask alone.
bool write_all(int fd, std::string_view data) noexcept;
extern thread_local bool sigpipe_blocked_here;

// The `request` verb.
int handle_request(const gate_config& config, int in_fd, int out_fd,
                   const std::shared_ptr<slurm::marker_pool>& markers = nullptr);

// The state folder check every verb begins with (slurm::check_state_dir); logs what is wrong.
bool state_dir_safe(const gate_config& config);

// The `request` verb once the state folder has been checked; exceptions are logged.
int run_request(const gate_config& config, int in_fd, int out_fd,
                const std::shared_ptr<slurm::marker_pool>& markers = nullptr) noexcept;

// The `session` verb (version 2).
int handle_session(const gate_config& config, int in_fd, int out_fd);

}  // namespace chatai::gate::detail
