// Building OpenAI-shaped answers and stream chunks as JSON text.
#include "chatai/serve/openai_response.hpp"

#include <charconv>
#include <cmath>

#include "chatai/core/json.hpp"

namespace chatai::serve {

namespace {

void append_number(std::string& out, double value) {
  // Log-probabilities of tokens that biases ruled out can be -inf; JSON has no such number.
  if (!std::isfinite(value)) value = -9999.0;
  char buffer[32];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, ec == std::errc() ? end : buffer);
}

void append_bytes(std::string& out, std::string_view piece) {
  out += '[';
  for (std::size_t i = 0; i < piece.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(static_cast<unsigned char>(piece[i]));
  }
  out += ']';
}

// {"id":...,"object":...,"created":...,"model":...,
void append_head(std::string& out, const response_meta& meta, bool chunk) {
  out += "{\"id\":";
  json::append_quoted(out, meta.id);
  out += ",\"object\":";
  out += meta.chat ? (chunk ? "\"chat.completion.chunk\"" : "\"chat.completion\"") : "\"text_completion\"";
  out += ",\"created\":" + std::to_string(meta.created) + ",\"model\":";
  json::append_quoted(out, meta.model);
  out += ",\"system_fingerprint\":null,";
}

void append_usage(std::string& out, const usage& u) {
  out += "{\"prompt_tokens\":" + std::to_string(u.prompt_tokens) +
         ",\"completion_tokens\":" + std::to_string(u.completion_tokens) +
         ",\"total_tokens\":" + std::to_string(u.prompt_tokens + u.completion_tokens) +
         ",\"prompt_tokens_details\":{\"cached_tokens\":" + std::to_string(u.cached_tokens) + "}}";
}

void append_tool_call(std::string& out, std::size_t index, const tool_call& call, bool with_index) {
  out += '{';
  if (with_index) out += "\"index\":" + std::to_string(index) + ",";
  out += "\"id\":";
  json::append_quoted(out, call.id);
  out += ",\"type\":\"function\",\"function\":{\"name\":";
  json::append_quoted(out, call.name);
  out += ",\"arguments\":";
  json::append_quoted(out, call.arguments);
  out += "}}";
}

void append_logprobs(std::string& out, std::string_view logprobs) {
  out += ",\"logprobs\":";
  out += logprobs.empty() ? std::string_view("null") : logprobs;
}

// Closes a chunk: its optional "usage":null and the object.
std::string close_chunk(std::string out, bool with_usage) {
  out += "]";
  if (with_usage) out += ",\"usage\":null";
  out += "}";
  return out;
}

}  // namespace

std::string logprobs_json(bool chat, const engine::vocabulary& vocab, std::span<const engine::generated_token> tokens,
                          std::size_t& text_offset) {
  std::string out;
  if (chat) {
    out = "{\"content\":[";
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const auto& t = tokens[i];
      const auto piece = vocab.token_to_piece(t.token);
      if (i) out += ',';
      out += "{\"token\":";
      json::append_quoted(out, piece);
      out += ",\"logprob\":";
      append_number(out, t.chosen.logprob);
      out += ",\"bytes\":";
      append_bytes(out, piece);
      out += ",\"top_logprobs\":[";
      for (std::size_t k = 0; k < t.top.size(); ++k) {
        const auto top_piece = vocab.token_to_piece(t.top[k].token);
        if (k) out += ',';
        out += "{\"token\":";
        json::append_quoted(out, top_piece);
        out += ",\"logprob\":";
        append_number(out, t.top[k].logprob);
        out += ",\"bytes\":";
        append_bytes(out, top_piece);
        out += '}';
      }
      out += "]}";
    }
    out += "]}";
    return out;
  }
  std::string names = "\"tokens\":[", values = "\"token_logprobs\":[", tops = "\"top_logprobs\":[",
              offsets = "\"text_offset\":[";
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto& t = tokens[i];
    const auto piece = vocab.token_to_piece(t.token);
    if (i) {
      names += ',';
      values += ',';
      tops += ',';
      offsets += ',';
    }
    json::append_quoted(names, piece);
    append_number(values, t.chosen.logprob);
    tops += '{';
    for (std::size_t k = 0; k < t.top.size(); ++k) {
      if (k) tops += ',';
      json::append_quoted(tops, vocab.token_to_piece(t.top[k].token));
      tops += ':';
      append_number(tops, t.top[k].logprob);
    }
    tops += '}';
    offsets += std::to_string(text_offset);
    text_offset += piece.size();
  }
  return "{" + names + "]," + values + "]," + tops + "]," + offsets + "]}";
}

