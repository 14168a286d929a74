// The SSH transport: libssh sessions driven by one I/O thread through libssh's event loop,
// connections made on short-lived threads; requests multiplexed over one session channel per
// SSH session (gate protocol version 2), or one channel per request where the gate speaks
// version 1 only.
#include "chatai/tunnel/ssh_transport.hpp"

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <poll.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "chatai/core/log.hpp"
#include "chatai/proto/frames.hpp"
#include "stream_state.hpp"

namespace chatai::tunnel {

using detail::clock;
using detail::stream_state;

namespace {

constexpr std::size_t read_chunk = 64 * 1024;
constexpr auto close_grace = std::chrono::seconds(10);

struct session_deleter {
  void operator()(ssh_session s) const {
    ssh_disconnect(s);
    ssh_free(s);
  }
};
using session_ptr = std::unique_ptr<ssh_session_struct, session_deleter>;

struct key_deleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using key_ptr = std::unique_ptr<ssh_key_struct, key_deleter>;

result<key_ptr> load_key(const ssh_options& o) {
  ssh_key key = nullptr;
  const int rc = ssh_pki_import_privkey_file(o.key_file.c_str(), o.passphrase.empty() ? nullptr : o.passphrase.c_str(),
                                             nullptr, nullptr, &key);
  if (rc != SSH_OK || !key)
    return error(errc::permission_denied,
                 "cannot read the private key " + o.key_file + " (missing, unreadable or wrong passphrase)");
  return key_ptr(key);
}

// Connects, checks the host key and authenticates, blocking; returns a non-blocking session.
result<session_ptr> connect_session(const ssh_options& o) {
  const std::string where = o.user + "@" + o.host + ":" + std::to_string(o.port);
  session_ptr s(ssh_new());
  if (!s) return error(errc::resource_exhausted, "ssh_new failed");
  const long timeout_s = std::max<long>(1, static_cast<long>((o.connect_timeout.count() + 999) / 1000));
  const int process_config = 0;
  const int nodelay = 1;  // requests and answers are small: Nagle's algorithm would hold them back
  const unsigned port = static_cast<unsigned>(o.port);
  if (ssh_options_set(s.get(), SSH_OPTIONS_HOST, o.host.c_str()) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_PORT, &port) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_USER, o.user.c_str()) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_KNOWNHOSTS, o.known_hosts.c_str()) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_GLOBAL_KNOWNHOSTS, o.known_hosts.c_str()) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_PROCESS_CONFIG, &process_config) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_NODELAY, &nodelay) != SSH_OK ||
      ssh_options_set(s.get(), SSH_OPTIONS_TIMEOUT, &timeout_s) != SSH_OK)
    return error(errc::invalid_argument, where + ": " + ssh_get_error(s.get()));
  if (ssh_connect(s.get()) != SSH_OK)
    return error(errc::unavailable, "cannot connect to " + where + ": " + ssh_get_error(s.get()));

  switch (ssh_session_is_known_server(s.get())) {
    case SSH_KNOWN_HOSTS_OK:
      break;
    case SSH_KNOWN_HOSTS_CHANGED:
      return error(errc::permission_denied, "the host key of " + where + " differs from the one in " + o.known_hosts +
                                                ": refused (the server was replaced, or someone is in between)");
    case SSH_KNOWN_HOSTS_OTHER:
      return error(errc::permission_denied, "the host key of " + where + " is of another type than the one in " +
                                                o.known_hosts + ": refused");
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      if (!o.trust_on_first_use)
        return error(errc::permission_denied,
                     "the host key of " + where + " is not in " + o.known_hosts + ": refused (add it to the file)");
      if (ssh_session_update_known_hosts(s.get()) != SSH_OK)
        return error(errc::io_error, "cannot add the host key of " + where + " to " + o.known_hosts);
      log::warn("tunnel: trusted a new host key on first use", {{"server", where}, {"known_hosts", o.known_hosts}});
      break;
    case SSH_KNOWN_HOSTS_ERROR:
    default:
      return error(errc::io_error, "cannot check the host key of " + where + ": " + ssh_get_error(s.get()));
  }

  auto key = load_key(o);
  if (!key) return std::move(key).err();
  if (ssh_userauth_publickey(s.get(), nullptr, key->get()) != SSH_AUTH_SUCCESS)
    return error(errc::permission_denied, "authentication to " + where + " with " + o.key_file +
                                              " failed: " + ssh_get_error(s.get()));
  ssh_set_blocking(s.get(), 0);
  return s;
}

}  // namespace

struct ssh_transport::impl {
  enum class phase { opening, exec, running, closing };

  struct session_slot;

  // One channel: of a request while it runs, then (closing) until the server closed it too,
  // since sshd counts it against MaxSessions until then.
  struct channel_ctx {
    session_slot* slot = nullptr;
    ssh_channel channel = nullptr;
    std::shared_ptr<stream_state> req;
    phase ph = phase::opening;
    bool exit_seen = false;
    int exit_status = -1;
    bool remote_closed = false;
    bool opened = false;  // the server accepted the channel
    clock::time_point closing_since{};
    ssh_channel_callbacks_struct callbacks{};
  };

