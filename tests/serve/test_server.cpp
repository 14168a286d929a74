// model_server in-process on the real model: health, models, a completion, a stream,
// embeddings, errors, API keys and draining, through the HTTP client.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "chatai/core/http_client.hpp"
#include "chatai/core/json.hpp"
#include "chatai/serve/server.hpp"

using namespace chatai;

namespace {

serve::server_options test_options() {
  serve::server_options o;
  o.model_path = CHATAI_TEST_MODEL;
  o.served_model_name = "smol";
  o.context = 256;
  o.threads = 2;
  return o;
}

http::client_response call(const serve::model_server& s, std::string method, std::string target, std::string body = {},
                           std::string key = {}) {
  http::client_request req;
  req.method = std::move(method);
  req.host = "127.0.0.1";
  req.port = s.port();
  req.target = std::move(target);
  req.body = std::move(body);
  if (!req.body.empty()) req.headers.add("Content-Type", "application/json");
  if (!key.empty()) req.headers.add("Authorization", "Bearer " + key);
  auto r = http::fetch(req);
  REQUIRE(r.ok());
  return std::move(*r);
}

}  // namespace

TEST_CASE("model_server answers OpenAI requests on the real model") {
  auto started = serve::model_server::start(test_options());
  REQUIRE(started.ok());
  auto& s = **started;
  REQUIRE(s.wait_ready().ok());
  CHECK(s.state() == serve::server_state::ready);
  CHECK(s.port() > 0);

  CHECK(call(s, "GET", "/health").body == R"({"status":"ok"})");
  auto models = call(s, "GET", "/v1/models");
  CHECK(models.status == 200);
  CHECK(models.body.find(R"("id":"smol")") != std::string::npos);

  auto r = call(s, "POST", "/v1/chat/completions",
                R"({"model":"smol","messages":[{"role":"user","content":"Hi"}],"max_tokens":3,"temperature":0})");
  CHECK(r.status == 200);
  auto doc = json::parse(r.body);
  REQUIRE(doc.ok());
  CHECK((*doc)["usage"]["completion_tokens"].GetInt64() <= 3);
  CHECK(std::string((*doc)["id"].GetString()).rfind("chatcmpl-", 0) == 0);

  auto stream = call(s, "POST", "/v1/completions", R"({"model":"smol","prompt":"Hello","max_tokens":2,"stream":true})");
  CHECK(stream.status == 200);
  CHECK(stream.body.ends_with("data: [DONE]\n\n"));

  auto missing = call(s, "POST", "/v1/chat/completions", R"({"model":"other","messages":[{"role":"user","content":"x"}]})");
  CHECK(missing.status == 404);
  CHECK(missing.body.find(R"("code":"model_not_found")") != std::string::npos);
  auto bad = call(s, "POST", "/v1/chat/completions", R"({"model":"smol","messages":"x"})");
  CHECK(bad.status == 400);
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += "word ";
  auto too_long = call(s, "POST", "/v1/completions", R"({"model":"smol","prompt":")" + long_prompt + "\"}");
  CHECK(too_long.status == 400);
  CHECK(too_long.body.find("context_length_exceeded") != std::string::npos);
  CHECK(too_long.body.find("256") != std::string::npos);

  auto embedded = call(s, "POST", "/v1/embeddings", R"({"model":"smol","input":["Hello","world"],"encoding_format":"float"})");
  CHECK(embedded.status == 200);
  auto vectors = json::parse(embedded.body);
  REQUIRE(vectors.ok());
  REQUIRE((*vectors)["data"].Size() == 2);
  CHECK((*vectors)["data"][1]["embedding"].Size() == 576);
  CHECK((*vectors)["usage"]["prompt_tokens"].GetInt64() == 2);
  auto embed_missing = call(s, "POST", "/v1/embeddings", R"({"model":"other","input":"x"})");
  CHECK(embed_missing.status == 404);
  CHECK(embed_missing.body.find(R"("code":"model_not_found")") != std::string::npos);
  auto embed_long = call(s, "POST", "/v1/embeddings", R"({"model":"smol","input":")" + long_prompt + "\"}");
  CHECK(embed_long.status == 400);
  CHECK(embed_long.body.find("context_length_exceeded") != std::string::npos);

  auto metrics = call(s, "GET", "/metrics");
  CHECK(metrics.body.find("chatai_time_to_first_token_seconds_bucket") != std::string::npos);
  CHECK(metrics.body.find(R"(chatai_embedding_requests_total{outcome="ok"} 1)") != std::string::npos);
  CHECK(metrics.body.find("chatai_embedding_tokens_total 2") != std::string::npos);

  s.drain();
  s.wait_drained();
  CHECK(call(s, "GET", "/health").body == R"({"status":"draining"})");
  CHECK(call(s, "POST", "/v1/completions", R"({"model":"smol","prompt":"x"})").status == 503);
  s.stop();
  CHECK(s.state() == serve::server_state::stopped);
}

TEST_CASE("model_server requires the API key from its file") {
  const auto dir = std::filesystem::temp_directory_path() / ("chatai_serve_key_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto key_file = dir / "key";
  std::ofstream(key_file) << "k-123\n";
  ::chmod(key_file.c_str(), 0644);
  auto o = test_options();
  o.api_key_file = key_file;
  auto refused = serve::model_server::start(o);
  REQUIRE(!refused.ok());
  CHECK(refused.err().code() == errc::permission_denied);

  ::chmod(key_file.c_str(), 0600);
  auto started = serve::model_server::start(o);
  REQUIRE(started.ok());
  auto& s = **started;
  REQUIRE(s.wait_ready().ok());
  CHECK(call(s, "GET", "/health").status == 200);
  CHECK(call(s, "GET", "/v1/models").status == 401);
  CHECK(call(s, "GET", "/v1/models", {}, "wrong").status == 401);
  CHECK(call(s, "GET", "/v1/models", {}, "k-123").status == 200);
  CHECK(call(s, "POST", "/v1/embeddings", R"({"model":"smol","input":"x"})").status == 401);
  CHECK(call(s, "POST", "/v1/embeddings", R"({"model":"smol","input":"x"})", "k-123").status == 200);
  CHECK(call(s, "GET", "/metrics", {}, "k-123").body.find("k-123") == std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("model_server reports a model that cannot be loaded") {
  auto o = test_options();
  o.model_path = "/nonexistent/model.gguf";
  auto started = serve::model_server::start(o);
  REQUIRE(started.ok());
  auto ready = (*started)->wait_ready();
  REQUIRE(!ready.ok());
  CHECK(ready.err().code() == errc::not_found);
  auto health = call(**started, "GET", "/health");
  CHECK(health.status == 503);
  CHECK(health.body.find("failed") != std::string::npos);
}
