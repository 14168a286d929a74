// Parsing and validation of OpenAI completion requests, and OpenAI-shaped errors.
#include "chatai/serve/openai_protocol.hpp"

#include <cstdlib>

#include "chatai/core/json.hpp"

namespace chatai::serve {

namespace {
constexpr std::string_view where = "request body";

void append_nullable(std::string& out, const std::string& value) {
  if (value.empty()) out += "null";
  else json::append_quoted(out, value);
}

// "content": a string, or an array of {"type":"text","text":...} parts joined together.
void read_content(json::reader& r, std::string& out) {
  const auto* v = r.raw("content");
  if (!v) return;
  if (v->IsString()) {
    out.assign(v->GetString(), v->GetStringLength());
    return;
  }
  if (!v->IsArray()) {
    r.fail("content", "expected a string or an array of content parts, got " + std::string(json::type_name(*v)));
    return;
  }
  for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
    const auto& part = (*v)[i];
    const std::string key = "content[" + std::to_string(i) + "]";
    if (!part.IsObject() || !part.HasMember("type") || !part["type"].IsString()) {
      r.fail(key, "expected an object with a string \"type\"");
      return;
    }
    const std::string_view type(part["type"].GetString(), part["type"].GetStringLength());
    if (type != "text") {
      r.fail(key + ".type", "only \"text\" content parts are supported, got \"" + std::string(type) + "\"");
      return;
    }
    if (!part.HasMember("text") || !part["text"].IsString()) {
      r.fail(key + ".text", "expected a string");
      return;
    }
    out.append(part["text"].GetString(), part["text"].GetStringLength());
  }
}

void read_stop(json::reader& r, std::vector<std::string>& out, std::int64_t max_stop) {
  const auto* v = r.raw("stop");
  if (!v) return;
  if (v->IsString()) {
    out.emplace_back(v->GetString(), v->GetStringLength());
  } else if (v->IsArray()) {
    for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
      if (!(*v)[i].IsString()) {
        r.fail("stop[" + std::to_string(i) + "]", "expected a string, got " + std::string(json::type_name((*v)[i])));
        return;
      }
      out.emplace_back((*v)[i].GetString(), (*v)[i].GetStringLength());
    }
  } else {
    r.fail("stop", "expected a string or an array of strings, got " + std::string(json::type_name(*v)));
    return;
  }
  if (static_cast<std::int64_t>(out.size()) > max_stop)
    r.fail("stop", "at most " + std::to_string(max_stop) + " stop strings are allowed");
}

void read_logit_bias(json::reader& r, engine::sampling_params& sampling) {
  const auto* v = r.raw("logit_bias");
  if (!v) return;
  if (!v->IsObject()) {
    r.fail("logit_bias", "expected an object mapping token ids to numbers, got " + std::string(json::type_name(*v)));
    return;
  }
  for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it) {
    const std::string key(it->name.GetString(), it->name.GetStringLength());
    char* end = nullptr;
    const long id = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX) {
      r.fail("logit_bias", "keys must be token ids, got \"" + key + "\"");
      return;
    }
    if (!it->value.IsNumber()) {
      r.fail("logit_bias." + key, "expected a number, got " + std::string(json::type_name(it->value)));
      return;
    }
    sampling.logit_bias.emplace_back(static_cast<engine::token_id>(id), static_cast<float>(it->value.GetDouble()));
  }
}

// The fields both endpoints share.
void read_common(json::reader& r, completion_request& req, const request_limits& limits) {
  r.required("model", req.model);
  std::optional<std::int64_t> max_tokens, max_completion_tokens;
  r.optional("max_tokens", max_tokens);
  r.optional("max_completion_tokens", max_completion_tokens);
  req.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
  if (req.max_tokens && *req.max_tokens < 1)
    r.fail(max_completion_tokens ? "max_completion_tokens" : "max_tokens", "must be at least 1");

  std::optional<double> temperature, top_p, min_p, presence, frequency, repetition;
  std::optional<std::int64_t> top_k, seed;
  r.optional("temperature", temperature);
  r.optional("top_p", top_p);
  r.optional("min_p", min_p);
  r.optional("top_k", top_k);
  r.optional("presence_penalty", presence);
  r.optional("frequency_penalty", frequency);
  r.optional("repetition_penalty", repetition);
  r.optional("seed", seed);
  auto& s = req.sampling;
  if (temperature) {
    if (*temperature < 0.0 || *temperature > 2.0) r.fail("temperature", "must be between 0 and 2");
    s.temperature = static_cast<float>(*temperature);
  }
  if (top_p) {
    if (!(*top_p > 0.0 && *top_p <= 1.0)) r.fail("top_p", "must be greater than 0 and at most 1");
    s.top_p = static_cast<float>(*top_p);
  }
  if (min_p) {
    if (*min_p < 0.0 || *min_p > 1.0) r.fail("min_p", "must be between 0 and 1");
    s.min_p = static_cast<float>(*min_p);
  }
  if (top_k) {
    if (*top_k < -1 || *top_k > INT32_MAX) r.fail("top_k", "must be -1 or 0 (off) or a positive number");
    s.top_k = *top_k < 0 ? 0 : static_cast<std::int32_t>(*top_k);
  }
  if (presence) {
    if (*presence < -2.0 || *presence > 2.0) r.fail("presence_penalty", "must be between -2 and 2");
    s.presence_penalty = static_cast<float>(*presence);
  }
  if (frequency) {
    if (*frequency < -2.0 || *frequency > 2.0) r.fail("frequency_penalty", "must be between -2 and 2");
    s.frequency_penalty = static_cast<float>(*frequency);
  }
  if (repetition) {
    if (!(*repetition > 0.0 && *repetition <= 10.0)) r.fail("repetition_penalty", "must be greater than 0 and at most 10");
    s.repetition_penalty = static_cast<float>(*repetition);
  }
  if (seed) s.seed = static_cast<std::uint64_t>(*seed);
  read_logit_bias(r, s);
  if (!r.failed() && limits.vocab_size > 0) {
    for (const auto& [token, bias] : s.logit_bias) {
      if (token >= limits.vocab_size) {
        r.fail("logit_bias", "token " + std::to_string(token) + " is outside the vocabulary of " +
                                 std::to_string(limits.vocab_size));
        break;
      }
      if (bias < -100.0f || bias > 100.0f) {
        r.fail("logit_bias", "values must be between -100 and 100");
        break;
      }
    }
  }
  read_stop(r, req.stop, limits.max_stop);
  r.optional_in_range("n", req.n, 1, limits.max_n);
  r.optional("stream", req.stream);
  r.object("stream_options", false, [&](json::reader& o) {
    o.allow_unknown();
    o.optional("include_usage", req.include_usage);
  });
  if (req.include_usage && !req.stream) r.fail("stream_options", "is only allowed when stream is true");
  r.optional("user", req.user);
}
}  // namespace

