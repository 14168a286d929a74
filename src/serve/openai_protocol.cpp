// Parsing and validation of OpenAI completion requests, and OpenAI-shaped errors.
#include "chatai/serve/openai_protocol.hpp"

#include <algorithm>
#include <cstdlib>

#include "chatai/core/json.hpp"

namespace chatai::serve {

namespace {
constexpr std::string_view where = "request body";

// Function names as OpenAI allows them: [a-zA-Z0-9_-]{1,64}.
bool valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

void append_nullable(std::string& out, const std::string& value) {
  if (value.empty()) out += "null";
  else json::append_quoted(out, value);
}

// "content": a string, or an array of {"type":"text","text":...} parts joined together.
// `null_ok`: null stands for no content (assistant messages with tool calls).
void read_content(json::reader& r, chat_message& msg, bool null_ok) {
  const auto* v = r.raw("content");
  if (!v || v->IsNull()) {
    if (!null_ok) r.fail("content", v ? "must not be null" : "is required");
    msg.content_null = true;
    return;
  }
  if (v->IsString()) {
    msg.content.assign(v->GetString(), v->GetStringLength());
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
      r.fail(key + ".type", "only \"text\" content parts are supported by this model, got \"" + std::string(type) + "\"");
      return;
    }
    if (!part.HasMember("text") || !part["text"].IsString()) {
      r.fail(key + ".text", "expected a string");
      return;
    }
    for (auto it = part.MemberBegin(); it != part.MemberEnd(); ++it) {
      const std::string_view name(it->name.GetString(), it->name.GetStringLength());
      if (name != "type" && name != "text") {
        r.fail(key + "." + std::string(name), "unknown field of a text content part");
        return;
      }
    }
    msg.content.append(part["text"].GetString(), part["text"].GetStringLength());
  }
}

// A field that must be absent (or null/false/empty): refused with `why`.
void refuse(json::reader& r, std::string_view key, std::string_view why) {
  const auto* v = r.raw(key);
  if (!v || v->IsNull() || v->IsFalse() || ((v->IsArray() || v->IsObject()) && v->Empty())) return;
  r.fail(key, why);
}

void read_tool_calls(json::reader& m, chat_message& msg) {
  m.object_array("tool_calls", false, [&](json::reader& c, std::size_t) {
    tool_call call;
    std::string type;
    c.required("id", call.id);
    c.required("type", type);
    if (!c.failed() && type != "function") c.fail("type", "must be \"function\"");
    c.object("function", true, [&](json::reader& f) {
      f.required("name", call.name);
      f.required("arguments", call.arguments);
      if (!f.failed()) {
        auto args = json::parse(call.arguments);
        if (!args || !args->IsObject()) f.fail("arguments", "must be a JSON object as text");
      }
    });
    msg.tool_calls.push_back(std::move(call));
  });
}

void read_message(json::reader& m, std::vector<chat_message>& out) {
  chat_message msg;
  m.required("role", msg.role);
  if (m.failed()) return;
  if (msg.role == "function") {
    m.fail("role", "\"function\" messages are deprecated; send \"tool\" messages with tool_call_id");
    return;
  }
  if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool" &&
      msg.role != "developer") {
    m.fail("role", "must be one of system, user, assistant, tool, developer");
    return;
  }
  const bool assistant = msg.role == "assistant";
  m.optional("name", msg.name);
  if (assistant) {
    read_tool_calls(m, msg);
    m.optional("reasoning_content", msg.reasoning_content);
    refuse(m, "refusal", "assistant refusals in the history are not supported");
    refuse(m, "audio", "audio is not supported by this model");
    refuse(m, "function_call", "is deprecated; send tool_calls");
  }
  if (msg.role == "tool") m.required("tool_call_id", msg.tool_call_id);
  read_content(m, msg, assistant && !msg.tool_calls.empty());
  out.push_back(std::move(msg));
}