  // --- version 2: one session channel per SSH session, many requests on it ----------------

  // A request on a session channel.
  struct mux_req {
    std::shared_ptr<stream_state> req;
    std::uint64_t open_at = 0;    // where its open frame starts in the channel's output
    std::uint64_t granted = 0;    // response bytes the gate may send
    std::uint64_t received = 0;   // response bytes the gate sent
    std::string held;             // received beyond the caller's window, not yet delivered
    std::optional<int> gate_end;  // the end frame's status, once it came
  };

  // The session channel (`session` command): hello first, then frames. After the gate's
  // goaway it takes no new requests, and a fresh one is opened beside it.
  struct mux_ctx {
    session_slot* slot = nullptr;
    ssh_channel channel = nullptr;
    enum class stage { opening, exec, hello, running, draining, closing } st = stage::opening;
    proto::frame_reader reader;
    proto::hello hello;
    std::string out;             // frames not yet written to the channel
    std::uint64_t out_base = 0;  // bytes written to the channel before out's first byte
    std::uint32_t next_id = 1;
    std::map<std::uint32_t, mux_req> reqs;
    bool exit_seen = false;
    int exit_status = -1;
    bool remote_closed = false;
    bool opened = false;
    clock::time_point since{};     // of the stage (hello: its deadline counts from here)
    std::string stderr_text;       // the first bytes the gate wrote on stderr
    ssh_channel_callbacks_struct callbacks{};
  };

  struct session_slot {
    impl* owner = nullptr;
    int index = 0;
    enum class state { down, connecting, up } st = state::down;
    session_ptr session;
    std::list<channel_ctx> channels;
    std::list<mux_ctx> muxes;  // the session channel in use, and older ones draining
    // Whether the gate speaks version 2 on this connection: unknown until a session channel
    // got its hello or was refused; a refusal is retried after v2_retry_at.
    enum class v2_state { unknown, yes, no } v2 = v2_state::unknown;
    clock::time_point v2_retry_at{};
    bool full = false;  // the server refused a channel: no new one until one closes
    clock::time_point retry_at{};
    std::chrono::milliseconds backoff{};
    std::thread connector;
  };

  ssh_options opts;
  std::shared_ptr<detail::waker> wake;
  ssh_event event = nullptr;
  std::vector<std::unique_ptr<session_slot>> slots;
  std::thread io;
  std::mt19937 rng{std::random_device{}()};

  // Shared with other threads, under `mutex`.
  mutable std::mutex mutex;
  std::condition_variable connected_cv;
  bool stopping = false;
  std::deque<std::shared_ptr<stream_state>> submitted;
  std::vector<std::pair<int, result<session_ptr>>> connect_results;
  transport_health health;
  std::optional<error> connect_error;  // the last failed connection attempt's, until one succeeds

  // I/O thread only.
  std::deque<std::shared_ptr<stream_state>> pending;
  std::optional<error> auth_failure;  // the last connection attempt was refused for good
  clock::time_point next_keep_alive{};
  bool woken = false;  // the wake-up descriptor fired during this round of the loop
  std::shared_ptr<stream_state> keep_alive_req;

  ~impl() {
    if (event) ssh_event_free(event);
  }

  // --- connecting -------------------------------------------------------------------------

