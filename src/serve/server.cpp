// The model server: HTTP handlers on the I/O threads validate and tokenize requests and queue
// them; one engine thread admits them into continuous batching, steps the generator and
// writes every sequence's output to its response. Embedding requests run on the same thread,
// one prompt chunk between two generator steps.
#include "chatai/serve/server.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "chatai/core/crypto.hpp"
#include "chatai/core/http_server.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/key_proof.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/metrics.hpp"
#include "chatai/engine/generator.hpp"
#include "chatai/engine/embedding.hpp"
#include "chatai/engine/runtime.hpp"
#include "chatai/serve/chat_format.hpp"
#include "chatai/serve/openai_protocol.hpp"
#include "chatai/serve/embeddings.hpp"
#include "chatai/serve/openai_response.hpp"

namespace chatai::serve {

std::string_view to_string(server_state state) noexcept {
  switch (state) {
    case server_state::loading: return "loading";
    case server_state::ready: return "ready";
    case server_state::draining: return "draining";
    case server_state::stopped: return "stopped";
  }
  return "unknown";
}

result<std::string> read_api_key_file(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return error(err == ENOENT ? errc::not_found : errc::io_error,
                 "API key file " + path.string() + ": " + std::strerror(err));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    return error(errc::permission_denied,
                 "API key file " + path.string() + " may be read by others; make it readable only by its owner (chmod 600)");
  std::ifstream in(path);
  if (!in) return error(errc::io_error, "API key file " + path.string() + ": cannot be opened");
  std::string key;
  std::getline(in, key);
  const auto first = key.find_first_not_of(" \t\r\n");
  const auto last = key.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) return error(errc::invalid_argument, "API key file " + path.string() + " is empty");
  return key.substr(first, last - first + 1);
}

namespace {

using clock = std::chrono::steady_clock;

double seconds_between(clock::time_point from, clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string random_suffix() {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(alphabet) - 2);
  std::string out(24, ' ');
  for (auto& c : out) c = alphabet[pick(rng)];
  return out;
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One choice of a request: one sequence in the generator.
struct choice_state {
  std::uint64_t sequence = 0;  // generator id while running
  bool finished = false;
  engine::finish_reason finish = engine::finish_reason::none;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;               // of the prompt: taken from the prefix cache
  std::string text;                             // collected for non-streaming answers
  std::vector<engine::generated_token> tokens;  // collected when logprobs were asked for
  std::size_t text_offset = 0;                  // completions logprobs: where the next token starts
  clock::time_point last_token;
  std::optional<output_parser> parser;          // chat output split into content, reasoning, calls
  std::string reasoning;                        // collected for non-streaming answers
  std::vector<tool_call> calls;
};

// One accepted request, from the queue until its answer is complete.
struct job {
  completion_request request;
  std::vector<engine::token_id> prompt;
  chat_prompt chat;  // chat: how the prompt was rendered and the grammar of the output
  http::response res;
  response_meta meta;
  std::int64_t max_tokens = 0;
  clock::time_point arrived;
  bool first_token_seen = false;
  std::vector<choice_state> choices;
  std::size_t unfinished = 0;
  std::atomic<bool> cancelled{false};

  explicit job(http::response r) : res(std::move(r)) {}
};

// One accepted /v1/embeddings request: its inputs are embedded one after another on the
// engine thread, a chunk between two generator steps.
struct embedding_work {
  http::response res;
  std::string model;
  embedding_encoding encoding = embedding_encoding::float_array;
  engine::embedding_options options;
  std::vector<std::vector<engine::token_id>> inputs;
  std::int64_t prompt_tokens = 0;
  std::vector<std::vector<float>> vectors;      // one per finished input
  std::unique_ptr<engine::embedding_job> current;  // the input being read
  std::atomic<bool> cancelled{false};

  explicit embedding_work(http::response r) : res(std::move(r)) {}
};

}  // namespace

class model_server::impl {
 public:
  explicit impl(server_options options) : options_(std::move(options)) {
    model_name_ = options_.served_model_name;
    if (model_name_.empty()) {
      model_name_ = options_.model_path.filename().string();
      if (model_name_.size() > 5 && model_name_.ends_with(".gguf")) model_name_.resize(model_name_.size() - 5);
    }
    options_.parallel = std::max<std::int64_t>(1, options_.parallel);
    options_.max_queue = std::max<std::int64_t>(0, options_.max_queue);
    created_ = unix_seconds();

    running_ = &metrics_.add_gauge("chatai_requests_running", "Requests whose sequences are decoding").get();
    waiting_ = &metrics_.add_gauge("chatai_requests_waiting", "Requests queued for a decoding slot").get();
    sequences_ = &metrics_.add_gauge("chatai_sequences_running", "Sequences in the batch (a request with n has n)").get();
    prompt_tokens_ = &metrics_.add_counter("chatai_prompt_tokens_total", "Prompt tokens of admitted requests").get();
    generation_tokens_ = &metrics_.add_counter("chatai_generation_tokens_total", "Tokens generated").get();
    ttft_ = &metrics_
                 .add_histogram("chatai_time_to_first_token_seconds", "From a request's arrival to its first token",
                                metrics::exponential_buckets(0.005, 2.0, 13))
                 .get();
    itl_ = &metrics_
                .add_histogram("chatai_inter_token_latency_seconds", "Between two tokens of one sequence",
                               metrics::exponential_buckets(0.001, 2.0, 14))
                .get();
    e2e_ = &metrics_
                .add_histogram("chatai_request_duration_seconds", "From a request's arrival to the end of its answer",
                               metrics::exponential_buckets(0.01, 2.0, 14))
                .get();
    kv_tokens_ = &metrics_.add_gauge("chatai_kv_cache_tokens", "Tokens held in the KV caches").get();
    kv_usage_ = &metrics_.add_gauge("chatai_kv_cache_usage_ratio", "KV cache tokens held over those the slots can hold").get();
    prefix_queries_ = &metrics_.add_counter("chatai_prefix_cache_queries_total",
                                            "Prompt tokens of sequences that looked for a cached prefix").get();
    prefix_hits_ = &metrics_.add_counter("chatai_prefix_cache_hits_total",
                                         "Prompt tokens taken from the prefix cache instead of computed").get();
    prefix_hit_rate_ = &metrics_.add_gauge("chatai_prefix_cache_hit_rate",
                                           "Prompt tokens taken from the prefix cache over those looked up, since start").get();
    prefix_tokens_ = &metrics_.add_gauge("chatai_prefix_cache_tokens", "Tokens held by finished sequences kept for their prefixes").get();
    finished_ = &metrics_.add_counter("chatai_requests_finished_total", "Requests ended, by outcome", {"outcome"});
    rejected_ = &metrics_.add_counter("chatai_requests_rejected_total", "Requests refused, by HTTP status", {"status"});
    embedding_requests_ =
        &metrics_.add_counter("chatai_embedding_requests_total", "Embedding requests ended, by outcome", {"outcome"});
    embedding_tokens_ =
        &metrics_.add_counter("chatai_embedding_tokens_total", "Input tokens of answered embedding requests").get();
  }