std::string final_response(const response_meta& meta, const std::vector<choice_result>& choices, const usage& u) {
  std::string out;
  append_head(out, meta, false);
  out += "\"choices\":[";
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    if (i) out += ',';
    out += "{\"index\":" + std::to_string(i);
    if (meta.chat) {
      out += ",\"message\":{\"role\":\"assistant\",\"content\":";
      if (c.text.empty() && !c.tool_calls.empty()) out += "null";
      else json::append_quoted(out, c.text);
      if (!c.reasoning.empty()) {
        out += ",\"reasoning_content\":";
        json::append_quoted(out, c.reasoning);
      }
      if (!c.tool_calls.empty()) {
        out += ",\"tool_calls\":[";
        for (std::size_t k = 0; k < c.tool_calls.size(); ++k) {
          if (k) out += ',';
          append_tool_call(out, k, c.tool_calls[k], false);
        }
        out += ']';
      }
      out += ",\"refusal\":null}";
    } else {
      out += ",\"text\":";
      json::append_quoted(out, c.text);
    }
    append_logprobs(out, c.logprobs);
    out += ",\"finish_reason\":";
    json::append_quoted(out, finish_reason_name(c.finish, !c.tool_calls.empty()));
    out += '}';
  }
  out += "],\"usage\":";
  append_usage(out, u);
  out += '}';
  return out;
}

std::string stream_start_chunk(const response_meta& meta, std::size_t index, bool with_usage, std::string_view echo) {
  if (!meta.chat && echo.empty()) return {};
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index);
  if (meta.chat) {
    out += ",\"delta\":{\"role\":\"assistant\",\"content\":\"\"}";
  } else {
    out += ",\"text\":";
    json::append_quoted(out, echo);
  }
  out += ",\"logprobs\":null,\"finish_reason\":null}";
  return close_chunk(std::move(out), with_usage);
}

std::string stream_delta_chunk(const response_meta& meta, std::size_t index, std::string_view text,
                               std::string_view logprobs, bool with_usage) {
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index);
  if (meta.chat) {
    out += ",\"delta\":{\"content\":";
    json::append_quoted(out, text);
    out += '}';
  } else {
    out += ",\"text\":";
    json::append_quoted(out, text);
  }
  append_logprobs(out, logprobs);
  out += ",\"finish_reason\":null}";
  return close_chunk(std::move(out), with_usage);
}

std::string stream_reasoning_chunk(const response_meta& meta, std::size_t index, std::string_view text, bool with_usage) {
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index) + ",\"delta\":{\"reasoning_content\":";
  json::append_quoted(out, text);
  out += "},\"logprobs\":null,\"finish_reason\":null}";
  return close_chunk(std::move(out), with_usage);
}

std::vector<std::string> stream_tool_call_chunks(const response_meta& meta, std::size_t index, std::size_t call_index,
                                                 const tool_call& call, bool with_usage) {
  std::vector<std::string> chunks;
  tool_call head = call;
  head.arguments.clear();
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index) + ",\"delta\":{\"tool_calls\":[";
  append_tool_call(out, call_index, head, true);
  out += "]},\"logprobs\":null,\"finish_reason\":null}";
  chunks.push_back(close_chunk(std::move(out), with_usage));
  out.clear();
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index) + ",\"delta\":{\"tool_calls\":[{\"index\":" +
         std::to_string(call_index) + ",\"function\":{\"arguments\":";
  json::append_quoted(out, call.arguments);
  out += "}}]},\"logprobs\":null,\"finish_reason\":null}";
  chunks.push_back(close_chunk(std::move(out), with_usage));
  return chunks;
}

std::string stream_finish_chunk(const response_meta& meta, std::size_t index, std::string_view finish_reason,
                                bool with_usage) {
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[{\"index\":" + std::to_string(index);
  out += meta.chat ? ",\"delta\":{}" : ",\"text\":\"\"";
  out += ",\"logprobs\":null,\"finish_reason\":";
  json::append_quoted(out, finish_reason);
  out += '}';
  return close_chunk(std::move(out), with_usage);
}

std::string_view finish_reason_name(engine::finish_reason finish, bool made_calls) noexcept {
  return made_calls && finish != engine::finish_reason::length ? std::string_view("tool_calls") : engine::to_string(finish);
}

std::string stream_usage_chunk(const response_meta& meta, const usage& u) {
  std::string out;
  append_head(out, meta, true);
  out += "\"choices\":[],\"usage\":";
  append_usage(out, u);
  out += '}';
  return out;
}

}  // namespace chatai::serve
