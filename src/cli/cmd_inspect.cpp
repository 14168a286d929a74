// `chatai inspect FILE`: what a GGUF model file holds: architecture, hyperparameters,
// tokenizer, chat template and tensors, as text or (--json) as one JSON document.
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "chatai/core/json.hpp"
#include "chatai/engine/gguf.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

using engine::gguf_file;
using engine::gguf_value;
using engine::gguf_value_type;
using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

// Arrays longer than this are summarised in text output.
constexpr std::uint64_t max_listed_elements = 8;

// The shortest decimal text that reads back as the same float (1e-05, not 9.99999975e-06).
std::string shortest_float(double value, bool single) {
  char buf[64];
  for (int digits = 6; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, value);
    const double back = single ? std::strtof(buf, nullptr) : std::strtod(buf, nullptr);
    if (back == value) break;
  }
  return buf;
}

std::string format_element(const gguf_value& v, std::uint64_t i) {
  switch (v.element_type()) {
    case gguf_value_type::string: return std::string(v.string_at(i));
    case gguf_value_type::boolean: return v.bool_at(i) ? "true" : "false";
    case gguf_value_type::float32: return shortest_float(v.float_at(i), true);
    case gguf_value_type::float64: return shortest_float(v.float_at(i), false);
    case gguf_value_type::uint64: return std::to_string(v.uint_at(i));
    default: return std::to_string(v.int_at(i));
  }
}

std::string format_value(const gguf_value& v) {
  if (!v.is_array()) return format_element(v, 0);
  std::string out = "[";
  for (std::uint64_t i = 0; i < v.size() && i < max_listed_elements; ++i) {
    if (i > 0) out += ", ";
    out += v.element_type() == gguf_value_type::string ? json::quoted(v.string_at(i)) : format_element(v, i);
  }
  if (v.size() > max_listed_elements) out += ", ... (" + std::to_string(v.size()) + " " + std::string(to_string(v.element_type())) + "s)";
  return out + "]";
}

std::string format_shape(const engine::gguf_tensor& t) {
  std::string out;
  for (std::size_t d = 0; d < t.shape.size(); ++d) {
    if (d > 0) out += " x ";
    out += std::to_string(t.shape[d]);
  }
  return out;
}

void write_string(json_writer& w, std::string_view text) {
  const std::string quoted = json::quoted(text);  // invalid UTF-8 becomes U+FFFD
  w.RawValue(quoted.data(), quoted.size(), rapidjson::kStringType);
}

void write_element(json_writer& w, const gguf_value& v, std::uint64_t i) {
  switch (v.element_type()) {
    case gguf_value_type::string: write_string(w, v.string_at(i)); break;
    case gguf_value_type::boolean: w.Bool(v.bool_at(i)); break;
    case gguf_value_type::float32:
    case gguf_value_type::float64: {
      const double value = v.float_at(i);
      if (!std::isfinite(value)) {
        w.Null();  // JSON has no NaN or infinity
        break;
      }
      std::string text = shortest_float(value, v.element_type() == gguf_value_type::float32);
      if (text.find_first_of(".e") == std::string::npos) text += ".0";  // stays a float for JSON readers
      w.RawValue(text.data(), text.size(), rapidjson::kNumberType);
      break;
    }
    case gguf_value_type::uint64: w.Uint64(v.uint_at(i)); break;
    default: w.Int64(v.int_at(i)); break;
  }
}

void write_value(json_writer& w, const gguf_value& v) {
  if (!v.is_array()) return write_element(w, v, 0);
  w.StartArray();
  for (std::uint64_t i = 0; i < v.size(); ++i) write_element(w, v, i);
  w.EndArray();
}

// The metadata keys that start with `prefix`, without it, in file order.
template <class Fn>
void for_each_with_prefix(const gguf_file& file, std::string_view prefix, Fn&& fn) {
  for (const auto& kv : file.metadata()) {
    if (kv.key.size() > prefix.size() && kv.key.starts_with(prefix)) fn(kv.key.substr(prefix.size()), kv.value);
  }
}

// Tokenizer arrays are listed by their length: they hold the whole vocabulary.
bool is_bulk(const gguf_value& v) { return v.is_array() && v.size() > max_listed_elements; }

struct totals {
  std::uint64_t elements = 0;
  std::uint64_t bytes = 0;
};

totals sum_tensors(const gguf_file& file) {
  totals t;
  for (const auto& tensor : file.tensors()) {
    t.elements += static_cast<std::uint64_t>(tensor.element_count());
    t.bytes += tensor.size;
  }
  return t;
}