  void start_connect(session_slot& slot) {
    slot.st = session_slot::state::connecting;
    if (slot.connector.joinable()) slot.connector.join();
    slot.connector = std::thread([this, index = slot.index] {
      detail::block_sigpipe();
      auto r = connect_session(opts);
      std::lock_guard lock(mutex);
      connect_results.emplace_back(index, std::move(r));
      wake->wake();
    });
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::uniform_real_distribution<double> d(0.5, 1.0);
    return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(base.count()) * d(rng)));
  }

  void schedule_retry(session_slot& slot) {
    slot.st = session_slot::state::down;
    slot.backoff = slot.backoff.count() == 0 ? opts.reconnect_initial : std::min(slot.backoff * 2, opts.reconnect_max);
    slot.retry_at = clock::now() + jittered(slot.backoff);
  }

  void collect_connections() {
    std::vector<std::pair<int, result<session_ptr>>> results;
    {
      std::lock_guard lock(mutex);
      results.swap(connect_results);
    }
    for (auto& [index, r] : results) {
      auto& slot = *slots[static_cast<std::size_t>(index)];
      if (slot.connector.joinable()) slot.connector.join();
      if (!r) {
        log::warn("tunnel: connection failed", {{"error", r.err().message()}});
        if (r.err().code() == errc::permission_denied) auth_failure = r.err();
        {
          std::lock_guard lock(mutex);
          health.last_error = r.err().message();
          connect_error = r.err();
        }
        schedule_retry(slot);
        continue;
      }
      slot.session = std::move(*r);
      if (ssh_event_add_session(event, slot.session.get()) != SSH_OK) {
        slot.session.reset();
        set_last_error("cannot add a session to the event loop");
        schedule_retry(slot);
        continue;
      }
      slot.st = session_slot::state::up;
      slot.backoff = {};
      slot.full = false;
      auth_failure.reset();
      log::debug("tunnel: session up", {{"session", std::to_string(slot.index)}});
      {
        std::lock_guard lock(mutex);
        ++health.sessions_up;
        connect_error.reset();
      }
      connected_cv.notify_all();
    }
    if (!results.empty()) connected_cv.notify_all();
  }

  void set_last_error(std::string message) {
    std::lock_guard lock(mutex);
    health.last_error = std::move(message);
  }

  // A broken session: requests that sent nothing go back to the queue, the others end.
  void break_session(session_slot& slot, const std::string& why) {
    log::warn("tunnel: session lost", {{"session", std::to_string(slot.index)}, {"reason", why}});
    std::vector<std::shared_ptr<stream_state>> retry;
    for (auto& c : slot.channels) {
      if (!c.req || c.req->ended()) continue;
      c.req->session_ = -1;
      if (c.req->written_ == 0 && !c.req->cancel_requested())
        retry.push_back(c.req);
      else
        c.req->finish(error(errc::unavailable, "the SSH session broke during the request: " + why));
    }
    for (auto it = retry.rbegin(); it != retry.rend(); ++it) pending.push_front(*it);
    for (auto& m : slot.muxes) fail_mux_requests(m, why);
    // ssh_free frees the channels with the session.
    slot.channels.clear();
    slot.muxes.clear();
    slot.v2 = session_slot::v2_state::unknown;
    ssh_event_remove_session(event, slot.session.get());
    slot.session.reset();
    {
      std::lock_guard lock(mutex);
      --health.sessions_up;
      health.last_error = why;
    }
    schedule_retry(slot);
  }

  // --- channels ---------------------------------------------------------------------------

  // libssh handles the packets of every session of the event in any of its calls (its polls
  // take every descriptor), so what arrives for a channel already driven this round is noted:
  // the loop then goes round again. The data stays in libssh's buffer for the reads.
  template <class Ctx>
  static int on_data(ssh_session, ssh_channel, void*, std::uint32_t, int, void* user) {
    static_cast<Ctx*>(user)->slot->owner->woken = true;
    return 0;
  }

  // The channel's end, for a request's channel and a session channel alike.
  template <class Ctx>
  static void on_exit_status(ssh_session, ssh_channel, int status, void* user) {
    auto* c = static_cast<Ctx*>(user);
    c->exit_seen = true;
    c->exit_status = status;
    c->slot->owner->woken = true;
  }

  template <class Ctx>
  static void on_close(ssh_session, ssh_channel, void* user) {
    auto* c = static_cast<Ctx*>(user);
    c->remote_closed = true;
    c->slot->owner->woken = true;
  }

  template <class Ctx>
  static void on_exit_signal(ssh_session, ssh_channel, const char*, int, const char*, const char*, void* user) {
    auto* c = static_cast<Ctx*>(user);
    c->exit_seen = true;
    c->exit_status = 255;
    c->slot->owner->woken = true;
  }

  bool open_channel(session_slot& slot, std::shared_ptr<stream_state> req) {
    ssh_channel ch = ssh_channel_new(slot.session.get());
    if (!ch) return false;
    auto& c = slot.channels.emplace_back();
    c.slot = &slot;
    c.channel = ch;
    c.req = std::move(req);
    c.req->session_ = slot.index;
    ssh_callbacks_init(&c.callbacks);
    c.callbacks.userdata = &c;
    c.callbacks.channel_exit_status_function = &impl::on_exit_status<channel_ctx>;
    c.callbacks.channel_exit_signal_function = &impl::on_exit_signal<channel_ctx>;
    c.callbacks.channel_close_function = &impl::on_close<channel_ctx>;
    c.callbacks.channel_data_function = &impl::on_data<channel_ctx>;
    ssh_add_channel_callbacks(ch, &c.callbacks);
    return true;
  }

  static int open_count(const session_slot& slot) { return static_cast<int>(slot.channels.size() + slot.muxes.size()); }

  // Requests go onto a session channel where the gate speaks version 2, and wait for one while
  // that is not known yet; the other verbs, and requests where it speaks only version 1, take
  // a channel each. Each kind keeps its order.
  void assign_pending() {
    bool requests_blocked = false, others_blocked = false;
    for (auto it = pending.begin(); it != pending.end() && !(requests_blocked && others_blocked);) {
      auto& req = *it;
      if (req->ended()) {
        it = pending.erase(it);
        continue;
      }
      const bool is_request = req->verb_ == verb::request;
      if (is_request ? requests_blocked : others_blocked) {
        ++it;
        continue;
      }
      if (is_request) {
        if (mux_ctx* m = mux_with_room()) {
          attach(*m, req);
          it = pending.erase(it);
          continue;
        }
      }
      session_slot* best = nullptr;
      for (auto& s : slots)
        if (s->st == session_slot::state::up && !s->full && open_count(*s) < opts.channels_per_session &&
            (!is_request || s->v2 == session_slot::v2_state::no) && (!best || open_count(*s) < open_count(*best)))
          best = s.get();
      if (!best || !open_channel(*best, req)) {
        (is_request ? requests_blocked : others_blocked) = true;
        ++it;
        continue;
      }
      it = pending.erase(it);
    }
  }

  // Starts closing a channel; it stays counted until the server has closed it too.
  void begin_close(channel_ctx& c) {
    if (c.ph == phase::closing) return;
    c.ph = phase::closing;
    c.closing_since = clock::now();
    if (c.req) c.req->session_ = -1;
    c.req.reset();
    ssh_channel_close(c.channel);
  }

  // Moves one channel on as far as it goes without blocking. Returns false when the session
  // failed.
  bool drive(channel_ctx& c, clock::time_point now) {
    auto& req = c.req;
    if (c.ph != phase::closing && req) {
      if (req->cancel_requested()) {
        req->finish(error(errc::cancelled, "the request was cancelled"));
        begin_close(c);
        return true;
      }
      if (req->expired(now)) {
        req->finish(req->timeout_error());
        if (req->verb_ == verb::keep_alive) return false;
        begin_close(c);
        return true;
      }
    }
    switch (c.ph) {
      case phase::opening: {
        const int rc = ssh_channel_open_session(c.channel);
        if (rc == SSH_AGAIN) return true;
        if (rc != SSH_OK) {
          if (ssh_get_status(c.slot->session.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR)) return false;
          // The server refused one more channel (MaxSessions): retry elsewhere or later.
          c.slot->full = true;
          pending.push_front(req);
          req->session_ = -1;
          req.reset();
          c.ph = phase::closing;
          c.remote_closed = true;
          return true;
        }
        c.opened = true;
        c.ph = phase::exec;
        [[fallthrough]];
      }
      case phase::exec: {
        const int rc = ssh_channel_request_exec(c.channel, std::string(proto::command_name(req->verb_)).c_str());
        // The input follows the exec request at once, without waiting for sshd's reply (as the
        // ssh program does): sshd reads them in order, so the gate finds its stdin waiting, and
        // a request saves one round of scheduling both sides.
        if (rc == SSH_AGAIN) return write_input(c);
        if (rc != SSH_OK) {
          if (ssh_get_status(c.slot->session.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR)) return false;
          req->finish(error(errc::unavailable, "the server refused to run the gate"));
          begin_close(c);
          return true;
        }
        c.ph = phase::running;
        [[fallthrough]];
      }
      case phase::running:
        return drive_running(c);
      case phase::closing:
        return true;
    }
    return true;
  }

  // Sends what the channel's window takes of the request's input, then end-of-file for the verbs
  // other than request. Returns false when the session failed.
  static bool write_input(channel_ctx& c) {
    auto& req = c.req;
    while (req->written_ < req->input_.size()) {
      const std::uint32_t room = ssh_channel_window_size(c.channel);
      if (room == 0) break;
      const auto n = std::min<std::size_t>({req->input_.size() - req->written_, room, 32 * 1024});
      const int rc = ssh_channel_write(c.channel, req->input_.data() + req->written_, static_cast<std::uint32_t>(n));
      if (rc == SSH_ERROR) return false;
      if (rc <= 0) break;
      req->written_ += static_cast<std::size_t>(rc);
    }
    if (req->verb_ != verb::request && !req->input_closed_ && req->written_ == req->input_.size()) {
      if (ssh_channel_send_eof(c.channel) == SSH_ERROR) return false;
      req->input_closed_ = true;
    }
    return true;
  }

  bool drive_running(channel_ctx& c) {
    auto& req = c.req;
    if (!write_input(c)) return false;
    char buf[read_chunk];
    for (;;) {
      const int n = ssh_channel_read_nonblocking(c.channel, buf, sizeof buf, 1);
      if (n == SSH_ERROR) return false;
      if (n <= 0) break;
      if (req->stderr_.size() < detail::max_stderr)
        req->stderr_.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), detail::max_stderr - req->stderr_.size()));
    }
    while (req->may_read() && !req->ended()) {
      const int n = ssh_channel_read_nonblocking(c.channel, buf, sizeof buf, 0);
      if (n == SSH_ERROR) return false;
      if (n <= 0) break;
      req->deliver(std::string_view(buf, static_cast<std::size_t>(n)));
    }
    if (req->ended()) {
      begin_close(c);
      return true;
    }
    if (ssh_channel_is_eof(c.channel) && (c.exit_seen || c.remote_closed)) {
      req->finish(detail::gate_outcome(req->verb_, c.exit_seen ? c.exit_status : 255, req->stderr_));
      begin_close(c);
    }
    return true;
  }

  void drive_session(session_slot& slot, clock::time_point now) {
    if (slot.st != session_slot::state::up) return;
    if (!ssh_is_connected(slot.session.get()) ||
        (ssh_get_status(slot.session.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
      break_session(slot, std::string("connection closed: ") + ssh_get_error(slot.session.get()));
      return;
    }
    for (auto it = slot.channels.begin(); it != slot.channels.end();) {
      if (!drive(*it, now)) {
        break_session(slot, std::string("session error: ") + ssh_get_error(slot.session.get()));
        return;
      }
      if (it->ph == phase::closing && (it->remote_closed || now - it->closing_since > close_grace)) {
        ssh_channel_free(it->channel);
        if (it->opened) slot.full = false;
        it = slot.channels.erase(it);
      } else {
        ++it;
      }
    }
    ensure_mux(slot, now);
    for (auto it = slot.muxes.begin(); it != slot.muxes.end();) {
      if (!drive_mux(*it, now)) {
        break_session(slot, std::string("session error: ") + ssh_get_error(slot.session.get()));
        return;
      }
      if (it->st == mux_ctx::stage::closing && (it->remote_closed || now - it->since > close_grace)) {
        ssh_channel_free(it->channel);
        if (it->opened) slot.full = false;
        it = slot.muxes.erase(it);
      } else {
        ++it;
      }
    }
  }

  // --- version 2 --------------------------------------------------------------------------

  static bool mux_current(const mux_ctx& m) { return m.st != mux_ctx::stage::draining && m.st != mux_ctx::stage::closing; }

  // Opens a session channel on `slot` when the gate may speak version 2 and none is in use.
  void ensure_mux(session_slot& slot, clock::time_point now) {
    if (slot.v2 == session_slot::v2_state::no) {
      if (now < slot.v2_retry_at) return;
      slot.v2 = session_slot::v2_state::unknown;
    }
    if (slot.full || open_count(slot) >= opts.channels_per_session) return;
    if (std::any_of(slot.muxes.begin(), slot.muxes.end(), [](const mux_ctx& m) { return mux_current(m); })) return;
    ssh_channel ch = ssh_channel_new(slot.session.get());
    if (!ch) return;
    auto& m = slot.muxes.emplace_back();
    m.slot = &slot;
    m.channel = ch;
    m.since = now;
    ssh_callbacks_init(&m.callbacks);
    m.callbacks.userdata = &m;
    m.callbacks.channel_exit_status_function = &impl::on_exit_status<mux_ctx>;
    m.callbacks.channel_exit_signal_function = &impl::on_exit_signal<mux_ctx>;
    m.callbacks.channel_close_function = &impl::on_close<mux_ctx>;
    m.callbacks.channel_data_function = &impl::on_data<mux_ctx>;
    ssh_add_channel_callbacks(ch, &m.callbacks);
  }

  // The gate does not speak version 2 here (or not now): requests take a channel each.
  void refuse_v2(session_slot& slot, std::string_view why) {
    if (slot.v2 != session_slot::v2_state::no)
      log::info("tunnel: the gate has no session command here; one channel per request",
                {{"session", std::to_string(slot.index)}, {"reason", std::string(why)}});
    slot.v2 = session_slot::v2_state::no;
    slot.v2_retry_at = clock::now() + std::chrono::seconds(30);
  }

  // Requests of a session channel that ended early: the ones the gate cannot have seen go back
  // to the queue, the others end with errc::unavailable.
  void fail_mux_requests(mux_ctx& m, const std::string& why) {
    std::vector<std::shared_ptr<stream_state>> retry;
    for (auto& [id, mr] : m.reqs) {
      if (mr.req->ended()) continue;
      mr.req->session_ = -1;
      if (m.out_base <= mr.open_at && !mr.req->cancel_requested())
        retry.push_back(mr.req);
      else
        mr.req->finish(error(errc::unavailable, "the gate's session ended during the request: " + why));
    }
    m.reqs.clear();
    for (auto it = retry.rbegin(); it != retry.rend(); ++it) pending.push_front(*it);
  }

  void close_mux(mux_ctx& m, const std::string& why) {
    if (m.st == mux_ctx::stage::closing) return;
    fail_mux_requests(m, why);
    m.st = mux_ctx::stage::closing;
    m.since = clock::now();
    ssh_channel_close(m.channel);
  }

  // The least busy session channel with room for one more request, if any.
  mux_ctx* mux_with_room() {
    mux_ctx* best = nullptr;
    for (auto& s : slots) {
      if (s->st != session_slot::state::up || s->v2 != session_slot::v2_state::yes) continue;
      for (auto& m : s->muxes)
        if (m.st == mux_ctx::stage::running && m.reqs.size() < m.hello.max_requests &&
            (!best || m.reqs.size() < best->reqs.size()))
          best = &m;
    }
    return best;
  }

  void attach(mux_ctx& m, std::shared_ptr<stream_state> req) {
    const std::uint32_t id = m.next_id++;
    auto& mr = m.reqs[id];
    mr.open_at = m.out_base + m.out.size();
    mr.granted = m.hello.window;
    const std::string_view input = req->input_;
    const std::size_t first = std::min<std::size_t>(input.size(), m.hello.max_payload);
    proto::append_frame(m.out, proto::frame_kind::open, id, input.substr(0, first));
    proto::append_frames(m.out, proto::frame_kind::data, id, input.substr(first), m.hello.max_payload);
    req->session_ = m.slot->index;
    req->written_ = input.size();
    mr.req = std::move(req);
  }

  chatai::status on_mux_frame(mux_ctx& m, const proto::frame_view& f) {
    using proto::frame_kind;
    if (m.st == mux_ctx::stage::hello) {
      if (f.kind != frame_kind::hello) return error(errc::parse_error, "the gate's first frame is not its hello");
      auto h = proto::parse_hello(f.payload);
      if (!h) return std::move(h).err();
      m.hello = *h;
      m.st = mux_ctx::stage::running;
      m.slot->v2 = session_slot::v2_state::yes;
      return {};
    }
    switch (f.kind) {
      case frame_kind::goaway:
        if (m.st == mux_ctx::stage::running) m.st = mux_ctx::stage::draining;
        return {};
      case frame_kind::data: {
        const auto it = m.reqs.find(f.id);
        if (it == m.reqs.end()) return {};  // a request that ended on this side
        auto& mr = it->second;
        mr.received += f.payload.size();
        if (mr.received > mr.granted) return error(errc::parse_error, "the gate sent beyond a request's window");
        if (mr.held.empty() && mr.req->may_read()) mr.req->deliver(f.payload);
        else mr.held.append(f.payload);
        return {};
      }
      case frame_kind::end: {
        const auto it = m.reqs.find(f.id);
        if (it != m.reqs.end()) it->second.gate_end = proto::end_status(f);
        return {};
      }
      default:
        return error(errc::parse_error, "a frame only the client sends");
    }
  }

  // Moves one request of a session channel on. Returns false when it is over on this side.
  bool drive_mux_request(mux_ctx& m, std::uint32_t id, mux_req& mr, clock::time_point now) {
    auto& req = mr.req;
    if (req->ended()) return false;
    if (req->cancel_requested() || req->expired(now)) {
      req->finish(req->cancel_requested() ? error(errc::cancelled, "the request was cancelled") : req->timeout_error());
      if (!mr.gate_end) proto::append_frame(m.out, proto::frame_kind::cancel, id);
      return false;
    }
    while (!mr.held.empty() && req->may_read()) {
      const std::size_t n = std::min<std::size_t>(mr.held.size(), read_chunk);
      req->deliver(std::string_view(mr.held).substr(0, n));
      mr.held.erase(0, n);
    }
    if (mr.held.empty() && mr.gate_end) {
      req->finish(detail::gate_outcome(verb::request, *mr.gate_end, {}));
      return false;
    }
    if (!mr.gate_end) {
      // The gate may send as far ahead as the caller's window allows, or one hello window.
      const std::uint64_t target =
          req->window() > 0 ? req->consumed_bytes() + req->window() : mr.received + m.hello.window;
      const std::uint64_t step = std::max<std::uint64_t>(
          1, std::min<std::uint64_t>(m.hello.window, req->window() > 0 ? req->window() : m.hello.window) / 2);
      if (target >= mr.granted + step) {
        const auto credit = static_cast<std::uint32_t>(std::min<std::uint64_t>(target - mr.granted, 1u << 30));
        proto::append_window(m.out, id, credit);
        mr.granted += credit;
      }
    }
    return true;
  }

  // Writes what the channel's window takes of the frames waiting. Returns false when the SSH
  // session failed.
  static bool write_mux(mux_ctx& m) {
    while (!m.out.empty()) {
      const std::uint32_t room = ssh_channel_window_size(m.channel);
      if (room == 0) break;
      const auto n = std::min<std::size_t>({m.out.size(), room, 32 * 1024});
      const int rc = ssh_channel_write(m.channel, m.out.data(), static_cast<std::uint32_t>(n));
      if (rc == SSH_ERROR) return false;
      if (rc <= 0) break;
      m.out.erase(0, static_cast<std::size_t>(rc));
      m.out_base += static_cast<std::uint64_t>(rc);
    }
    return true;
  }

  // Moves one session channel on as far as it goes without blocking. Returns false when the
  // SSH session failed.
  bool drive_mux(mux_ctx& m, clock::time_point now) {
    using stage = mux_ctx::stage;
    auto& slot = *m.slot;
    switch (m.st) {
      case stage::opening: {
        const int rc = ssh_channel_open_session(m.channel);
        if (rc == SSH_AGAIN) return true;
        if (rc != SSH_OK) {
          if (ssh_get_status(slot.session.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR)) return false;
          slot.full = true;  // MaxSessions: try again when a channel closes
          m.st = stage::closing;
          m.remote_closed = true;
          return true;
        }
        m.opened = true;
        m.st = stage::exec;
        [[fallthrough]];
      }
      case stage::exec: {
        const int rc = ssh_channel_request_exec(m.channel, std::string(proto::command_name(verb::session)).c_str());
        if (rc == SSH_AGAIN) return true;
        if (rc != SSH_OK) {
          if (ssh_get_status(slot.session.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR)) return false;
          refuse_v2(slot, "the server refused to run the session command");
          close_mux(m, "refused");
          return true;
        }
        m.st = stage::hello;
        m.since = now;
        break;
      }
      case stage::closing:
        return true;
      default: break;
    }

    // Writing first: libssh reads what has arrived while it writes, and that is read below,
    // not left in its buffer until the next wake-up.
    if (!write_mux(m)) return false;
    char buf[read_chunk];
    for (;;) {  // the gate's stderr: only kept for the log when the channel ends
      const int n = ssh_channel_read_nonblocking(m.channel, buf, sizeof buf, 1);
      if (n == SSH_ERROR) return false;
      if (n <= 0) break;
      if (m.stderr_text.size() < detail::max_stderr)
        m.stderr_text.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), detail::max_stderr - m.stderr_text.size()));
    }
    for (;;) {
      const int n = ssh_channel_read_nonblocking(m.channel, buf, sizeof buf, 0);
      if (n == SSH_ERROR) return false;
      if (n <= 0) break;
      auto fed = m.reader.feed(std::string_view(buf, static_cast<std::size_t>(n)),
                               [&](const proto::frame_view& f) { return on_mux_frame(m, f); });
      if (!fed) {
        log::warn("tunnel: the gate broke the session protocol", {{"session", std::to_string(slot.index)},
                                                                 {"error", fed.err().message()}});
        if (m.st == stage::hello) refuse_v2(slot, fed.err().message());
        close_mux(m, fed.err().message());
        return true;
      }
    }
    if (m.st == stage::hello && now - m.since > opts.connect_timeout) {
      refuse_v2(slot, "no hello in time");
      close_mux(m, "no hello in time");
      return true;
    }
    for (auto it = m.reqs.begin(); it != m.reqs.end();)
      it = drive_mux_request(m, it->first, it->second, now) ? std::next(it) : m.reqs.erase(it);
    if (!write_mux(m)) return false;

    if (ssh_channel_is_eof(m.channel) && (m.exit_seen || m.remote_closed)) {
      std::string why = "the gate's session exited with status " + std::to_string(m.exit_status);
      while (!m.stderr_text.empty() && (m.stderr_text.back() == '\n' || m.stderr_text.back() == '\r'))
        m.stderr_text.pop_back();
      if (!m.stderr_text.empty()) why += ": " + m.stderr_text;
      if (m.st == stage::hello) refuse_v2(slot, why);
      else if (!m.reqs.empty()) log::warn("tunnel: the gate's session ended", {{"session", std::to_string(slot.index)}, {"reason", why}});
      close_mux(m, why);
      return true;
    }
    if (m.st == stage::draining && m.reqs.empty() && m.out.empty()) close_mux(m, "drained");
    return true;
  }

  // --- the loop ---------------------------------------------------------------------------

  void take_submitted() {
    std::deque<std::shared_ptr<stream_state>> in;
    {
      std::lock_guard lock(mutex);
      in.swap(submitted);
    }
    for (auto& r : in) {
      if (pending.size() >= static_cast<std::size_t>(opts.max_queued))
        r->finish(error(errc::resource_exhausted, "the tunnel's queue is full"));
      else
        pending.push_back(std::move(r));
    }
  }

  void expire_pending(clock::time_point now) {
    for (auto it = pending.begin(); it != pending.end();) {
      auto& r = *it;
      if (r->cancel_requested())
        r->finish(error(errc::cancelled, "the request was cancelled"));
      else if (auth_failure)
        r->finish(*auth_failure);
      else if (r->expired(now))
        r->finish(error(errc::timeout, "no SSH session became available before the first-byte timeout" +
                                           (health_error().empty() ? std::string() : ": " + health_error())));
      it = r->ended() ? pending.erase(it) : it + 1;
    }
  }

  std::string health_error() {
    std::lock_guard lock(mutex);
    return health.last_error;
  }

  void run_keep_alive(clock::time_point now) {
    if (opts.keep_alive_interval.count() == 0 || now < next_keep_alive) return;
    if (keep_alive_req && !keep_alive_req->ended()) return;
    next_keep_alive = now + opts.keep_alive_interval;
    keep_alive_req = make_keep_alive_request(opts.keep_alive_timeout, mutex, health, wake);
    pending.push_front(keep_alive_req);
  }

  int poll_timeout_ms(clock::time_point now) {
    auto next = now + std::chrono::milliseconds(500);
    for (auto& s : slots) {
      if (s->st == session_slot::state::down) next = std::min(next, s->retry_at);
      for (auto& c : s->channels)
        if (c.req && !c.req->ended()) next = std::min(next, c.req->deadline());
      for (auto& m : s->muxes) {
        if (m.st == mux_ctx::stage::hello) next = std::min(next, m.since + opts.connect_timeout);
        for (auto& [id, mr] : m.reqs) next = std::min(next, mr.req->deadline());
      }
    }
    for (auto& r : pending) next = std::min(next, r->deadline());
    if (opts.keep_alive_interval.count() > 0) next = std::min(next, next_keep_alive);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    return static_cast<int>(std::clamp<long long>(ms, 0, 500));
  }

  // libssh polls every descriptor of the event, the wake-up one included, inside its reads and
  // writes too: a wake-up taken there is remembered, so that the loop goes round again instead
  // of sleeping on a request (or a cancel, or consumed window) it has not seen yet.
  static int on_wake(socket_t, int, void* user) {
    auto* self = static_cast<impl*>(user);
    self->wake->drain();
    self->woken = true;
    return 0;
  }

  void loop() {
    ssh_event_add_fd(event, wake->fd(), POLLIN, &impl::on_wake, this);
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (stopping) break;
      }
      woken = false;
      auto now = clock::now();
      collect_connections();
      for (auto& s : slots)
        if (s->st == session_slot::state::down && now >= s->retry_at) start_connect(*s);
      take_submitted();
      run_keep_alive(now);
      for (int round = 0; round < 2; ++round) {
        // A second round lets requests re-queued by a broken session find another one.
        assign_pending();
        now = clock::now();
        for (auto& s : slots) drive_session(*s, now);
      }
      expire_pending(clock::now());
      update_counts();
      ssh_event_dopoll(event, woken ? 0 : poll_timeout_ms(clock::now()));
    }
    shutdown();
  }

  void update_counts() {
    int running = 0;
    for (auto& s : slots) {
      for (auto& c : s->channels)
        if (c.req && !c.req->ended()) ++running;
      for (auto& m : s->muxes) running += static_cast<int>(m.reqs.size());
    }
    std::lock_guard lock(mutex);
    health.requests_running = running;
    health.requests_queued = static_cast<int>(pending.size() + submitted.size());
  }

  void shutdown() {
    take_submitted();
    const error gone(errc::cancelled, "the tunnel was closed");
    for (auto& r : pending) r->finish(gone);
    pending.clear();
    for (auto& s : slots) {
      for (auto& c : s->channels)
        if (c.req) c.req->finish(gone);
      for (auto& m : s->muxes)
        for (auto& [id, mr] : m.reqs) mr.req->finish(gone);
      s->channels.clear();
      s->muxes.clear();
      if (s->session) {
        ssh_event_remove_session(event, s->session.get());
        s->session.reset();
      }
    }
    ssh_event_remove_fd(event, wake->fd());
    for (auto& s : slots)
      if (s->connector.joinable()) s->connector.join();
    std::lock_guard lock(mutex);
    connect_results.clear();
  }
};

