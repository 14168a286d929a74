// The gate program's logic as a library: the verbs of gate protocol version 1 (keep-alive,
// status, request) run over two file descriptors, so that a site can build its own gate
// program, or run the gate in-process, with the same code as chatai-gate.
//
// A request, from the gate's side: it is read and checked; its in-flight marker is created,
// then the service's markers are counted, and beyond limits.max_in_flight_per_service the
// marker is dropped and the request refused with 503 (so it never counts as demand). A ready
// backend is picked (fewest in flight, breaker permitting) and the gate connects to it. Before
// anything secret goes out, the backend proves that it holds the job's key: the gate sends
// GET /chatai/proof with a fresh X-Chatai-Challenge (32 random bytes in hex) and no key and no
// body, and the backend answers hex(HMAC-SHA256(job key, "chatai-job-key-proof-v1\n" +
// challenge)); see chatai/core/key_proof.hpp. Only when the answer matches (compared in
// constant time) does the request go out, with "Authorization: Bearer <job key>" and its
// body, on the same connection, so that the port cannot change hands in between. A wrong or
// missing proof, or none within the connect timeout, is a failure of that backend: its
// breaker counts it, the log names the job (never the key), and the next backend is tried,
// or the client gets a 502. The cost is one more round trip on the cluster network.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/proto/wire.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::gate {

// The gate's commands (SSH_ORIGINAL_COMMAND, read with proto::parse_command) and its exit
// statuses, those of the protocol.
using verb = proto::command;
using proto::exit_incomplete;
using proto::exit_ok;
using proto::exit_usage;

// Runs one verb: reads the request (if any) from `in_fd`, writes the answer to `out_fd`.
// First the state folder is checked (slurm::check_state_dir): a symbolic link among its
// folders, or one owned by another user or writable by group or others, makes every verb
// return exit_usage with the reason logged, having done nothing.
//
// keep-alive writes "OK\n", then runs the tick command of the config when the last tick is
// older than tick.interval: the time is kept in tick.stamp, flock'ed without waiting, so two
// ticks never run at once and a caller that finds one running does not wait for it. The tick
// runs with tick_environment() only.
// status writes one JSON document: services, models, backends by state, open breakers, and
// requests in flight.
// request reads one request (see request.hpp) and writes an HTTP/1.1 response. Refused
// requests get an OpenAI-style error response (400, 404, 408, 413; 503 with Retry-After when
// the service has max_in_flight_per_service requests in flight already (code
// too_many_requests_in_flight) or no backend is ready, after asking for a start when the
// service scales from zero; 502 when every backend tried failed, its key proof included). The
// backend's response is copied as it arrives, re-framed with chunked encoding so that a
// cut-off body shows. The client must keep `in_fd` open until the
// response ends: end-of-file or any byte on it, or a failed write to `out_fd`, means the client
// has gone away, and the backend request is closed. The call then returns at once; in a
// process that goes on running, the backend connection is closed when its next bytes arrive
// or its deadline passes.
//
// session (gate protocol version 2, chatai/proto/frames.hpp) writes a hello frame, then runs
// the requests of `open` frames, each on a thread of its own exactly as `request` runs one
// (the same limits and answers; the state folder checked at most once a second, and a request
// that finds it unsafe ends with exit_usage and no answer, as the gate program does), at most session.max_requests at once
// (beyond: 503, code session_full), each response within its client's window. It sends
// goaway after session.max_session_requests requests or session.max_lifetime, and when no
// request was in flight for session.idle_timeout, and still runs what the client opens in
// the next 10 s (opened before it read the goaway; later ones get 503). It returns when the
// client leaves (end-of-file on `in_fd`; requests still in flight are cancelled), or 10 s
// after a goaway once nothing is in flight. A frame the protocol does not allow cancels every request and returns
// exit_usage.
//
// Writes to a closed `out_fd` fail with EPIPE instead of raising SIGPIPE.
// Thread safety: safe to call from several threads at once with distinct descriptors.
int run(const gate_config& config, verb v, int in_fd, int out_fd);

// An HTTP/1.1 response with an OpenAI-style error body ({"error":{"message","type","code"}})
// and Content-Length; 503 responses carry Retry-After. `code` replaces the status's usual
// code (404 model_not_found, 502 backend_failed, 503 no_backend_ready, ...) when not empty.
std::string error_response(int http_status, std::string_view message, int retry_after_s = 0,
                           std::string_view code = {});

// The whole environment of the scheduler tick: PATH=/usr/local/bin:/usr/bin:/bin, HOME, USER
// and LOGNAME of the effective user (left out when it has no passwd entry), LANG=C.UTF-8.
// Nothing of the gate's own environment passes, which holds what sshd set and what the
// client sent (SSH_ORIGINAL_COMMAND, SSH_CONNECTION, variables accepted with AcceptEnv).
std::map<std::string, std::string> tick_environment();

// The status document (what `status` writes, without its newline).
result<std::string> status_json(const gate_config& config);

// The ready backend of `service` to try next: its breaker lets a request through, it is not in
// `tried`, and it has the fewest requests in flight. Ties go to the first in the registry, or,
// for a request with an affinity key, to the backend that key ranks first (rendezvous hashing
// of key and job): a conversation's turns meet its cached prefix while loads are equal, and a
// backend leaving moves only the conversations it had. nullptr when there is none. Asking a
// breaker may turn it half-open (one probe).
result<const slurm::backend_entry*> pick_backend(const gate_config& config, const slurm::registry& reg,
                                                 std::string_view service, const slurm::inflight_counts& counts,
                                                 const std::vector<std::string>& tried, std::string_view affinity = {});

}  // namespace chatai::gate
