// Helpers shared by the C ABI's translation units: the thread-local last error and the
// guard that turns C++ errors and exceptions into chatai_status codes.
#pragma once

#include <exception>
#include <type_traits>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "chatai.h"
#include "chatai/core/status.hpp"

namespace chatai::capi {

chatai_status to_status(errc code) noexcept;

// Records `err` as this thread's last error and returns its status code.
chatai_status fail(const error& err) noexcept;
chatai_status fail(chatai_status code, const char* message) noexcept;

// Copies `text` into a caller's buffer as chatai.h describes for its string outputs: sets
// *length (if not NULL) to text.size(), writes at most buffer_size - 1 bytes and a NUL, and
// returns CHATAI_ERROR_OUT_OF_RANGE when the text was cut.
chatai_status copy_out(std::string_view text, char* buffer, size_t buffer_size, size_t* length) noexcept;

// Runs `fn` (returning chatai_status or status) and converts any exception.
template <class Fn>
chatai_status guard(Fn&& fn) noexcept {
  try {
    chatai_clear_error();
    if constexpr (std::is_same_v<decltype(fn()), status>) {
      auto st = fn();
      return st ? CHATAI_OK : fail(st.err());
    } else {
      return fn();
    }
  } catch (const std::bad_alloc&) {
    return fail(CHATAI_ERROR_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    return fail(CHATAI_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(CHATAI_ERROR_INTERNAL, "unknown exception");
  }
}

}  // namespace chatai::capi
