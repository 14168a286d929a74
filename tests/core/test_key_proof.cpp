// Tests of the crypto helpers and the job key proof: known SHA-256 and HMAC-SHA256 values,
// challenge checks, and answers that depend on the key, the challenge and the label.
#include <doctest/doctest.h>

#include "chatai/core/crypto.hpp"
#include "chatai/core/key_proof.hpp"

using namespace chatai;

TEST_CASE("SHA-256 gives the FIPS 180-4 values, across the padding boundaries") {
  CHECK(crypto::to_hex(crypto::sha256("abc", "")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(crypto::to_hex(crypto::sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmn", "lmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // hashlib.sha256(b"a" * n).hexdigest()
  struct row {
    std::size_t n;
    const char* digest;
  };
  for (const auto& [n, digest] : {
           row{0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
           row{1, "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"},
           row{55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
           row{56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
           row{57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
           row{63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
           row{64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
           row{65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
           row{119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
           row{120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
           row{128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
           row{1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
       }) {
    CAPTURE(n);
    const std::string text(n, 'a');
    CHECK(crypto::to_hex(crypto::sha256(text, "")) == digest);
    // Split anywhere, the digest is that of the whole.
    CHECK(crypto::to_hex(crypto::sha256(std::string_view(text).substr(0, n / 3), std::string_view(text).substr(n / 3))) ==
          digest);
  }
}

TEST_CASE("HMAC-SHA256 gives the RFC 4231 values, for keys shorter and longer than a block") {
  CHECK(crypto::to_hex(crypto::hmac_sha256(std::string(20, '\x0b'), "Hi There")) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(crypto::to_hex(crypto::hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(crypto::to_hex(crypto::hmac_sha256(std::string(131, '\xaa'),
                                           "Test Using Larger Than Block-Size Key - Hash Key First")) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  CHECK(crypto::to_hex(crypto::hmac_sha256(std::string(64, 'k'), "m")) ==
        "3b7a8d453e76edb519238a515105a57508d0f169f480ebeee120a9e7803289fa");
  CHECK(crypto::to_hex(crypto::hmac_sha256(std::string(65, 'k'), "m")) ==
        "c2d7d4c2256ddb097409ec0c67e1d58fa1a007fc6932cac0d892a525d08af7cc");
  CHECK(crypto::to_hex(crypto::hmac_sha256("key", "The quick brown fox jumps over the lazy dog")) ==
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
  CHECK(crypto::to_hex(crypto::hmac_sha256("", "")) ==
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST_CASE("constant-time equality, random bytes and hex") {
  CHECK(crypto::equal_constant_time("abc", "abc"));
  CHECK(crypto::equal_constant_time("", ""));
  CHECK_FALSE(crypto::equal_constant_time("abc", "abd"));
  CHECK_FALSE(crypto::equal_constant_time("abc", "ab"));
  auto a = crypto::random_bytes(32);
  auto b = crypto::random_bytes(32);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->size() == 32);
  CHECK(*a != *b);
  std::string back;
  CHECK(crypto::from_hex(crypto::to_hex(*a), back));
  CHECK(back == *a);
  CHECK_FALSE(crypto::from_hex("abc", back));
  CHECK_FALSE(crypto::from_hex("AB", back));
}

TEST_CASE("a proof answers one challenge under one key") {
  const std::string key = "secret-key-0123456789";
  const std::string challenge(64, '0');
  // hmac.new(key, b"chatai-job-key-proof-v1\n" + challenge, sha256).hexdigest(), as the Python
  // stand-in backends compute it.
  CHECK(key_proof::answer(key, challenge) == "8e2ae13f1d538a1e6d174887e6f0a93ef1b13477d34ec00b1bcfd99901c9a48d");
  CHECK(key_proof::verify(key, challenge, key_proof::answer(key, challenge)));
  CHECK_FALSE(key_proof::verify("another-key-0123456789", challenge, key_proof::answer(key, challenge)));
  CHECK_FALSE(key_proof::verify(key, std::string(63, '0') + "1", key_proof::answer(key, challenge)));
  CHECK_FALSE(key_proof::verify(key, challenge, ""));
  CHECK_FALSE(key_proof::verify(key, challenge, key_proof::answer(key, challenge) + "0"));
  // Without the label it would be a plain HMAC of the challenge.
  CHECK(key_proof::answer(key, challenge) != crypto::to_hex(crypto::hmac_sha256(key, challenge)));
}

TEST_CASE("challenges are fresh and exactly 64 lowercase hex digits") {
  auto a = key_proof::new_challenge();
  auto b = key_proof::new_challenge();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a != *b);
  CHECK(key_proof::valid_challenge(*a));
  for (const std::string& bad : {std::string(), std::string(63, 'a'), std::string(65, 'a'), std::string(64, 'A'),
                                std::string(63, 'a') + "g", std::string(63, 'a') + " ", std::string(128, 'a')}) {
    CAPTURE(bad);
    CHECK_FALSE(key_proof::valid_challenge(bad));
  }
}