// "tools": [{"type":"function","function":{"name","description","parameters","strict"}}].
void read_tools(json::reader& r, completion_request& req) {
  const auto* v = r.raw("tools");
  if (!v || v->IsNull()) return;
  if (!v->IsArray()) {
    r.fail("tools", "expected an array of tools, got " + std::string(json::type_name(*v)));
    return;
  }
  if (v->Size() > 128) {
    r.fail("tools", "at most 128 tools are allowed");
    return;
  }
  req.tools_json = json::to_string(*v);
  r.object_array("tools", false, [&](json::reader& t, std::size_t) {
    std::string type;
    t.required("type", type);
    if (!t.failed() && type != "function") {
      t.fail("type", "only \"function\" tools are supported, got \"" + type + "\"");
      return;
    }
    tool_definition def;
    t.object("function", true, [&](json::reader& f) {
      f.required("name", def.name);
      if (!f.failed() && !valid_function_name(def.name))
        f.fail("name", "must be 1 to 64 letters, digits, underscores or dashes");
      f.optional("description", def.description);
      f.optional("strict", def.strict);
      const auto* params = f.raw("parameters");
      if (params && !params->IsNull()) {
        if (!params->IsObject()) f.fail("parameters", "expected a JSON schema object");
        else def.parameters = json::to_string(*params);
      }
    });
    for (const auto& other : req.tools) {
      if (!t.failed() && other.name == def.name) t.fail("function.name", "\"" + def.name + "\" is defined twice");
    }
    req.tools.push_back(std::move(def));
  });
}

void read_tool_choice(json::reader& r, completion_request& req) {
  const auto* v = r.raw("tool_choice");
  req.tool_choice = req.tools.empty() ? tool_choice_mode::none : tool_choice_mode::auto_;
  if (!v || v->IsNull()) return;
  if (v->IsString()) {
    const std::string_view mode(v->GetString(), v->GetStringLength());
    if (mode == "none") req.tool_choice = tool_choice_mode::none;
    else if (mode == "auto") req.tool_choice = req.tools.empty() ? tool_choice_mode::none : tool_choice_mode::auto_;
    else if (mode == "required") req.tool_choice = tool_choice_mode::required;
    else r.fail("tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}");
  } else if (v->IsObject()) {
    r.object("tool_choice", false, [&](json::reader& c) {
      std::string type;
      c.required("type", type);
      if (!c.failed() && type != "function") c.fail("type", "must be \"function\"");
      c.object("function", true, [&](json::reader& f) { f.required("name", req.tool_choice_name); });
    });
    req.tool_choice = tool_choice_mode::named;
  } else {
    r.fail("tool_choice", "expected a string or an object, got " + std::string(json::type_name(*v)));
    return;
  }
  if (r.failed()) return;
  if (req.tool_choice == tool_choice_mode::required && req.tools.empty())
    r.fail("tool_choice", "\"required\" needs at least one tool in tools");
  if (req.tool_choice == tool_choice_mode::named) {
    const bool known = std::any_of(req.tools.begin(), req.tools.end(),
                                   [&](const tool_definition& t) { return t.name == req.tool_choice_name; });
    if (!known) r.fail("tool_choice", "names the function \"" + req.tool_choice_name + "\", which is not in tools");
  }
}

