// The strict request reader: header line, allowlists, exact body length, usage for streams.
#include "chatai/gate/request.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "chatai/core/json.hpp"

namespace chatai::gate {

namespace {

constexpr std::size_t max_headers = 16;
constexpr std::size_t max_header_value = 256;
// The line is flat but for its "headers" object. (Bodies are bounded by json::parse's
// max_depth like every other document.)
constexpr int max_head_depth = 2;

error bad(std::string message) { return error(errc::invalid_argument, std::move(message)); }

bool in_charset(std::string_view s, std::string_view extra) {
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           extra.find(c) != std::string_view::npos;
  });
}

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// The deepest nesting of arrays and objects, or max + 1 as soon as it is exceeded.
int nesting_depth(std::string_view text, int max) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > max) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// A strict integer: a JSON number written without fraction or exponent.
bool strict_int(const rapidjson::Value* v, std::int64_t& out) {
  if (!v || !v->IsInt64()) return false;
  out = v->GetInt64();
  return true;
}

}  // namespace

int http_status_for(errc code) noexcept {
  switch (code) {
    case errc::out_of_range: return 413;
    case errc::not_found: return 404;
    case errc::timeout: return 408;
    default: return 400;
  }
}

result<request_head> parse_head(std::string_view line, const gate_config& config) {
  if (static_cast<std::int64_t>(line.size()) >= config.max_header_bytes)
    return error(errc::out_of_range, "the header line is longer than " + std::to_string(config.max_header_bytes) + " bytes");
  for (const char c : line)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return bad("the header line holds a control character");
  if (nesting_depth(line, max_head_depth) > max_head_depth) return bad("the header line is nested too deeply");
  auto doc = json::parse(line);
  if (!doc) return bad("the header line is not JSON: " + doc.err().message());
  if (!doc->IsObject()) return bad("the header line is not a JSON object");

  request_head head;
  json::reader r(*doc, "request");
  std::int64_t version = 0;
  if (!strict_int(r.raw("v"), version) || version != 1) r.fail("v", "must be the integer 1");
  r.required("id", head.id);
  r.optional("user", head.user);
  r.required("service", head.service);
  r.required("method", head.method);
  r.required("path", head.path);
  r.optional("affinity", head.affinity);
  const rapidjson::Value* headers = r.raw("headers");
  const rapidjson::Value* body_length = r.raw("body_length");
  CHATAI_RETURN_IF_ERROR(r.finish());

  if (!proto::valid_request_id(head.id)) return bad("field 'id' must match [A-Za-z0-9._:-]{1,128}");
  if (!proto::valid_user_tag(head.user)) return bad("field 'user' must match [A-Za-z0-9._:@+=-]{0,128}");
  if (!proto::valid_service_id(head.service)) return bad("field 'service' must match [A-Za-z0-9._:-]{1,128}");
  if (head.method != "GET" && head.method != "POST") return bad("field 'method' must be GET or POST");
  if (!proto::valid_affinity(head.affinity)) return bad("field 'affinity' must match [0-9a-f]{0,32}");
  const bool known_route = std::any_of(config.routes.begin(), config.routes.end(),
                                       [&](const route& rt) { return rt.path == head.path && rt.method == head.method; });
  if (!known_route) return bad("field 'path': not an allowed route for " + head.method);

  if (headers) {
    if (!headers->IsObject()) return bad("field 'headers' must be an object of strings");
    for (auto it = headers->MemberBegin(); it != headers->MemberEnd(); ++it) {
      if (head.headers.size() == max_headers) return bad("field 'headers' has more than 16 fields");
      std::string name(it->name.GetString(), it->name.GetStringLength());
      if (name.empty() || name.size() > 64 || !in_charset(name, "-")) return bad("field 'headers': a name is not a token");
      std::transform(name.begin(), name.end(), name.begin(),
                     [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
      if (!it->value.IsString()) return bad("field 'headers." + name + "' must be a string");
      const std::string_view value(it->value.GetString(), it->value.GetStringLength());
      if (value.size() > max_header_value || !std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c < 0x7F; }))
        return bad("field 'headers." + name + "' is too long or holds a character that is not printable ASCII");
      const auto allowed = config.headers.find(name);
      if (allowed == config.headers.end()) return bad("field 'headers': '" + name + "' is not an allowed header");
      if (std::none_of(allowed->second.begin(), allowed->second.end(), [&](const std::string& v) { return iequal(v, value); }))
        return bad("field 'headers." + name + "': the value is not allowed");
      if (std::any_of(head.headers.begin(), head.headers.end(), [&](const auto& h) { return h.first == name; }))
        return bad("field 'headers': '" + name + "' appears more than once");
      head.headers.emplace_back(std::move(name), std::string(value));
    }
  }

  if (!strict_int(body_length, head.body_length) || head.body_length < 0)
    return bad("field 'body_length' must be a non-negative integer");
  if (head.body_length > config.max_body_bytes)
    return error(errc::out_of_range, "the body is longer than " + std::to_string(config.max_body_bytes) + " bytes");
  if (head.method == "GET" && head.body_length != 0) return bad("a GET request has no body");
  return head;
}