result<std::unique_ptr<ssh_transport>> ssh_transport::create(ssh_options options) {
  if (options.host.empty() || options.user.empty() || options.key_file.empty() || options.known_hosts.empty())
    return error(errc::invalid_argument, "ssh_transport: host, user, key_file and known_hosts are required");
  if (options.port <= 0 || options.port > 65535) return error(errc::invalid_argument, "ssh_transport: bad port");
  if (options.sessions < 1 || options.channels_per_session < 1 || options.max_queued < 1)
    return error(errc::invalid_argument, "ssh_transport: sessions, channels_per_session and max_queued must be >= 1");
  if (options.reconnect_initial.count() <= 0 || options.reconnect_max < options.reconnect_initial)
    return error(errc::invalid_argument, "ssh_transport: bad reconnect backoff");
  CHATAI_RETURN_IF_ERROR(load_key(options));
  auto wake = detail::waker::create();
  if (!wake) return std::move(wake).err();

  auto p = std::make_unique<impl>();
  p->opts = std::move(options);
  p->wake = std::move(*wake);
  p->event = ssh_event_new();
  if (!p->event) return error(errc::resource_exhausted, "ssh_event_new failed");
  for (int i = 0; i < p->opts.sessions; ++i) {
    auto slot = std::make_unique<impl::session_slot>();
    slot->index = i;
    slot->owner = p.get();
    p->slots.push_back(std::move(slot));
  }
  p->next_keep_alive = clock::now() + p->opts.keep_alive_interval;
  auto* raw = p.get();
  p->io = detail::start_io_thread("tunnel: I/O thread failed", [raw] { raw->loop(); });
  return std::unique_ptr<ssh_transport>(new ssh_transport(std::move(p)));
}

ssh_transport::ssh_transport(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

ssh_transport::~ssh_transport() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake->wake();
  if (impl_->io.joinable()) impl_->io.join();
}

chatai::status ssh_transport::wait_connected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  if (impl_->connected_cv.wait_for(lock, timeout, [&] { return impl_->health.sessions_up > 0 || impl_->connect_error; }))
    if (impl_->health.sessions_up > 0) return ok_status();
  if (impl_->connect_error) return *impl_->connect_error;
  return error(errc::timeout, "no SSH session came up in time");
}

std::shared_ptr<stream> ssh_transport::start(verb v, std::string input, stream_callbacks callbacks,
                                             request_options options) {
  auto req = std::make_shared<stream_state>(v, std::move(input), std::move(callbacks), std::move(options), impl_->wake);
  req->watch_cancellation();
  {
    std::lock_guard lock(impl_->mutex);
    impl_->submitted.push_back(req);
  }
  impl_->wake->wake();
  return req;
}

transport_health ssh_transport::health() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->health;
}

}  // namespace chatai::tunnel
