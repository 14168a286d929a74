// Pieces shared by the gate's translation units.
#pragma once

#include <string_view>

#include "chatai/gate/config.hpp"

namespace chatai::gate::detail {

// Writes all of `data` to `fd`. A closed reader makes it return false (EPIPE) instead of
// raising SIGPIPE: the signal is blocked on this thread for the write and a pending one is
// taken back.
bool write_all(int fd, std::string_view data) noexcept;

// The `request` verb.
int handle_request(const gate_config& config, int in_fd, int out_fd);

// The `session` verb (version 2).
int handle_session(const gate_config& config, int in_fd, int out_fd);

}  // namespace chatai::gate::detail
