// Python bindings of a loaded model: chatai.Model (tokenizing, chat templates, generation)
// and chatai.Stream, the iterator of generated text.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chatai/engine/completion.hpp"
#include "chatai/engine/runtime.hpp"
#include "common.hpp"

namespace py = pybind11;

namespace chatai::python {

namespace {

using engine::completion;
using engine::runtime;

// The runtime and the lock that keeps its backend to one driver; shared by the model and its
// streams, so that a stream outlives a dropped Model.
struct model_state {
  std::unique_ptr<runtime> rt;
  std::mutex compute_mutex;
};

// Generation settings as Python passes them.
struct generate_args {
  std::int64_t max_tokens;
  float temperature;
  float top_p;
  std::int32_t top_k;
  std::optional<std::uint64_t> seed;
  std::vector<std::string> stop;
};

// One generation, read piece by piece. Thread safety: any thread may call any member; steps
// and close() take the model's lock, the GIL released.
class py_stream {
 public:
  py_stream(std::shared_ptr<model_state> state, std::unique_ptr<completion> run)
      : state_(std::move(state)), run_(std::move(run)), prompt_tokens_(run_->prompt_tokens()) {}
  py_stream(const py_stream&) = delete;
  py_stream& operator=(const py_stream&) = delete;

  ~py_stream() { close(); }

  // The next piece of text; StopIteration at the end or after close().
  std::string next() {
    std::string piece;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard lock(state_->compute_mutex);
      while (run_ != nullptr && piece.empty()) {
        auto step = run_->next();
        if (run_->done()) finish();
        if (!step) throw python_error(step.err());
        piece = std::move(step).value();
      }
    }
    if (piece.empty()) throw py::stop_iteration();
    return piece;
  }

  // Stops the generation and frees its cache; later next() calls raise StopIteration.
  void close() {
    locked([this] {
      if (run_ == nullptr) return;
      finish();
      finish_reason_ = engine::finish_reason::cancelled;
    });
  }

  std::optional<std::string> finish_reason() const {
    const auto reason = locked([this] { return finish_reason_; });
    if (reason == engine::finish_reason::none) return std::nullopt;
    return std::string(engine::to_string(reason));
  }
  std::int64_t prompt_tokens() const { return prompt_tokens_; }
  std::int64_t completion_tokens() const {
    return locked([this] { return run_ != nullptr ? run_->completion_tokens() : completion_tokens_; });
  }

 private:
  // Runs `fn` under the model's lock, the GIL released: a step may be running on another thread.
  template <class Fn>
  auto locked(Fn fn) const -> decltype(fn()) {
    py::gil_scoped_release unlocked;
    std::lock_guard lock(state_->compute_mutex);
    return fn();
  }

  // Keeps the counts and reason, then releases the sequence. Called with the lock held.
  void finish() {
    completion_tokens_ = run_->completion_tokens();
    finish_reason_ = run_->reason();
    run_.reset();
  }

  std::shared_ptr<model_state> state_;
  std::unique_ptr<completion> run_;  // null once finished or closed
  const std::int64_t prompt_tokens_;
  engine::finish_reason finish_reason_ = engine::finish_reason::none;
  std::int64_t completion_tokens_ = 0;
};

// A loaded model. Thread safety: any thread may call any member; generation steps of all its
// streams take turns on the backend.
class py_model {
 public:
  py_model(const std::string& path, const std::string& device, int threads) : state_(std::make_shared<model_state>()) {
    if (threads < 0) throw python_error(error(errc::invalid_argument, "threads must not be negative"));
    engine::runtime_options opts;
    opts.model_path = path;
    opts.device = device;
    opts.threads = threads;
    py::gil_scoped_release unlocked;
    state_->rt = value_or_raise(runtime::load(opts));
  }

  std::vector<engine::token_id> tokenize(const std::string& text, bool add_bos, bool special) const {
    py::gil_scoped_release unlocked;
    return state_->rt->vocab().encode(text, {.add_bos = add_bos, .parse_special = special});
  }

  py::str detokenize(const std::vector<engine::token_id>& ids) const {
    return to_str(value_or_raise(state_->rt->vocab().decode(ids)));
  }

  py::str apply_template(const py::object& messages, bool add_generation_prompt) const {
    const std::string json = messages_json(messages);
    std::string text;
    {
      py::gil_scoped_release unlocked;
      text = value_or_raise(engine::render_messages_json(*state_->rt, json, add_generation_prompt));
    }
    return to_str(text);
  }

  std::unique_ptr<py_stream> generate(const std::string& prompt, const generate_args& args) { return start(prompt, false, args); }

  std::unique_ptr<py_stream> chat(const py::object& messages, const generate_args& args) {
    const std::string json = messages_json(messages);
    std::string prompt;
    {
      py::gil_scoped_release unlocked;
      prompt = value_or_raise(engine::render_messages_json(*state_->rt, json, true));
    }
    return start(prompt, true, args);
  }

