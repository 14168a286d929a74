// Random bytes, SHA-256, HMAC-SHA256, constant-time comparison and hex text: shared by the
// gateway (API keys), the gate and the model server (the job key proof).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

// Thread safety: free functions, safe to call from any thread.
namespace chatai::crypto {

// `n` bytes from the operating system's generator (getrandom).
result<std::string> random_bytes(std::size_t n);
// `n` random bytes as 2n lowercase hex digits.
result<std::string> random_hex(std::size_t n);

// The 32-byte SHA-256 digest of `a` followed by `b`.
std::string sha256(std::string_view a, std::string_view b);

// The 32-byte HMAC-SHA256 of `message` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view message);

// Equality of two byte strings in time that depends only on their lengths.
bool equal_constant_time(std::string_view a, std::string_view b) noexcept;

std::string to_hex(std::string_view bytes);
// False when `hex` has an odd length or a character that is not a lowercase hex digit.
bool from_hex(std::string_view hex, std::string& out);

}  // namespace chatai::crypto
