// SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104), random bytes from getrandom(), constant-time
// comparison and hex text. Written out here rather than taken from libcrypto: chatai-gate starts
// once per request, and loading OpenSSL 3 and initialising it for one digest costs several
// milliseconds of CPU each time, more than the rest of the gate together.
#include "chatai/core/crypto.hpp"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace chatai::crypto {

namespace {

constexpr std::array<std::uint32_t, 64> round_constants = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

// The running state of one digest.
// Thread safety: a value type.
class sha256_state {
 public:
  void update(std::string_view data) {
    total_bytes_ += data.size();
    while (!data.empty()) {
      const std::size_t n = std::min(data.size(), block_.size() - filled_);
      std::memcpy(block_.data() + filled_, data.data(), n);
      filled_ += n;
      data.remove_prefix(n);
      if (filled_ == block_.size()) {
        compress();
        filled_ = 0;
      }
    }
  }

  std::string finish() {
    const std::uint64_t bits = total_bytes_ * 8;
    // A 1 bit, zeros up to 56 bytes into a block, then the length in bits, big-endian.
    static constexpr char one = static_cast<char>(0x80);
    update(std::string_view(&one, 1));
    static constexpr char zeros[64] = {};
    update(std::string_view(zeros, (block_.size() + 56 - filled_) % block_.size()));
    char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>(bits >> (56 - 8 * i));
    update(std::string_view(length, 8));
    std::string out(32, '\0');
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) out[static_cast<std::size_t>(4 * i + j)] = static_cast<char>(h_[i] >> (24 - 8 * j));
    return out;
  }

 private:
  void compress() noexcept {
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = std::uint32_t{block_[4 * i]} << 24 | std::uint32_t{block_[4 * i + 1]} << 16 |
             std::uint32_t{block_[4 * i + 2]} << 8 | std::uint32_t{block_[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                               round_constants[static_cast<std::size_t>(i)] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  std::uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  std::size_t filled_ = 0;
  std::uint64_t total_bytes_ = 0;
};

}  // namespace

result<std::string> random_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::getrandom(out.data() + done, n - done, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return error(errc::internal, std::string("getrandom failed: ") + std::strerror(errno));
    done += static_cast<std::size_t>(got);
  }
  return out;
}

result<std::string> random_hex(std::size_t n) {
  auto bytes = random_bytes(n);
  if (!bytes) return std::move(bytes).err();
  return to_hex(*bytes);
}

std::string sha256(std::string_view a, std::string_view b) {
  sha256_state state;
  state.update(a);
  state.update(b);
  return state.finish();
}

std::string hmac_sha256(std::string_view key, std::string_view message) {
  constexpr std::size_t block_size = 64;
  std::string padded_key = key.size() > block_size ? sha256(key, {}) : std::string(key);
  padded_key.resize(block_size, '\0');
  std::string inner_pad(block_size, '\0'), outer_pad(block_size, '\0');
  for (std::size_t i = 0; i < block_size; ++i) {
    inner_pad[i] = static_cast<char>(padded_key[i] ^ 0x36);
    outer_pad[i] = static_cast<char>(padded_key[i] ^ 0x5c);
  }
  return sha256(outer_pad, sha256(inner_pad, message));
}

bool equal_constant_time(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  // Read through a volatile so that the compiler cannot turn the loop into an early exit.
  volatile unsigned char result = diff;
  return result == 0;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    out += digits[u >> 4];
    out += digits[u & 15];
  }
  return out;
}

bool from_hex(std::string_view hex, std::string& out) {
  if (hex.size() % 2 != 0) return false;
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out.clear();
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = value(hex[i]);
    const int lo = value(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

}  // namespace chatai::crypto