std::string api_error::to_json() const {
  std::string out = "{\"error\":{\"message\":";
  json::append_quoted(out, message);
  out += ",\"type\":";
  json::append_quoted(out, type);
  out += ",\"param\":";
  append_nullable(out, param);
  out += ",\"code\":";
  append_nullable(out, code);
  out += "}}";
  return out;
}

api_error invalid_request(std::string message, std::string param) {
  api_error e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

result<completion_request> parse_chat_request(std::string_view body, const request_limits& limits) {
  auto doc = json::parse(body);
  if (!doc) return error(errc::invalid_argument, std::string(where) + ": " + doc.err().message());
  completion_request req;
  req.chat = true;
  json::reader r(*doc, std::string(where));
  r.allow_unknown();
  r.object_array("messages", true, [&](json::reader& m, std::size_t) {
    m.allow_unknown();
    chat_message msg;
    m.required("role", msg.role);
    if (!m.failed() && msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool" &&
        msg.role != "developer")
      m.fail("role", "must be one of system, user, assistant, tool, developer");
    read_content(m, msg.content);
    req.messages.push_back(std::move(msg));
  });
  if (!r.failed() && req.messages.empty()) r.fail("messages", "must contain at least one message");
  read_common(r, req, limits);
  std::optional<bool> logprobs;
  r.optional("logprobs", logprobs);
  req.logprobs = logprobs.value_or(false);
  r.optional_in_range("top_logprobs", req.top_logprobs, 0, limits.max_top_logprobs);
  if (req.top_logprobs > 0 && !req.logprobs) r.fail("top_logprobs", "requires logprobs to be true");
  CHATAI_RETURN_IF_ERROR(r.finish());
  return req;
}

result<completion_request> parse_completion_request(std::string_view body, const request_limits& limits) {
  auto doc = json::parse(body);
  if (!doc) return error(errc::invalid_argument, std::string(where) + ": " + doc.err().message());
  completion_request req;
  req.chat = false;
  json::reader r(*doc, std::string(where));
  r.allow_unknown();
  const auto* prompt = r.raw("prompt");
  if (!prompt) {
    r.fail("prompt", "is required");
  } else if (prompt->IsString()) {
    req.prompt.assign(prompt->GetString(), prompt->GetStringLength());
  } else if (prompt->IsArray() && prompt->Size() == 1 && (*prompt)[0].IsString()) {
    req.prompt.assign((*prompt)[0].GetString(), (*prompt)[0].GetStringLength());
  } else {
    r.fail("prompt", "expected a string (or an array holding one string), got " + std::string(json::type_name(*prompt)));
  }
  read_common(r, req, limits);
  r.optional("echo", req.echo);
  // In the legacy endpoint, logprobs is the number of top log-probabilities.
  std::optional<std::int64_t> logprobs;
  r.optional("logprobs", logprobs);
  if (logprobs) {
    if (*logprobs < 0 || *logprobs > limits.max_top_logprobs)
      r.fail("logprobs", "must be between 0 and " + std::to_string(limits.max_top_logprobs));
    req.logprobs = true;
    req.top_logprobs = *logprobs;
  }
  CHATAI_RETURN_IF_ERROR(r.finish());
  return req;
}

api_error to_api_error(const error& err) {
  api_error e;
  e.message = err.message();
  if (e.message.rfind(std::string(where) + ": ", 0) == 0) e.message.erase(0, where.size() + 2);
  // json::reader names the field as "field 'path': "; the path's first part is the parameter.
  constexpr std::string_view marker = "field '";
  if (e.message.rfind(marker, 0) == 0) {
    const auto close = e.message.find("': ", marker.size());
    if (close != std::string::npos) {
      const std::string path = e.message.substr(marker.size(), close - marker.size());
      e.param = path.substr(0, path.find_first_of(".["));
      e.message = path + " " + e.message.substr(close + 3);
      if (e.message.rfind(path + " is required", 0) == 0) e.message = "'" + path + "' is a required property";
    }
  }
  return e;
}

}  // namespace chatai::serve
