// Expected failures as values: an error code with a message, and result<T> that holds a T or an error.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace chatai {

// Error categories. Each maps onto one C ABI status code (see capi/chatai.h).
enum class errc {
  ok = 0,
  invalid_argument,    // the caller passed something malformed
  not_found,           // a file, model, key or route that does not exist
  io_error,            // the operating system refused a read, write or open
  parse_error,         // malformed bytes: JSON, GGUF, HTTP, templates
  out_of_range,        // a size or index beyond a limit
  unsupported,         // well-formed, but not something chatai implements
  timeout,             // a deadline passed
  cancelled,           // the caller asked to stop
  unavailable,         // a peer or backend cannot serve now; retrying may help
  resource_exhausted,  // memory, queue or context is full
  permission_denied,   // authentication or file permission
  internal,            // a bug: an invariant did not hold
};

// The stable lowercase name of a code ("invalid_argument", ...).
std::string_view to_string(errc code) noexcept;

// An error: a code and a message for humans.
// Thread safety: a value type; distinct objects may be used from any thread.
class error {
 public:
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  // A new error with "context: " put before the message, the code unchanged.
  error with_context(std::string_view context) const;

 private:
  errc code_;
  std::string message_;
};

// Either a value or an error. Accessing the wrong side is a programming error (asserted).
// Thread safety: a value type.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  result(error err) : state_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(state_); }
  const T& value() const& { assert(ok()); return std::get<0>(state_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error& err() const& { assert(!ok()); return std::get<1>(state_); }
  error&& err() && { assert(!ok()); return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, error> state_;
};

// A success without a value, or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error err) : error_(std::move(err)), failed_(true) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const error& err() const& { assert(failed_); return error_; }
  error&& err() && { assert(failed_); return std::move(error_); }

 private:
  error error_{errc::ok, {}};
  bool failed_ = false;
};

using status = result<void>;

inline status ok_status() { return {}; }

}  // namespace chatai

// Returns the error of a failed result from the enclosing function.
#define CHATAI_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    if (auto chatai_status_ = (expr); !chatai_status_) \
      return std::move(chatai_status_).err();        \
  } while (0)
