// The key store: salted SHA-256 hashes of API keys and usage totals in SQLite, with a writer
// thread that commits usage events in batches.
#include "chatai/gateway/key_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>

#include "chatai/core/clock.hpp"
#include "chatai/core/crypto.hpp"
#include "chatai/core/log.hpp"

namespace chatai::gateway {

namespace {

constexpr std::string_view key_prefix = "sk-chatai-";
constexpr std::size_t id_bytes = 6;       // 12 hex digits
constexpr std::size_t secret_bytes = 32;  // 64 hex digits
constexpr std::size_t salt_bytes = 16;

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  user TEXT NOT NULL,
  salt BLOB NOT NULL,
  hash BLOB NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER,
  revoked_at_ms INTEGER,
  requests_per_minute INTEGER,
  concurrent_streams INTEGER
);
CREATE TABLE IF NOT EXISTS usage (
  request_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  user TEXT NOT NULL,
  model TEXT NOT NULL,
  status INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at_ms);
)sql";

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;

error db_error(sqlite3* db, std::string_view what) {
  return error(errc::io_error, std::string(what) + ": " + sqlite3_errmsg(db));
}

// One prepared statement, finalized on destruction.
class statement {
 public:
  statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~statement() { sqlite3_finalize(stmt_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  bool ok() const noexcept { return stmt_ != nullptr; }
  void bind(int i, std::string_view text) { sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT); }
  void bind_blob(int i, std::string_view bytes) { sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT); }
  void bind(int i, std::int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void bind(int i, const std::optional<std::int64_t>& v) {
    if (v) sqlite3_bind_int64(stmt_, i, *v);
    else sqlite3_bind_null(stmt_, i);
  }
  int step() { return sqlite3_step(stmt_); }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  std::string blob(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::optional<std::int64_t> maybe(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(stmt_, col);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

result<db_ptr> open_db(const std::filesystem::path& path) {
  // Created owner-only before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
  // Only a new file is opened here: closing a descriptor of a file this process has open drops
  // every POSIX lock the process holds on it, SQLite's included.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);
  else if (errno != EEXIST) return error(errc::io_error, path.string() + ": " + std::strerror(errno));
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
  db_ptr db(raw);
  if (rc != SQLITE_OK) return error(errc::io_error, path.string() + ": " + (raw ? sqlite3_errmsg(raw) : "cannot open"));
  sqlite3_busy_timeout(db.get(), 5000);
  char* message = nullptr;
  if (sqlite3_exec(db.get(), "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", nullptr, nullptr, &message) != SQLITE_OK) {
    error e(errc::io_error, path.string() + ": " + (message ? message : "cannot set WAL mode"));
    sqlite3_free(message);
    return e;
  }
  if (sqlite3_exec(db.get(), schema, nullptr, nullptr, &message) != SQLITE_OK) {
    error e(errc::io_error, path.string() + ": " + (message ? message : "cannot create the tables"));
    sqlite3_free(message);
    return e;
  }
  return db;
}

key_info read_key(const statement& st) {
  key_info k;
  k.id = st.text(0);
  k.user = st.text(1);
  k.created_at_ms = st.integer(2);
  k.expires_at_ms = st.maybe(3);
  k.revoked_at_ms = st.maybe(4);
  k.limits.requests_per_minute = st.maybe(5);
  k.limits.concurrent_streams = st.maybe(6);
  return k;
}

constexpr const char* key_columns =
    "id, user, created_at_ms, expires_at_ms, revoked_at_ms, requests_per_minute, concurrent_streams";

}  // namespace

struct key_store::impl {
  std::filesystem::path path;
  mutable std::mutex mutex;  // guards db
  db_ptr db;

  // The writer's side.
  db_ptr writer_db;
  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::condition_variable flushed_cv;
  std::deque<usage_event> queue;
  std::uint64_t queued = 0;     // events ever queued
  std::uint64_t committed = 0;  // events ever written (or given up on)
  bool stopping = false;
  std::thread writer;

  void write_loop() {
    statement insert(writer_db.get(),
                     "INSERT INTO usage (request_id, key_id, user, model, status, prompt_tokens, completion_tokens, "
                     "at_ms, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    std::unique_lock lock(queue_mutex);
    for (;;) {
      queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty() && stopping) return;
      std::deque<usage_event> batch;
      batch.swap(queue);
      lock.unlock();
      write_batch(insert, batch);
      lock.lock();
      committed += batch.size();
      flushed_cv.notify_all();
    }
  }

  void write_batch(statement& insert, const std::deque<usage_event>& batch) {
    if (!insert.ok()) {
      log::error("gateway: usage not recorded", {{"error", sqlite3_errmsg(writer_db.get())}});
      return;
    }
    sqlite3_exec(writer_db.get(), "BEGIN", nullptr, nullptr, nullptr);
    for (const auto& e : batch) {
      insert.bind(1, e.request_id);
      insert.bind(2, e.key_id);
      insert.bind(3, e.user);
      insert.bind(4, e.model);
      insert.bind(5, static_cast<std::int64_t>(e.status));
      insert.bind(6, e.prompt_tokens);
      insert.bind(7, e.completion_tokens);
      insert.bind(8, e.at_ms);
      insert.bind(9, e.duration_ms);
      if (insert.step() != SQLITE_DONE)
        log::error("gateway: usage not recorded", {{"request_id", e.request_id}, {"error", sqlite3_errmsg(writer_db.get())}});
      insert.reset();
    }
    if (sqlite3_exec(writer_db.get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      log::error("gateway: usage not committed", {{"error", sqlite3_errmsg(writer_db.get())}});
      sqlite3_exec(writer_db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
};

key_store::key_store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<key_store>> key_store::open(const std::filesystem::path& path) {
  auto p = std::make_unique<impl>();
  p->path = path;
  auto db = open_db(path);
  if (!db) return std::move(db).err();
  auto writer_db = open_db(path);
  if (!writer_db) return std::move(writer_db).err();
  p->db = std::move(*db);
  p->writer_db = std::move(*writer_db);
  impl* raw = p.get();
  p->writer = std::thread([raw] { raw->write_loop(); });
  return std::unique_ptr<key_store>(new key_store(std::move(p)));
}

key_store::~key_store() {
  {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  impl_->writer.join();
}

result<created_key> key_store::create(std::string_view user, std::optional<std::int64_t> expires_at_ms, key_limits limits) {
  if (user.empty() || user.size() > 128) return error(errc::invalid_argument, "user: must be 1 to 128 bytes");
  for (const char c : user)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return error(errc::invalid_argument, "user: holds a control character");
  if (limits.requests_per_minute && *limits.requests_per_minute < 0)
    return error(errc::invalid_argument, "requests_per_minute: must not be negative");
  if (limits.concurrent_streams && *limits.concurrent_streams < 0)
    return error(errc::invalid_argument, "concurrent_streams: must not be negative");
  auto id = crypto::random_hex(id_bytes);
  if (!id) return std::move(id).err();
  auto secret = crypto::random_bytes(secret_bytes);
  if (!secret) return std::move(secret).err();
  auto salt = crypto::random_bytes(salt_bytes);
  if (!salt) return std::move(salt).err();

  created_key out;
  out.info.id = *id;
  out.info.user = std::string(user);
  out.info.created_at_ms = unix_ms_now();
  out.info.expires_at_ms = expires_at_ms;
  out.info.limits = limits;
  out.key = std::string(key_prefix) + *id + "-" + crypto::to_hex(*secret);

  std::lock_guard lock(impl_->mutex);
  statement st(impl_->db.get(),
               "INSERT INTO api_keys (id, user, salt, hash, created_at_ms, expires_at_ms, requests_per_minute, "
               "concurrent_streams) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st.ok()) return db_error(impl_->db.get(), "create key");
  st.bind(1, out.info.id);
  st.bind(2, out.info.user);
  st.bind_blob(3, *salt);
  st.bind_blob(4, crypto::sha256(*salt, *secret));
  st.bind(5, out.info.created_at_ms);
  st.bind(6, expires_at_ms);
  st.bind(7, limits.requests_per_minute);
  st.bind(8, limits.concurrent_streams);
  if (st.step() != SQLITE_DONE) return db_error(impl_->db.get(), "create key");
  return out;
}

result<key_info> key_store::verify(std::string_view presented, std::int64_t now_ms) const {
  const error invalid(errc::permission_denied, "invalid API key");
  if (presented.substr(0, key_prefix.size()) != key_prefix) return invalid;
  const std::string_view rest = presented.substr(key_prefix.size());
  const std::size_t dash = rest.find('-');
  if (dash != id_bytes * 2) return invalid;
  const std::string_view id = rest.substr(0, dash);
  std::string secret;
  if (!crypto::from_hex(rest.substr(dash + 1), secret) || secret.size() != secret_bytes) return invalid;

  key_info info;
  std::string salt, hash;
  {
    std::lock_guard lock(impl_->mutex);
    statement st(impl_->db.get(), (std::string("SELECT ") + key_columns + ", salt, hash FROM api_keys WHERE id = ?").c_str());
    if (!st.ok()) return db_error(impl_->db.get(), "verify key");
    st.bind(1, id);
    const int rc = st.step();
    if (rc == SQLITE_DONE) return invalid;
    if (rc != SQLITE_ROW) return db_error(impl_->db.get(), "verify key");
    info = read_key(st);
    salt = st.blob(7);
    hash = st.blob(8);
  }
  if (!crypto::equal_constant_time(crypto::sha256(salt, secret), hash)) return invalid;
  if (info.revoked_at_ms) return error(errc::permission_denied, "the API key has been revoked");
  if (info.expires_at_ms && *info.expires_at_ms <= now_ms) return error(errc::permission_denied, "the API key has expired");
  return info;
}

status key_store::revoke(std::string_view id, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  statement st(impl_->db.get(), "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?) WHERE id = ?");
  if (!st.ok()) return db_error(impl_->db.get(), "revoke key");
  st.bind(1, now_ms);
  st.bind(2, id);
  if (st.step() != SQLITE_DONE) return db_error(impl_->db.get(), "revoke key");
  if (sqlite3_changes(impl_->db.get()) == 0) return error(errc::not_found, "no key with id '" + std::string(id) + "'");
  return ok_status();
}

result<std::vector<key_info>> key_store::list() const {
  std::lock_guard lock(impl_->mutex);
  statement st(impl_->db.get(), (std::string("SELECT ") + key_columns + " FROM api_keys ORDER BY created_at_ms, id").c_str());
  if (!st.ok()) return db_error(impl_->db.get(), "list keys");
  std::vector<key_info> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_key(st));
  if (rc != SQLITE_DONE) return db_error(impl_->db.get(), "list keys");
  return out;
}

void key_store::record(usage_event event) {
  {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->queue.push_back(std::move(event));
    ++impl_->queued;
  }
  impl_->queue_cv.notify_one();
}

void key_store::flush() {
  std::unique_lock lock(impl_->queue_mutex);
  const std::uint64_t target = impl_->queued;
  impl_->flushed_cv.wait(lock, [&] { return impl_->committed >= target; });
}

result<usage_report> key_store::usage(std::optional<std::int64_t> since_ms) const {
  std::lock_guard lock(impl_->mutex);
  usage_report report;
  auto run = [&](const char* sql, std::vector<usage_total>& out) -> status {
    statement st(impl_->db.get(), sql);
    if (!st.ok()) return db_error(impl_->db.get(), "usage");
    st.bind(1, since_ms.value_or(std::numeric_limits<std::int64_t>::min()));
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      usage_total t;
      t.key_id = st.text(0);
      t.user = st.text(1);
      t.requests = st.integer(2);
      t.prompt_tokens = st.integer(3);
      t.completion_tokens = st.integer(4);
      out.push_back(std::move(t));
    }
    if (rc != SQLITE_DONE) return db_error(impl_->db.get(), "usage");
    return ok_status();
  };
  CHATAI_RETURN_IF_ERROR(run("SELECT key_id, MIN(user), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
                             "WHERE at_ms >= ? AND key_id <> '' GROUP BY key_id ORDER BY key_id",
                             report.by_key));
  CHATAI_RETURN_IF_ERROR(run("SELECT '', user, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
                             "WHERE at_ms >= ? GROUP BY user ORDER BY user",
                             report.by_user));
  return report;
}

result<std::int64_t> parse_time(std::string_view text, std::int64_t now_ms, bool future) {
  const error bad(errc::invalid_argument,
                  "'" + std::string(text) + "' is neither a span (30d, 12h, 45m, 90s) nor an ISO date (2026-12-31 or 2026-12-31T18:00:00Z)");
  if (text.size() >= 2 && std::string_view("dhms").find(text.back()) != std::string_view::npos) {
    std::int64_t n = 0;
    const auto digits = text.substr(0, text.size() - 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || end != digits.data() + digits.size() || n < 0 || n > 100000LL * 86400) return bad;
    const std::int64_t unit = text.back() == 'd' ? 86400000 : text.back() == 'h' ? 3600000 : text.back() == 'm' ? 60000 : 1000;
    return future ? now_ms + n * unit : now_ms - n * unit;
  }
  std::tm tm{};
  const std::string s(text);
  const char* end = nullptr;
  if (s.size() == 10) end = strptime(s.c_str(), "%Y-%m-%d", &tm);
  else if (s.size() == 20 && s.back() == 'Z') end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return bad;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

std::string format_time(std::int64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace chatai::gateway
