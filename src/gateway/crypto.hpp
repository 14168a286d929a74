// Random bytes, SHA-256 and constant-time comparison over OpenSSL's libcrypto, and hex text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

namespace chatai::gateway::detail {

// `n` bytes from the operating system's generator (RAND_bytes).
result<std::string> random_bytes(std::size_t n);
// `n` random bytes as 2n lowercase hex digits.
result<std::string> random_hex(std::size_t n);

// The 32-byte SHA-256 digest of `a` followed by `b`.
std::string sha256(std::string_view a, std::string_view b);

// Equality of two byte strings in time that depends only on their lengths.
bool equal_constant_time(std::string_view a, std::string_view b) noexcept;

std::string to_hex(std::string_view bytes);
// False when `hex` has an odd length or a character that is not a lowercase hex digit.
bool from_hex(std::string_view hex, std::string& out);

}  // namespace chatai::gateway::detail
