// The gate protocol's commands, field rules, request encoding, body rule and status document.
#include "chatai/proto/wire.hpp"

#include <rapidjson/document.h>

#include <algorithm>

#include "chatai/core/json.hpp"

namespace chatai::proto {

namespace {

bool in_charset(std::string_view s, std::string_view extra) noexcept {
  for (const char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

constexpr std::string_view user_tag_extra = "._:@+=-";

}  // namespace

std::string_view command_name(command c) noexcept {
  switch (c) {
    case command::keep_alive: return "keep-alive";
    case command::status: return "status";
    case command::request: return "request";
    case command::session: return "session";
  }
  return "request";
}

result<command> parse_command(const char* original_command) {
  if (!original_command) return error(errc::invalid_argument, "no command given (SSH_ORIGINAL_COMMAND is not set)");
  const std::string_view given(original_command);
  for (const command c : {command::keep_alive, command::status, command::request, command::session})
    if (given == command_name(c)) return c;
  return error(errc::invalid_argument, "unknown command: the gate accepts keep-alive, status, request and session");
}

bool valid_request_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 128 && in_charset(id, "._:-");
}

bool valid_user_tag(std::string_view user) noexcept { return user.size() <= 128 && in_charset(user, user_tag_extra); }

bool valid_service_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 128 && id != "." && id != ".." && in_charset(id, "._:-");
}

bool valid_affinity(std::string_view key) noexcept {
  return key.size() <= 32 && std::all_of(key.begin(), key.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

namespace {

// FNV-1a over bytes, 64 bits.
void fnv(std::uint64_t& h, std::string_view bytes) noexcept {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h ^= 0xff;  // ends a field, so that fields do not run into each other
  h *= 0x100000001b3ull;
}

}  // namespace

std::string affinity_key(std::string_view user, std::string_view path, const rapidjson::Value& body) {
  if (!body.IsObject()) return {};
  const rapidjson::Value* doc = &body;
  std::uint64_t h = 0xcbf29ce484222325ull;
  fnv(h, user);
  if (path == "/v1/chat/completions") {
    const auto messages = doc->FindMember("messages");
    if (messages == doc->MemberEnd() || !messages->value.IsArray() || messages->value.Empty()) return {};
    for (const auto& m : messages->value.GetArray()) {
      if (!m.IsObject()) return {};
      const auto role = m.FindMember("role");
      const auto content = m.FindMember("content");
      if (role == m.MemberEnd() || !role->value.IsString()) return {};
      const std::string_view r(role->value.GetString(), role->value.GetStringLength());
      fnv(h, r);
      if (content != m.MemberEnd() && content->value.IsString())
        fnv(h, std::string_view(content->value.GetString(), content->value.GetStringLength()));
      else if (content != m.MemberEnd())
        fnv(h, json::to_string(content->value));
      if (r == "user") break;
    }
  } else if (path == "/v1/completions") {
    const auto prompt = doc->FindMember("prompt");
    if (prompt == doc->MemberEnd() || !prompt->value.IsString()) return {};
    fnv(h, std::string_view(prompt->value.GetString(), std::min<std::size_t>(prompt->value.GetStringLength(), 1024)));
  } else {
    return {};
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<std::size_t>(i)] = digits[h & 15];
  return out;
}

bool valid_model_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 256) return false;
  for (const char c : name)
    if (c <= 0x20 || c >= 0x7F) return false;
  return true;
}

std::string user_tag(std::string_view user) {
  std::string out;
  for (const char c : user.substr(0, 128)) out += in_charset(std::string_view(&c, 1), user_tag_extra) ? c : '_';
  return out;
}

std::string encode_request(const request& r) {
  std::string out = "{\"v\":1,\"id\":";
  json::append_quoted(out, r.id);
  out += ",\"user\":";
  json::append_quoted(out, r.user);
  out += ",\"service\":";
  json::append_quoted(out, r.service);
  out += ",\"method\":";
  json::append_quoted(out, r.method);
  out += ",\"path\":";
  json::append_quoted(out, r.path);
  if (!r.affinity.empty()) {
    out += ",\"affinity\":";
    json::append_quoted(out, r.affinity);
  }
  out += ",\"headers\":{";
  for (std::size_t i = 0; i < r.headers.size(); ++i) {
    if (i) out += ',';
    json::append_quoted(out, r.headers[i].first);
    out += ':';
    json::append_quoted(out, r.headers[i].second);
  }
  out += "},\"body_length\":";
  out += std::to_string(r.body.size());
  out += "}\n";
  out += r.body;
  return out;
}

result<prepared_body> prepare_body(std::string_view body) {
  const auto bad = [](std::string message) { return error(errc::invalid_argument, std::move(message)); };
  prepared_body out;
  out.body = std::string(body);
  if (body.empty()) return out;
  auto doc = json::parse(body);
  if (!doc || !doc->IsObject()) return out;
  const rapidjson::Value& root = *doc;
  const auto stream = root.FindMember("stream");
  if (stream == root.MemberEnd() || !stream->value.IsBool() || !stream->value.GetBool()) return out;
  out.stream = true;
  auto& alloc = doc->GetAllocator();
  const auto options = root.FindMember("stream_options");
  if (options == root.MemberEnd() || options->value.IsNull()) {
    doc->RemoveMember("stream_options");
    rapidjson::Value fresh(rapidjson::kObjectType);
    fresh.AddMember("include_usage", true, alloc);
    doc->AddMember("stream_options", fresh, alloc);
  } else if (!options->value.IsObject()) {
    return bad("body field 'stream_options' must be an object");
  } else {
    int given = 0;
    bool client_asked_usage = false;
    for (auto it = options->value.MemberBegin(); it != options->value.MemberEnd(); ++it) {
      if (std::string_view(it->name.GetString(), it->name.GetStringLength()) != "include_usage") continue;
      if (!it->value.IsBool()) return bad("body field 'stream_options.include_usage' must be a boolean");
      if (given++ == 0) client_asked_usage = it->value.GetBool();
    }
    if (client_asked_usage && given == 1) return out;
    // One include_usage, true: a backend that would read a later duplicate sees the same.
    rapidjson::Value& writable = (*doc)["stream_options"];
    while (writable.RemoveMember("include_usage")) {
    }
    writable.AddMember("include_usage", true, alloc);
  }
  out.body = json::to_string(*doc);
  return out;
}

std::string encode_status(const status_document& doc) {
  std::string out = "{\"v\":1,\"generation\":" + std::to_string(doc.generation) + ",\"services\":[";
  for (std::size_t i = 0; i < doc.services.size(); ++i) {
    const auto& s = doc.services[i];
    if (i) out += ',';
    out += "{\"id\":";
    json::append_quoted(out, s.id);
    out += ",\"models\":";
    json::append_string_array(out, s.models);
    out += ",\"can_scale_from_zero\":";
    out += s.can_scale_from_zero ? "true" : "false";
    out += ",\"backends\":{\"ready\":" + std::to_string(s.ready) + ",\"starting\":" + std::to_string(s.starting) +
           ",\"draining\":" + std::to_string(s.draining) + ",\"pending\":" + std::to_string(s.pending) +
           "},\"open_breakers\":" + std::to_string(s.open_breakers) + ",\"in_flight\":" + std::to_string(s.in_flight) +
           "}";
  }
  out += "]}";
  return out;
}

result<status_document> parse_status(std::string_view text) {
  auto doc = json::parse(text);
  if (!doc) return std::move(doc).err().with_context("the gate's status");
  status_document out;
  json::reader top(*doc, "the gate's status");
  top.allow_unknown();
  top.optional("generation", out.generation);
  top.object_array("services", true, [&](json::reader& r, std::size_t) {
    r.allow_unknown();
    service_status s;
    r.required("id", s.id);
    r.optional("models", s.models);
    r.optional("can_scale_from_zero", s.can_scale_from_zero);
    r.object("backends", false, [&](json::reader& b) {
      b.allow_unknown();
      b.optional("ready", s.ready);
      b.optional("starting", s.starting);
      b.optional("draining", s.draining);
      b.optional("pending", s.pending);
    });
    r.optional("open_breakers", s.open_breakers);
    r.optional("in_flight", s.in_flight);
    if (!r.failed()) out.services.push_back(std::move(s));
  });
  CHATAI_RETURN_IF_ERROR(top.finish());
  return out;
}

}  // namespace chatai::proto
