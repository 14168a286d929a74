// Loading JSON configuration files with errors that name the file and the field.
#include "chatai/core/config.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace chatai::config {

result<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return error(errno == ENOENT ? errc::not_found : errc::io_error,
                 path.string() + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return error(errc::io_error, path.string() + ": read failed: " + std::strerror(errno));
  return contents.str();
}

status load_text(std::string_view text, std::string name, const std::function<void(json::reader&)>& fill) {
  auto doc = json::parse(text);
  if (!doc) return error(errc::invalid_argument, name + ":" + doc.err().message());
  json::reader reader(*doc, name);
  fill(reader);
  return reader.finish();
}

status load(const std::filesystem::path& path, const std::function<void(json::reader&)>& fill) {
  auto text = read_file(path);
  if (!text) return std::move(text).err();
  return load_text(*text, path.string(), fill);
}

}  // namespace chatai::config