void print_text(const std::string& path, const gguf_file& file) {
  const std::string arch(file.architecture().ok() ? *file.architecture() : std::string_view());
  std::printf("file:          %s\n", path.c_str());
  std::printf("format:        GGUF v%u, alignment %u, %zu metadata keys, %zu tensors\n", file.version(),
              file.alignment(), file.metadata().size(), file.tensors().size());
  std::printf("architecture:  %s\n", arch.empty() ? "(none)" : arch.c_str());
  for_each_with_prefix(file, "general.", [](std::string_view key, const gguf_value& v) {
    if (key != "architecture") std::printf("  %-28.*s %s\n", static_cast<int>(key.size()), key.data(), format_value(v).c_str());
  });

  if (!arch.empty()) {
    std::printf("hyperparameters:\n");
    for_each_with_prefix(file, arch + ".", [](std::string_view key, const gguf_value& v) {
      std::printf("  %-40.*s %s\n", static_cast<int>(key.size()), key.data(), format_value(v).c_str());
    });
  }

  const auto model = file.get_string("tokenizer.ggml.model");
  const auto pre = file.get_string("tokenizer.ggml.pre");
  const auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  std::printf("tokenizer:     %.*s, pre-tokenizer %.*s, %zu tokens\n",
              static_cast<int>(model.ok() ? model->size() : 6), model.ok() ? model->data() : "(none)",
              static_cast<int>(pre.ok() ? pre->size() : 6), pre.ok() ? pre->data() : "(none)",
              tokens.ok() ? tokens->size() : std::size_t{0});
  for_each_with_prefix(file, "tokenizer.ggml.", [](std::string_view key, const gguf_value& v) {
    if (is_bulk(v)) {
      std::printf("  %-28.*s %" PRIu64 " entries\n", static_cast<int>(key.size()), key.data(), v.size());
    } else {
      std::printf("  %-28.*s %s\n", static_cast<int>(key.size()), key.data(), format_value(v).c_str());
    }
  });

  if (auto tmpl = file.get_string("tokenizer.chat_template"); tmpl.ok()) {
    std::printf("chat template:\n%.*s\n", static_cast<int>(tmpl->size()), tmpl->data());
  }

  std::printf("tensors:\n  %-40s %-8s %-24s %14s\n", "name", "type", "shape", "bytes");
  for (const auto& t : file.tensors()) {
    std::printf("  %-40.*s %-8s %-24s %14" PRIu64 "\n", static_cast<int>(t.name.size()), t.name.data(),
                std::string(to_string(t.type)).c_str(), format_shape(t).c_str(), t.size);
  }
  const totals sum = sum_tensors(file);
  std::printf("total: %zu tensors, %" PRIu64 " elements, %" PRIu64 " bytes (%.1f MiB)\n", file.tensors().size(),
              sum.elements, sum.bytes, static_cast<double>(sum.bytes) / (1024.0 * 1024.0));
}

void print_json(const std::string& path, const gguf_file& file) {
  rapidjson::StringBuffer buffer;
  json_writer w(buffer);
  w.StartObject();
  w.Key("file");
  write_string(w, path);
  w.Key("version");
  w.Uint(file.version());
  w.Key("alignment");
  w.Uint(file.alignment());
  w.Key("data_offset");
  w.Uint64(file.data_offset());
  w.Key("architecture");
  const auto arch = file.architecture();
  if (arch.ok()) {
    write_string(w, *arch);
  } else {
    w.Null();
  }

  const auto object_with_prefix = [&](const char* name, const std::string& prefix, bool summarise_bulk) {
    w.Key(name);
    w.StartObject();
    for_each_with_prefix(file, prefix, [&](std::string_view key, const gguf_value& v) {
      write_string(w, key);
      if (summarise_bulk && is_bulk(v)) {
        w.StartObject();
        w.Key("type");
        write_string(w, to_string(v.element_type()));
        w.Key("length");
        w.Uint64(v.size());
        w.EndObject();
      } else {
        write_value(w, v);
      }
    });
    w.EndObject();
  };
  object_with_prefix("general", "general.", false);
  if (arch.ok()) {
    object_with_prefix("hyperparameters", std::string(*arch) + ".", false);
  } else {
    w.Key("hyperparameters");
    w.StartObject();
    w.EndObject();
  }
  object_with_prefix("tokenizer", "tokenizer.ggml.", true);
  w.Key("chat_template");
  if (auto tmpl = file.get_string("tokenizer.chat_template"); tmpl.ok()) {
    write_string(w, *tmpl);
  } else {
    w.Null();
  }

  w.Key("tensors");
  w.StartArray();
  for (const auto& t : file.tensors()) {
    w.StartObject();
    w.Key("name");
    write_string(w, t.name);
    w.Key("type");
    write_string(w, to_string(t.type));
    w.Key("shape");
    w.StartArray();
    for (std::int64_t d : t.shape) w.Int64(d);
    w.EndArray();
    w.Key("offset");
    w.Uint64(t.offset);
    w.Key("bytes");
    w.Uint64(t.size);
    w.EndObject();
  }
  w.EndArray();
  const totals sum = sum_tensors(file);
  w.Key("total");
  w.StartObject();
  w.Key("tensors");
  w.Uint64(file.tensors().size());
  w.Key("elements");
  w.Uint64(sum.elements);
  w.Key("bytes");
  w.Uint64(sum.bytes);
  w.EndObject();
  w.EndObject();
  std::printf("%s\n", buffer.GetString());
}

}  // namespace

void add_inspect_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string path;
    bool json = false;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("inspect", "show what a GGUF model file holds");
  cmd->add_option("file", opts->path, "the GGUF file")->required();
  cmd->add_flag("--json", opts->json, "print one JSON document");
  cmd->callback([opts, &exit_code] {
    auto file = gguf_file::open(opts->path);
    if (!file) {
      std::fprintf(stderr, "chatai inspect: %s\n", file.err().message().c_str());
      exit_code = 1;
      return;
    }
    if (opts->json) {
      print_json(opts->path, *file);
    } else {
      print_text(opts->path, *file);
    }
    exit_code = 0;
  });
}

}  // namespace chatai::cli