void read_response_format(json::reader& r, completion_request& req) {
  const auto* v = r.raw("response_format");
  if (!v || v->IsNull()) return;
  r.object("response_format", false, [&](json::reader& f) {
    std::string type;
    f.required("type", type);
    if (f.failed()) return;
    if (type == "text") {
      req.response_format = response_format_type::text;
    } else if (type == "json_object") {
      req.response_format = response_format_type::json_object;
    } else if (type == "json_schema") {
      req.response_format = response_format_type::json_schema;
      f.object("json_schema", true, [&](json::reader& s) {
        std::string name, description;
        std::optional<bool> strict;
        s.required("name", name);
        s.optional("description", description);
        s.optional("strict", strict);
        const auto* schema = s.raw("schema");
        if (!schema || schema->IsNull()) req.response_schema = "{}";
        else if (!schema->IsObject() && !schema->IsBool()) s.fail("schema", "expected a JSON schema object");
        else req.response_schema = json::to_string(*schema);
      });
    } else {
      f.fail("type", "must be \"text\", \"json_object\" or \"json_schema\", got \"" + type + "\"");
    }
  });
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
  const auto* options = r.raw("stream_options");
  if (options && !options->IsNull()) {
    if (!req.stream) r.fail("stream_options", "is only allowed when stream is true");
    r.object("stream_options", false, [&](json::reader& o) {
      o.optional("include_usage", req.include_usage);
      refuse(o, "include_obfuscation", "is not supported (chatai pads no stream events)");
    });
  }
  r.optional("user", req.user);
  // Identifiers and hints that change nothing in the answer: accepted.
  std::string ignored;
  r.optional("safety_identifier", ignored);
  r.optional("prompt_cache_key", ignored);
  std::string tier;
  r.optional("service_tier", tier);
  if (!tier.empty() && tier != "auto" && tier != "default")
    r.fail("service_tier", "only \"auto\" and \"default\" are offered");
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
  r.object_array("messages", true, [&](json::reader& m, std::size_t) { read_message(m, req.messages); });
  if (!r.failed() && req.messages.empty()) r.fail("messages", "must contain at least one message");
  read_common(r, req, limits);
  std::optional<bool> logprobs;
  r.optional("logprobs", logprobs);
  req.logprobs = logprobs.value_or(false);
  r.optional_in_range("top_logprobs", req.top_logprobs, 0, limits.max_top_logprobs);
  if (req.top_logprobs > 0 && !req.logprobs) r.fail("top_logprobs", "requires logprobs to be true");
  read_tools(r, req);
  read_tool_choice(r, req);
  r.optional("parallel_tool_calls", req.parallel_tool_calls);
  read_response_format(r, req);
  r.optional("reasoning_effort", req.reasoning_effort);
  if (!req.reasoning_effort.empty() && req.reasoning_effort != "none" && req.reasoning_effort != "minimal" &&
      req.reasoning_effort != "low" && req.reasoning_effort != "medium" && req.reasoning_effort != "high")
    r.fail("reasoning_effort", "must be none, minimal, low, medium or high");
  if (const auto* kwargs = r.raw("chat_template_kwargs"); kwargs && !kwargs->IsNull()) {
    if (!kwargs->IsObject()) r.fail("chat_template_kwargs", "expected an object of template variables");
    else req.chat_template_kwargs = json::to_string(*kwargs);
  }
  // metadata tags a stored completion; chatai stores none, as OpenAI with store false.
  if (const auto* meta = r.raw("metadata"); meta && !meta->IsNull()) {
    if (!meta->IsObject() || meta->MemberCount() > 16) r.fail("metadata", "expected an object of at most 16 strings");
    else
      for (auto it = meta->MemberBegin(); it != meta->MemberEnd(); ++it)
        if (!it->value.IsString()) r.fail("metadata", "values must be strings");
  }
  refuse(r, "store", "stored completions are not offered; omit store or set it to false");
  refuse(r, "audio", "audio output is not supported by this model");
  refuse(r, "prediction", "predicted outputs are not supported");
  refuse(r, "web_search_options", "web search is not offered");
  refuse(r, "functions", "is deprecated; send tools");
  refuse(r, "function_call", "is deprecated; send tool_choice");
  refuse(r, "verbosity", "is not supported by this model");
  if (const auto* modalities = r.raw("modalities"); modalities && !modalities->IsNull()) {
    const bool text_only = modalities->IsArray() && modalities->Size() == 1 && (*modalities)[0].IsString() &&
                           std::string_view((*modalities)[0].GetString()) == "text";
    if (!text_only) r.fail("modalities", "only [\"text\"] is supported by this model");
  }
  CHATAI_RETURN_IF_ERROR(r.finish());
  return req;
}

result<completion_request> parse_completion_request(std::string_view body, const request_limits& limits) {
  auto doc = json::parse(body);
  if (!doc) return error(errc::invalid_argument, std::string(where) + ": " + doc.err().message());
  completion_request req;
  req.chat = false;
  json::reader r(*doc, std::string(where));
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
  if (const auto* best_of = r.raw("best_of"); best_of && !best_of->IsNull()) {
    if (!best_of->IsInt64() || best_of->GetInt64() != req.n) r.fail("best_of", "only best_of equal to n is supported");
  }
  if (const auto* suffix = r.raw("suffix"); suffix && !suffix->IsNull() &&
                                            !(suffix->IsString() && suffix->GetStringLength() == 0))
    r.fail("suffix", "insertion after a suffix is not supported by this model");
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
      if (e.message.compare(close + 3, std::string::npos, "unknown field") == 0) {
        e.message = "Unrecognized request argument supplied: " + path;
        return e;
      }
      e.message = path + " " + e.message.substr(close + 3);
      if (e.message.rfind(path + " is required", 0) == 0) e.message = "'" + path + "' is a required property";
    }
  }
  return e;
}

}  // namespace chatai::serve
