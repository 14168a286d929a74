// The job key proof: challenges, answers and their constant-time check.
#include "chatai/core/key_proof.hpp"

#include <algorithm>

#include "chatai/core/crypto.hpp"

namespace chatai::key_proof {

result<std::string> new_challenge() { return crypto::random_hex(challenge_bytes); }

bool valid_challenge(std::string_view challenge) noexcept {
  return challenge.size() == 2 * challenge_bytes && std::all_of(challenge.begin(), challenge.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string answer(std::string_view key, std::string_view challenge) {
  std::string message(label);
  message.append(challenge);
  return crypto::to_hex(crypto::hmac_sha256(key, message));
}

bool verify(std::string_view key, std::string_view challenge, std::string_view given) {
  return crypto::equal_constant_time(answer(key, challenge), given);
}

}  // namespace chatai::key_proof