result<std::string> check_body(const request_head& head, std::string_view body) {
  if (head.method != "POST") return std::string();
  auto doc = json::parse(body);
  if (!doc) return bad("the body is not JSON: " + doc.err().message());
  if (!doc->IsObject()) return bad("the body is not a JSON object");
  const rapidjson::Value& root = *doc;
  std::set<std::string_view> keys;
  for (auto it = root.MemberBegin(); it != root.MemberEnd(); ++it)
    if (!keys.emplace(it->name.GetString(), it->name.GetStringLength()).second)
      return bad("the body has a key more than once");
  const auto model = root.FindMember("model");
  if (model == root.MemberEnd()) return std::string();
  if (!model->value.IsString()) return bad("body field 'model' must be a string");
  std::string name(model->value.GetString(), model->value.GetStringLength());
  if (!proto::valid_model_name(name)) return bad("body field 'model' is not a valid model name");
  return name;
}

result<gate_request> parse_request(std::string_view input, const gate_config& config) {
  const auto limit = static_cast<std::size_t>(config.max_header_bytes);
  const auto newline = input.substr(0, limit).find('\n');
  if (newline == std::string_view::npos) {
    if (input.size() >= limit)
      return error(errc::out_of_range, "the header line is longer than " + std::to_string(limit) + " bytes");
    return bad("the request ended before the header line did");
  }
  auto head = parse_head(input.substr(0, newline), config);
  if (!head) return std::move(head).err();
  const std::string_view body = input.substr(newline + 1);
  const auto length = static_cast<std::size_t>(head->body_length);
  if (body.size() < length) return bad("the request ended after " + std::to_string(body.size()) + " of " +
                                       std::to_string(length) + " body bytes");
  if (body.size() > length) return bad("bytes follow the body");
  gate_request request{std::move(*head), std::string(body), {}};
  auto model = check_body(request.head, request.body);
  if (!model) return std::move(model).err();
  request.model = std::move(*model);
  return request;
}

result<gate_request> read_request(int fd, const gate_config& config) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + config.read_timeout;
  const auto header_limit = static_cast<std::size_t>(config.max_header_bytes);
  std::string buffer;
  std::size_t wanted = header_limit;  // bytes to have in the buffer before parsing further
  bool have_head = false;
  request_head head;
  std::size_t body_start = 0;
  for (;;) {
    if (!have_head) {
      const auto newline = buffer.find('\n');
      if (newline != std::string::npos) {
        auto parsed = parse_head(std::string_view(buffer).substr(0, newline), config);
        if (!parsed) return std::move(parsed).err();
        head = std::move(*parsed);
        have_head = true;
        body_start = newline + 1;
        wanted = body_start + static_cast<std::size_t>(head.body_length);
      } else if (buffer.size() >= header_limit) {
        return error(errc::out_of_range, "the header line is longer than " + std::to_string(header_limit) + " bytes");
      }
    }
    if (have_head && buffer.size() >= wanted) break;

    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) return error(errc::timeout, "the request was not read in time");
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1000000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return error(errc::io_error, std::string("poll: ") + std::strerror(errno));
    if (ready == 0) continue;
    // Read no more than what is still due and one byte to catch anything sent after it.
    const std::size_t room = std::min<std::size_t>(wanted - buffer.size() + 1, 65536);
    const std::size_t old = buffer.size();
    buffer.resize(old + room);
    const ssize_t n = ::read(fd, buffer.data() + old, room);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      buffer.resize(old);
      continue;
    }
    if (n < 0) return error(errc::io_error, std::string("read: ") + std::strerror(errno));
    buffer.resize(old + static_cast<std::size_t>(n));
    if (n == 0) {
      if (!have_head) return bad("the request ended before the header line did");
      return bad("the request ended after " + std::to_string(buffer.size() - body_start) + " of " +
                 std::to_string(head.body_length) + " body bytes");
    }
  }
  if (buffer.size() > wanted) return bad("bytes follow the body");
  // Anything already waiting after the body is refused as well.
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
    char extra;
    if (::read(fd, &extra, 1) == 1) return bad("bytes follow the body");
  }
  gate_request request{std::move(head), buffer.substr(body_start), {}};
  auto model = check_body(request.head, request.body);
  if (!model) return std::move(model).err();
  request.model = std::move(*model);
  return request;
}

}  // namespace chatai::gate