  ~impl() { stop(); }

  status start() {
    if (!options_.api_key_file.empty()) {
      auto key = read_api_key_file(options_.api_key_file);
      if (!key) return std::move(key).err();
      api_key_ = std::move(*key);
    }
    http::server_options http_options;
    http_options.host = options_.host;
    http_options.port = options_.port;
    http_options.io_threads = std::max(1, options_.io_threads);
    auto server = http::server::start(http_options, routes());
    if (!server) return std::move(server).err();
    http_ = std::move(*server);
    port_ = http_->port();
    engine_ = std::thread([this] { engine_main(); });
    return {};
  }

  std::uint16_t port() const noexcept { return port_; }
  const std::string& host() const noexcept { return options_.host; }
  const std::string& model_name() const noexcept { return model_name_; }
  server_state state() const noexcept { return state_.load(std::memory_order_acquire); }

  status wait_ready() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return load_done_ || stop_requested_; });
    if (load_error_) return *load_error_;
    if (!load_done_) return error(errc::cancelled, "the server stopped while the model was loading");
    return {};
  }

  void drain() {
    std::lock_guard lock(mutex_);
    auto current = state_.load();
    if (current == server_state::stopped || current == server_state::draining) return;
    state_.store(server_state::draining, std::memory_order_release);
    log::info("serve: draining", {{"in_flight", std::to_string(in_flight_)}});
    changed_.notify_all();
  }

  void wait_drained() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] {
      return stop_requested_ || (state_.load() == server_state::draining && in_flight_ == 0 && load_done_);
    });
  }

  void stop() {
    std::lock_guard stopping(stop_mutex_);
    {
      std::lock_guard lock(mutex_);
      stop_requested_ = true;
      state_.store(server_state::stopped, std::memory_order_release);
      changed_.notify_all();
    }
    if (engine_.joinable()) engine_.join();
    {
      // Requests still queued get the HTTP server's 500 for a dropped response.
      std::lock_guard lock(mutex_);
      queue_.clear();
      embedding_queue_.clear();
    }
    if (http_) {
      // Every response is complete or dropped now; the grace only lets sockets take the
      // bytes already queued, such as the end of a stream that just finished.
      http_->stop(std::chrono::seconds(5));
      http_.reset();
    }
  }

 private:
  // ---- HTTP side (I/O threads) ----

  http::router routes() {
    http::router r;
    r.add("GET", "/health", [this](http::request&, http::response res) { handle_health(res); });
    r.add("GET", std::string(key_proof::path),
          [this](http::request& req, http::response res) { handle_key_proof(req, res); });
    r.add("GET", "/metrics", [this](http::request& req, http::response res) {
      if (!authorized(req, res)) return;
      res.send(200, metrics::exposition_content_type, metrics_.expose());
    });
    r.add("GET", "/v1/models", [this](http::request& req, http::response res) {
      if (!authorized(req, res)) return;
      res.send(200, "application/json", "{\"object\":\"list\",\"data\":[" + model_json() + "]}");
    });
    r.add_prefix("GET", "/v1/models/", [this](http::request& req, http::response res) {
      if (!authorized(req, res)) return;
      const auto name = std::string_view(req.path).substr(std::string_view("/v1/models/").size());
      if (name != model_name_) {
        send_api_error(res, model_not_found(name));
        return;
      }
      res.send(200, "application/json", model_json());
    });
    r.add("POST", "/v1/chat/completions",
          [this](http::request& req, http::response res) { handle_completion(req, std::move(res), true); });
    r.add("POST", "/v1/embeddings",
          [this](http::request& req, http::response res) { handle_embeddings(req, std::move(res)); });
    r.add("POST", "/v1/completions",
          [this](http::request& req, http::response res) { handle_completion(req, std::move(res), false); });
    return r;
  }

  std::string model_json() const {
    std::string out = "{\"id\":";
    json::append_quoted(out, model_name_);
    out += ",\"object\":\"model\",\"created\":" + std::to_string(created_) +
           ",\"owned_by\":\"chatai\",\"max_model_len\":" + std::to_string(context_.load()) + "}";
    return out;
  }

  void handle_health(http::response& res) {
    const auto current = state();
    std::string body = "{\"status\":\"";
    body += current == server_state::ready ? "ok" : to_string(current);
    body += "\"";
    {
      std::lock_guard lock(mutex_);
      if (load_error_) {
        body = "{\"status\":\"failed\",\"error\":";
        json::append_quoted(body, load_error_->message());
      }
    }
    body += "}";
    res.send(current == server_state::ready ? 200 : 503, "application/json", body);
  }

  // The job key proof (chatai/core/key_proof.hpp) that the gate asks for before it sends the
  // key: it needs no key from the caller, and it only ever returns the HMAC of the challenge it
  // is given, which tells nothing about the key.
  void handle_key_proof(const http::request& req, http::response& res) {
    if (api_key_.empty()) {
      send_api_error(res, {404, "This server has no API key to prove.", "invalid_request_error", "", "no_api_key"});
      return;
    }
    const auto* challenge = req.headers.find(key_proof::challenge_header);
    if (!challenge || !key_proof::valid_challenge(*challenge)) {
      send_api_error(res, invalid_request("The " + std::string(key_proof::challenge_header) + " header must be " +
                                          std::to_string(2 * key_proof::challenge_bytes) + " lowercase hex digits."));
      return;
    }
    res.send(200, "text/plain", key_proof::answer(api_key_, *challenge));
  }

  bool authorized(const http::request& req, http::response& res) {
    if (api_key_.empty()) return true;
    const auto* value = req.headers.find("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    if (value && value->size() > scheme.size() && iequals_prefix(*value, scheme) &&
        crypto::equal_constant_time(std::string_view(*value).substr(scheme.size()), api_key_))
      return true;
    api_error e;
    e.http_status = 401;
    e.message = value ? "Incorrect API key provided." : "Missing bearer authentication in the Authorization header.";
    e.code = "invalid_api_key";
    send_api_error(res, e);
    return false;
  }

  static bool iequals_prefix(std::string_view value, std::string_view prefix) {
    return value.size() >= prefix.size() && http::iequals(value.substr(0, prefix.size()), prefix);
  }

  void send_api_error(http::response& res, const api_error& e, bool retry_after = false) {
    rejected_->labels({std::to_string(e.http_status)}).inc();
    http::headers extra;
    if (retry_after) extra.add("Retry-After", std::to_string(std::max<std::int64_t>(1, options_.retry_after_seconds)));
    res.send(e.http_status, "application/json", e.to_json(), extra);
  }

  // Sets work->cancelled when its client disconnects (the work may be gone by then).
  template <class Work>
  static void flag_when_client_leaves(const std::shared_ptr<Work>& work) {
    work->res.cancelled().on_cancel([weak = std::weak_ptr<Work>(work)] {
      if (auto locked = weak.lock()) locked->cancelled.store(true);
    });
  }

  static api_error model_not_found(std::string_view name) {
    api_error e;
    e.http_status = 404;
    e.message = "The model `" + std::string(name) + "` does not exist.";
    e.param = "model";
    e.code = "model_not_found";
    return e;
  }

  static api_error unavailable(std::string message) {
    api_error e;
    e.http_status = 503;
    e.message = std::move(message);
    e.type = "server_error";
    e.code = "service_unavailable";
    return e;
  }

  void handle_completion(http::request& req, http::response res, bool chat) {
    if (!authorized(req, res)) return;
    const auto current = state();
    if (current != server_state::ready) {
      send_api_error(res,
                     unavailable(current == server_state::loading ? "the model is still loading"
                                                                  : "the server is shutting down; retry on another backend"),
                     true);
      return;
    }
    const auto context = context_.load();
    request_limits limits;
    limits.max_n = std::min<std::int64_t>(limits.max_n, options_.parallel);
    limits.vocab_size = runtime_->vocab().size();
    auto parsed = chat ? parse_chat_request(req.body, limits) : parse_completion_request(req.body, limits);
    if (!parsed) {
      send_api_error(res, to_api_error(parsed.err()));
      return;
    }
    if (parsed->model != model_name_) {
      send_api_error(res, model_not_found(parsed->model));
      return;
    }
    auto j = std::make_shared<job>(std::move(res));
    j->request = std::move(*parsed);
    std::string text = j->request.prompt;
    if (chat) {
      std::string param;
      auto prepared = prepare_chat(*runtime_, dialect_, j->request, &param);
      if (!prepared) {
        send_api_error(j->res, invalid_request(prepared.err().message(), param));
        return;
      }
      j->chat = std::move(*prepared);
      text = j->chat.text;
    }
    j->prompt = runtime_->encode_prompt(text, chat);
    const auto prompt_len = static_cast<std::int64_t>(j->prompt.size());
    if (prompt_len == 0) {
      send_api_error(j->res, invalid_request("the prompt is empty", chat ? "messages" : "prompt"));
      return;
    }
    if (prompt_len >= context) {
      api_error e = invalid_request("This model's maximum context length is " + std::to_string(context) +
                                        " tokens. However, your " + (chat ? "messages" : "prompt") + " resulted in " +
                                        std::to_string(prompt_len) + " tokens.",
                                    chat ? "messages" : "prompt");
      e.code = "context_length_exceeded";
      send_api_error(j->res, e);
      return;
    }
    j->max_tokens = j->request.max_tokens.value_or(context - prompt_len);
    j->meta.id = (chat ? "chatcmpl-" : "cmpl-") + random_suffix();
    j->meta.created = unix_seconds();
    j->meta.model = model_name_;
    j->meta.chat = chat;
    j->arrived = clock::now();
    j->choices.resize(static_cast<std::size_t>(j->request.n));
    j->unfinished = j->choices.size();
    if (chat && (dialect_.reasoning || j->chat.parse_tools)) {
      std::vector<std::string> names;
      if (j->chat.parse_tools)
        for (const auto& t : j->request.tools) names.push_back(t.name);
      const bool forced = j->chat.parse_tools && (j->request.tool_choice == tool_choice_mode::required ||
                                                  j->request.tool_choice == tool_choice_mode::named);
      for (auto& c : j->choices)
        c.parser.emplace(dialect_, j->chat.opens_in_reasoning, names, forced, j->request.parallel_tool_calls);
    }
    flag_when_client_leaves(j);

    std::unique_lock lock(mutex_);
    if (state_.load() != server_state::ready) {
      lock.unlock();
      send_api_error(j->res, unavailable("the server is shutting down; retry on another backend"), true);
      return;
    }
    // Beyond the queue limit, only a request that can start at once is taken.
    if (static_cast<std::int64_t>(queue_.size()) >= options_.max_queue &&
        queued_slots_ + j->request.n > free_slots_.load()) {
      lock.unlock();
      api_error e;
      e.http_status = 429;
      e.message = "the server is busy: " + std::to_string(options_.max_queue) + " requests are waiting already";
      e.type = "rate_limit_error";
      e.code = "queue_full";
      send_api_error(j->res, e, true);
      return;
    }
    queued_slots_ += j->request.n;
    queue_.push_back(std::move(j));
    ++in_flight_;
    waiting_->set(static_cast<double>(queue_.size()));
    changed_.notify_all();
  }

  void handle_embeddings(http::request& req, http::response res) {
    if (!authorized(req, res)) return;
    const auto current = state();
    if (current != server_state::ready) {
      send_api_error(res,
                     unavailable(current == server_state::loading ? "the model is still loading"
                                                                  : "the server is shutting down; retry on another backend"),
                     true);
      return;
    }
    embedding_limits limits;
    limits.vocab_size = runtime_->vocab().size();
    limits.dimensions = runtime_->hparams().n_embd;
    auto parsed = parse_embedding_request(req.body, limits);
    if (!parsed) {
      send_api_error(res, to_api_error(parsed.err()));
      return;
    }
    if (parsed->model != model_name_) {
      send_api_error(res, model_not_found(parsed->model));
      return;
    }
    const auto context = context_.load();
    auto w = std::make_shared<embedding_work>(std::move(res));
    w->model = model_name_;
    w->encoding = parsed->encoding;
    w->options.pool = parsed->pooling.value_or(engine::default_pooling(runtime_->weights().file()));
    w->options.normalize = parsed->normalize;
    w->options.max_tokens = context;
    w->inputs.reserve(parsed->inputs.size());
    for (auto& in : parsed->inputs) {
      auto tokens = in.is_text ? engine::encode_embedding_input(runtime_->vocab(), in.text) : std::move(in.tokens);
      const auto n = static_cast<std::int64_t>(tokens.size());
      const std::string which =
          parsed->inputs.size() == 1 ? "input" : "input[" + std::to_string(w->inputs.size()) + "]";
      if (n == 0) {
        send_api_error(w->res, invalid_request("the " + which + " has no tokens", "input"));
        return;
      }
      if (n > context) {
        api_error e = invalid_request("This model's maximum context length is " + std::to_string(context) +
                                          " tokens. However, your " + which + " resulted in " + std::to_string(n) +
                                          " tokens.",
                                      "input");
        e.code = "context_length_exceeded";
        send_api_error(w->res, e);
        return;
      }
      w->prompt_tokens += n;
      w->inputs.push_back(std::move(tokens));
    }
    flag_when_client_leaves(w);

    std::unique_lock lock(mutex_);
    if (state_.load() != server_state::ready) {
      lock.unlock();
      send_api_error(w->res, unavailable("the server is shutting down; retry on another backend"), true);
      return;
    }
    // Embedding requests wait in a queue of their own, of at most max_queue (and at least one).
    if (const auto waiting = static_cast<std::int64_t>(embedding_queue_.size());
        waiting >= std::max<std::int64_t>(1, options_.max_queue)) {
      lock.unlock();
      api_error e;
      e.http_status = 429;
      e.message = "the server is busy: " + std::to_string(waiting) + " embedding requests are waiting already";
      e.type = "rate_limit_error";
      e.code = "queue_full";
      send_api_error(w->res, e, true);
      return;
    }
    embedding_queue_.push_back(std::move(w));
    ++in_flight_;
    changed_.notify_all();
  }

  // ---- engine thread ----

  void engine_main() {
    try {
      run_engine();
    } catch (const std::exception& e) {
      log::error("serve: engine thread failed", {{"what", e.what()}});
      std::lock_guard lock(mutex_);
      if (!load_done_) load_error_ = error(errc::internal, e.what());
      load_done_ = true;
      changed_.notify_all();
    }
  }

  void run_engine() {
    const auto t0 = clock::now();
    engine::runtime_options ro;
    ro.model_path = options_.model_path;
    ro.device = options_.device;
    ro.threads = options_.threads;
    if (!options_.chat_template_path.empty()) {
      std::ifstream in(options_.chat_template_path, std::ios::binary);
      if (!in) throw std::runtime_error("chat template " + options_.chat_template_path.string() + ": cannot be read");
      ro.chat_template.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    auto loaded = engine::runtime::load(ro);
    if (!loaded) {
      log::error("serve: loading the model failed", {{"error", loaded.err().message()}});
      std::lock_guard lock(mutex_);
      load_error_ = std::move(loaded).err();
      load_done_ = true;
      changed_.notify_all();
      return;
    }
    runtime_ = std::move(*loaded);
    dialect_ = chat_dialect::detect(runtime_->chat().source());
    engine::generator_options go;
    go.context = options_.context;
    go.prefix_cache_tokens = options_.prefix_cache_tokens;
    if (go.prefix_cache_tokens < 0) {
      const auto& hp = runtime_->compute().hparams();
      const std::int64_t context = options_.context > 0 ? options_.context : hp.n_ctx_train;
      const std::int64_t kv_bytes_per_token = std::max<std::int64_t>(1, 2 * hp.n_layer * hp.kv_dim() * 4);
      go.prefix_cache_tokens = std::min(options_.parallel * context, (std::int64_t{1} << 30) / kv_bytes_per_token);
    }
    engine::generator gen(runtime_->compute(), runtime_->vocab(), go);
    context_.store(gen.context());
    log::info("serve: model loaded", {{"model", model_name_},
                                      {"backend", runtime_->compute().description()},
                                      {"context", std::to_string(gen.context())},
                                      {"seconds", std::to_string(seconds_between(t0, clock::now()))}});
    {
      std::lock_guard lock(mutex_);
      load_done_ = true;
      free_slots_.store(options_.parallel);
      if (state_.load() == server_state::loading) state_.store(server_state::ready, std::memory_order_release);
      changed_.notify_all();
    }

    std::vector<std::shared_ptr<job>> running;
    std::unordered_map<std::uint64_t, std::pair<job*, std::size_t>> owners;
    std::int64_t slots_used = 0;
    const double kv_capacity = static_cast<double>(options_.parallel) * static_cast<double>(gen.context());

    auto release = [&](job& j) {
      for (auto& c : j.choices) {
        if (c.sequence == 0) continue;
        (void)gen.remove(c.sequence);
        owners.erase(c.sequence);
        c.sequence = 0;
        --slots_used;
      }
    };
    auto retire = [&](const std::shared_ptr<job>& j, std::string_view outcome) {
      release(*j);
      finished_->labels({std::string(outcome)}).inc();
      e2e_->observe(seconds_between(j->arrived, clock::now()));
      std::lock_guard lock(mutex_);
      --in_flight_;
      changed_.notify_all();
    };
    std::shared_ptr<embedding_work> embedding;  // the embedding request being computed

    while (true) {
      std::vector<std::shared_ptr<job>> admitted, dropped;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] {
          return stop_requested_ || !queue_.empty() || gen.active() > 0 || embedding || !embedding_queue_.empty();
        });
        if (stop_requested_) break;
        std::int64_t planned = slots_used;
        while (!queue_.empty()) {
          auto& front = queue_.front();
          if (!front->cancelled.load()) {
            if (planned + front->request.n > options_.parallel) break;
            planned += front->request.n;
          }
          queued_slots_ -= front->request.n;
          (front->cancelled.load() ? dropped : admitted).push_back(std::move(front));
          queue_.pop_front();
        }
        free_slots_.store(options_.parallel - planned);
        waiting_->set(static_cast<double>(queue_.size()));
        if (!embedding && !embedding_queue_.empty()) {
          embedding = std::move(embedding_queue_.front());
          embedding_queue_.pop_front();
        }
      }
      // A queued request whose client left holds no slot: it only stops counting.
      for (auto& j : dropped) retire(j, "cancelled");
      for (auto& j : admitted) {
        if (admit(gen, *j, owners, slots_used)) running.push_back(std::move(j));
        else retire(j, "error");
      }

      // Clients that went away free their sequences now.
      for (auto it = running.begin(); it != running.end();) {
        if ((*it)->cancelled.load()) {
          retire(*it, "cancelled");
          it = running.erase(it);
        } else {
          ++it;
        }
      }
      if (embedding && step_embedding(*embedding)) embedding.reset();
      running_->set(static_cast<double>(running.size()));
      sequences_->set(static_cast<double>(gen.active()));
      if (gen.active() == 0) {
        kv_tokens_->set(0);
        kv_usage_->set(0);
        continue;
      }

      auto events = gen.step();
      if (!events) {
        log::error("serve: a decoding step failed", {{"error", events.err().message()}});
        for (auto& j : running) {
          if (!j->res.started()) send_api_error(j->res, internal_error(events.err().message()));
          else j->res.finish();
          retire(j, "error");
        }
        running.clear();
        continue;
      }
      const auto now = clock::now();
      for (auto& ev : *events) {
        auto owner = owners.find(ev.id);
        if (owner == owners.end()) continue;
        auto& j = *owner->second.first;
        const auto index = owner->second.second;
        auto& c = j.choices[index];
        if (!ev.tokens.empty()) {
          generation_tokens_->inc(static_cast<double>(ev.tokens.size()));
          if (!j.first_token_seen) {
            j.first_token_seen = true;
            ttft_->observe(seconds_between(j.arrived, now));
          }
          if (c.completion_tokens > 0) itl_->observe(seconds_between(c.last_token, now));
          c.last_token = now;
        }
        c.completion_tokens = ev.completion_tokens;
        c.cached_tokens = ev.cached_tokens;
        if (ev.finished != engine::finish_reason::none) {
          c.finished = true;
          c.finish = ev.finished;
          c.sequence = 0;
          owners.erase(owner);
          --slots_used;
          --j.unfinished;
        }
        if (!deliver(j, index, ev)) j.cancelled.store(true);
      }
      for (auto it = running.begin(); it != running.end();) {
        auto& j = **it;
        if (j.unfinished == 0) {
          bool any_length = false;
          for (const auto& c : j.choices) any_length |= c.finish == engine::finish_reason::length;
          const bool gone = j.cancelled.load();
          if (!gone) complete(j);
          retire(*it, gone ? "cancelled" : any_length ? "length" : "stop");
          it = running.erase(it);
        } else {
          ++it;
        }
      }
      free_slots_.store(options_.parallel - slots_used);
      const auto cached = static_cast<double>(gen.cached_tokens());
      kv_tokens_->set(cached);
      kv_usage_->set(kv_capacity > 0 ? cached / kv_capacity : 0.0);
      publish_prefix_stats(gen.prefix_stats());
      running_->set(static_cast<double>(running.size()));
      sequences_->set(static_cast<double>(gen.active()));
    }
  }

  void publish_prefix_stats(const engine::prefix_cache_stats& now) {
    prefix_queries_->inc(static_cast<double>(now.prompt_tokens - prefix_seen_.prompt_tokens));
    prefix_hits_->inc(static_cast<double>(now.reused_tokens - prefix_seen_.reused_tokens));
    prefix_hit_rate_->set(now.prompt_tokens > 0 ? static_cast<double>(now.reused_tokens) / static_cast<double>(now.prompt_tokens) : 0.0);
    prefix_tokens_->set(static_cast<double>(now.held_tokens));
    prefix_seen_ = now;
  }

  // One chunk of an embedding request's current input; the answer once its last input is
  // done. True when the request has ended (answered, failed or its client gone).
  bool step_embedding(embedding_work& w) {
    const auto end = [&](std::string_view outcome) {
      embedding_requests_->labels({std::string(outcome)}).inc();
      w.current.reset();  // frees the temporary sequence
      std::lock_guard lock(mutex_);
      --in_flight_;
      changed_.notify_all();
      return true;
    };
    if (w.cancelled.load()) return end("cancelled");
    if (!w.current) {
      auto& input = w.inputs[w.vectors.size()];
      auto started = engine::embedding_job::start(runtime_->compute(), std::move(input), w.options);
      if (!started) {
        const auto& e = started.err();
        const bool full = e.code() == errc::resource_exhausted;
        send_api_error(w.res, full ? unavailable(e.message()) : invalid_request(e.message(), "input"), full);
        return end("error");
      }
      w.current = std::move(*started);
    }
    if (auto st = w.current->step(); !st) {
      log::error("serve: an embedding step failed", {{"error", st.err().message()}});
      send_api_error(w.res, internal_error(st.err().message()));
      return end("error");
    }
    if (!w.current->done()) return false;
    w.vectors.push_back(w.current->vector());
    w.current.reset();
    if (w.vectors.size() < w.inputs.size()) return false;
    embedding_tokens_->inc(static_cast<double>(w.prompt_tokens));
    w.res.send(200, "application/json", embedding_response(w.model, w.vectors, w.encoding, w.prompt_tokens));
    return end("ok");
  }

  static api_error internal_error(std::string message) {
    api_error e;
    e.http_status = 500;
    e.message = std::move(message);
    e.type = "server_error";
    return e;
  }

  // Adds the job's sequences to the generator and starts its stream. False (with the error
  // answered) when the generator refused one.
  bool admit(engine::generator& gen, job& j, std::unordered_map<std::uint64_t, std::pair<job*, std::size_t>>& owners,
             std::int64_t& slots_used) {
    for (std::size_t i = 0; i < j.choices.size(); ++i) {
      engine::generation_request g;
      g.prompt = j.prompt;
      g.sampling = j.request.sampling;
      if (g.sampling.seed) g.sampling.seed = *g.sampling.seed + i;
      g.stop = j.request.stop;
      g.max_tokens = j.max_tokens;
      g.top_logprobs = j.request.logprobs ? j.request.top_logprobs : -1;
      g.constraint = j.chat.grammar;
      g.render_special = j.chat.parse_tools;
      auto id = gen.add(std::move(g));
      if (!id) {
        for (auto& c : j.choices) {
          if (c.sequence == 0) continue;
          (void)gen.remove(c.sequence);
          owners.erase(c.sequence);
          c.sequence = 0;
          --slots_used;
        }
        auto e = id.err().code() == errc::resource_exhausted ? unavailable(id.err().message())
                                                                : invalid_request(id.err().message());
        send_api_error(j.res, e, e.http_status == 503);
        return false;
      }
      j.choices[i].sequence = *id;
      j.choices[i].last_token = clock::now();
      j.choices[i].text_offset = j.request.echo ? j.request.prompt.size() : 0;
      owners.emplace(*id, std::make_pair(&j, i));
      ++slots_used;
    }
    prompt_tokens_->inc(static_cast<double>(j.prompt.size()));
    if (!j.request.stream) return true;
    http::sse_writer sse(j.res);
    if (!sse.begin()) {
      j.cancelled.store(true);
      return true;
    }
    for (std::size_t i = 0; i < j.choices.size(); ++i) {
      const auto chunk = stream_start_chunk(j.meta, i, j.request.include_usage, j.request.echo ? j.request.prompt : "");
      if (!chunk.empty() && !sse.event(chunk)) {
        j.cancelled.store(true);
        break;
      }
    }
    return true;
  }

  // Hands one event to its response: stream chunks, or text collected for the final answer.
  // False when the client is gone.
  bool deliver(job& j, std::size_t index, const engine::sequence_event& ev) {
    auto& c = j.choices[index];
    const bool with_logprobs = j.request.logprobs && !ev.tokens.empty();
    parsed_delta parsed;
    if (c.parser) {
      parsed = c.parser->push(ev.text);
      if (c.finished) {
        auto tail = c.parser->finish();
        parsed.reasoning += tail.reasoning;
        parsed.content += tail.content;
        for (auto& call : tail.calls) parsed.calls.push_back(std::move(call));
      }
    } else {
      parsed.content = ev.text;
    }
    const bool made_calls = c.parser && c.parser->calls() > 0;
    if (!j.request.stream) {
      c.text += parsed.content;
      c.reasoning += parsed.reasoning;
      for (auto& call : parsed.calls) c.calls.push_back(std::move(call.call));
      if (j.request.logprobs) c.tokens.insert(c.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      return true;
    }
    http::sse_writer sse(j.res);
    const auto& vocab = runtime_->vocab();
    if (!parsed.reasoning.empty() &&
        !sse.event(stream_reasoning_chunk(j.meta, index, parsed.reasoning, j.request.include_usage)))
      return false;
    if (!parsed.content.empty() || with_logprobs) {
      std::string logprobs;
      if (j.request.logprobs) logprobs = logprobs_json(j.meta.chat, vocab, ev.tokens, c.text_offset);
      if (!sse.event(stream_delta_chunk(j.meta, index, parsed.content, logprobs, j.request.include_usage))) return false;
    }
    for (const auto& call : parsed.calls) {
      for (const auto& chunk : stream_tool_call_chunks(j.meta, index, call.index, call.call, j.request.include_usage))
        if (!sse.event(chunk)) return false;
    }
    if (c.finished && !sse.event(stream_finish_chunk(j.meta, index, finish_reason_name(c.finish, made_calls),
                                                     j.request.include_usage)))
      return false;
    return true;
  }

  // Ends a job whose choices all finished: the whole answer, or the stream's tail.
  void complete(job& j) {
    usage u;
    u.prompt_tokens = static_cast<std::int64_t>(j.prompt.size());
    for (const auto& c : j.choices) {
      u.completion_tokens += c.completion_tokens;
      u.cached_tokens = std::max(u.cached_tokens, c.cached_tokens);
    }
    if (j.request.stream) {
      http::sse_writer sse(j.res);
      if (j.request.include_usage) sse.event(stream_usage_chunk(j.meta, u));
      sse.event("[DONE]");
      sse.finish();
      return;
    }
    const auto& vocab = runtime_->vocab();
    std::vector<choice_result> results;
    results.reserve(j.choices.size());
    for (auto& c : j.choices) {
      choice_result r;
      r.text = j.request.echo ? j.request.prompt + c.text : std::move(c.text);
      r.reasoning = std::move(c.reasoning);
      r.tool_calls = std::move(c.calls);
      r.finish = c.finish;
      if (j.request.logprobs) r.logprobs = logprobs_json(j.meta.chat, vocab, c.tokens, c.text_offset);
      results.push_back(std::move(r));
    }
    j.res.send(200, "application/json", final_response(j.meta, results, u));
  }

  server_options options_;
  std::string api_key_;
  std::string model_name_;
  std::int64_t created_ = 0;

  metrics::registry metrics_;
  metrics::gauge* running_;
  metrics::gauge* waiting_;
  metrics::gauge* sequences_;
  metrics::counter* prompt_tokens_;
  metrics::counter* generation_tokens_;
  metrics::histogram* ttft_;
  metrics::histogram* itl_;
  metrics::histogram* e2e_;
  metrics::gauge* kv_tokens_;
  metrics::gauge* kv_usage_;
  metrics::counter* prefix_queries_;
  metrics::counter* prefix_hits_;
  metrics::gauge* prefix_hit_rate_;
  metrics::gauge* prefix_tokens_;
  engine::prefix_cache_stats prefix_seen_;  // as last published
  metrics::family<metrics::counter>* finished_;
  metrics::family<metrics::counter>* rejected_;
  metrics::family<metrics::counter>* embedding_requests_;
  metrics::counter* embedding_tokens_;

  std::atomic<server_state> state_{server_state::loading};
  std::atomic<std::int64_t> context_{0};
  std::atomic<std::int64_t> free_slots_{0};  // published by the engine thread
  // Set by the engine thread before the state turns ready; read by handlers after that.
  std::unique_ptr<engine::runtime> runtime_;
  chat_dialect dialect_;

  std::mutex mutex_;
  std::condition_variable changed_;  // queue, state, load and drain changes
  std::deque<std::shared_ptr<job>> queue_;
  std::deque<std::shared_ptr<embedding_work>> embedding_queue_;
  std::int64_t in_flight_ = 0;     // accepted requests not yet answered in full
  std::int64_t queued_slots_ = 0;  // sequences the queued requests will take
  bool stop_requested_ = false;
  bool load_done_ = false;
  std::optional<error> load_error_;

  std::mutex stop_mutex_;  // one stop() at a time
  std::unique_ptr<http::server> http_;
  std::uint16_t port_ = 0;
  std::thread engine_;
};

result<std::unique_ptr<model_server>> model_server::start(server_options options) {
  auto p = std::make_unique<impl>(std::move(options));
  CHATAI_RETURN_IF_ERROR(p->start());
  return std::unique_ptr<model_server>(new model_server(std::move(p)));
}

model_server::model_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
model_server::~model_server() = default;

std::uint16_t model_server::port() const noexcept { return impl_->port(); }
const std::string& model_server::host() const noexcept { return impl_->host(); }
const std::string& model_server::served_model_name() const noexcept { return impl_->model_name(); }
server_state model_server::state() const noexcept { return impl_->state(); }
status model_server::wait_ready() { return impl_->wait_ready(); }
void model_server::drain() { impl_->drain(); }
void model_server::wait_drained() { impl_->wait_drained(); }
void model_server::stop() { impl_->stop(); }

}  // namespace chatai::serve
