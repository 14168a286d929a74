// The job key proof: before the gate sends a backend the job's key or a prompt, the backend
// shows that it holds the key by answering a fresh challenge with an HMAC of it, so that a
// process that took over a dead job's port learns neither.
//
// On one connection, the gate sends
//   GET /chatai/proof HTTP/1.1
//   X-Chatai-Challenge: <64 lowercase hex digits: 32 random bytes>
// with no key and no body; the backend answers 200, Content-Type text/plain, with the body
// hex(HMAC-SHA256(job key, "chatai-job-key-proof-v1\n" + challenge)): 64 lowercase hex digits.
// The label keeps these HMACs apart from any other use of the key, and since the backend only
// ever returns HMACs of challenges it is given, the route tells nothing about the key itself.
// The gate compares the answer in constant time and only on a match sends the request, with
// "Authorization: Bearer <job key>", on the same connection.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

// Thread safety: constants and free functions, safe from any thread.
namespace chatai::key_proof {

inline constexpr std::string_view path = "/chatai/proof";
inline constexpr std::string_view challenge_header = "X-Chatai-Challenge";
inline constexpr std::string_view label = "chatai-job-key-proof-v1\n";
inline constexpr std::size_t challenge_bytes = 32;
inline constexpr std::size_t answer_hex_digits = 64;

// A fresh challenge: challenge_bytes random bytes as lowercase hex.
result<std::string> new_challenge();

// Whether `challenge` is exactly 2 x challenge_bytes lowercase hex digits.
bool valid_challenge(std::string_view challenge) noexcept;

// The answer to a challenge under `key`: hex(HMAC-SHA256(key, label + challenge)).
std::string answer(std::string_view key, std::string_view challenge);

// Whether `given` is the answer to `challenge` under `key`, compared in constant time.
bool verify(std::string_view key, std::string_view challenge, std::string_view given);

}  // namespace chatai::key_proof