  std::int32_t vocab_size() const { return state_->rt->vocab().size(); }
  std::int64_t context_length() const { return state_->rt->hparams().n_ctx_train; }

 private:
  static std::string messages_json(const py::object& messages) {
    return py::module_::import("json").attr("dumps")(messages, py::arg("ensure_ascii") = false).cast<std::string>();
  }

  std::unique_ptr<py_stream> start(std::string prompt, bool is_chat, const generate_args& args) {
    engine::completion_request req;
    req.prompt = std::move(prompt);
    req.is_chat = is_chat;
    req.max_tokens = args.max_tokens;
    req.sampling.temperature = args.temperature;
    req.sampling.top_p = args.top_p;
    req.sampling.top_k = args.top_k;
    req.sampling.seed = args.seed;
    req.stop = args.stop;
    if (req.max_tokens < 1) throw python_error(error(errc::invalid_argument, "max_tokens must be at least 1"));
    std::unique_ptr<completion> run;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard lock(state_->compute_mutex);
      run = value_or_raise(completion::start(*state_->rt, std::move(req)));
    }
    return std::make_unique<py_stream>(state_, std::move(run));
  }

  std::shared_ptr<model_state> state_;
};

generate_args make_args(std::int64_t max_tokens, float temperature, float top_p, std::int32_t top_k,
                        std::optional<std::uint64_t> seed, std::optional<std::vector<std::string>> stop) {
  return {max_tokens, temperature, top_p, top_k, seed, stop.value_or(std::vector<std::string>{})};
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<py_stream>(m, "Stream",
                        "The text of one generation, piece by piece. Closing it (or leaving a `with` block, or "
                        "dropping it) stops the generation.")
      .def("__iter__", [](py_stream& s) -> py_stream& { return s; })
      .def("__next__", &py_stream::next)
      .def("close", &py_stream::close, "Stops the generation; iteration then ends.")
      .def("__enter__", [](py_stream& s) -> py_stream& { return s; })
      .def("__exit__", [](py_stream& s, const py::args&) { s.close(); })
      .def_property_readonly("finish_reason", &py_stream::finish_reason,
                             "None while running; then 'stop' (end of text or a stop string), 'length' or "
                             "'cancelled'.")
      .def_property_readonly("prompt_tokens", &py_stream::prompt_tokens)
      .def_property_readonly("completion_tokens", &py_stream::completion_tokens);

  py::class_<py_model>(m, "Model", "A model loaded for inference from a GGUF file.")
      .def(py::init<const std::string&, const std::string&, int>(), py::arg("path"), py::arg("device") = "auto",
           py::arg("threads") = 0,
           "Loads the model. device: 'cpu', 'cuda' or 'auto'; threads: CPU threads, 0 for one per hardware "
           "thread.")
      .def("tokenize", &py_model::tokenize, py::arg("text"), py::arg("add_bos") = false, py::arg("special") = false,
           "The token ids of `text`; `special` reads control tokens' text (<|im_start|>) as those tokens.")
      .def("detokenize", &py_model::detokenize, py::arg("ids"), "The text of token ids (control tokens give none).")
      .def("apply_template", &py_model::apply_template, py::arg("messages"), py::arg("add_generation_prompt") = true,
           "The prompt that the model's chat template makes of `messages` (a list of {'role', 'content'} dicts).")
      .def(
          "generate",
          [](py_model& self, const std::string& prompt, std::int64_t max_tokens, float temperature, float top_p,
             std::int32_t top_k, std::optional<std::uint64_t> seed, std::optional<std::vector<std::string>> stop) {
            return self.generate(prompt, make_args(max_tokens, temperature, top_p, top_k, seed, std::move(stop)));
          },
          py::arg("prompt"), py::kw_only(), py::arg("max_tokens") = 256, py::arg("temperature") = 1.0f,
          py::arg("top_p") = 1.0f, py::arg("top_k") = 0, py::arg("seed") = py::none(), py::arg("stop") = py::none(),
          "Continues `prompt`: a Stream of text pieces. temperature 0 is greedy; the same seed gives the same text; "
          "the text ends before any of the `stop` strings.")
      .def(
          "chat",
          [](py_model& self, const py::object& messages, std::int64_t max_tokens, float temperature, float top_p,
             std::int32_t top_k, std::optional<std::uint64_t> seed, std::optional<std::vector<std::string>> stop) {
            return self.chat(messages, make_args(max_tokens, temperature, top_p, top_k, seed, std::move(stop)));
          },
          py::arg("messages"), py::kw_only(), py::arg("max_tokens") = 256, py::arg("temperature") = 1.0f,
          py::arg("top_p") = 1.0f, py::arg("top_k") = 0, py::arg("seed") = py::none(), py::arg("stop") = py::none(),
          "The assistant's answer to `messages` through the chat template: a Stream of text pieces, as generate().")
      .def_property_readonly("vocab_size", &py_model::vocab_size)
      .def_property_readonly("context_length", &py_model::context_length);
}

}  // namespace chatai::python
