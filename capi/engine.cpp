// The C ABI's model files: GGUF files opened through the engine's reader.
#include <algorithm>
#include <cstring>
#include <string>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/engine/gguf.hpp"

struct chatai_model_file {
  explicit chatai_model_file(chatai::engine::gguf_file f) : file(std::move(f)) {
    if (auto arch = file.architecture(); arch.ok()) architecture.assign(arch->data(), arch->size());
  }

  chatai::engine::gguf_file file;
  std::string architecture;  // NUL-terminated copy of general.architecture, "" when absent
};

using chatai::capi::fail;
using chatai::capi::guard;

extern "C" {

chatai_status chatai_model_file_open(chatai_model_file** out, const char* path) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || path == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and path must not be NULL");
    *out = nullptr;
    auto file = chatai::engine::gguf_file::open(path);
    if (!file) return fail(file.err());
    *out = new chatai_model_file(std::move(file).value());
    return CHATAI_OK;
  });
}

void chatai_model_file_free(chatai_model_file* file) { delete file; }

chatai_status chatai_model_file_architecture(const chatai_model_file* file, const char** out) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || file == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "file and out must not be NULL");
    *out = nullptr;
    if (auto arch = file->file.architecture(); !arch) return fail(arch.err());
    *out = file->architecture.c_str();
    return CHATAI_OK;
  });
}

chatai_status chatai_model_file_metadata_string(const chatai_model_file* file, const char* key, char* buffer,
                                                size_t buffer_size, size_t* length) {
  return guard([&]() -> chatai_status {
    if (file == nullptr || key == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "file and key must not be NULL");
    if (buffer == nullptr && buffer_size > 0) {
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "buffer is NULL but buffer_size is not 0");
    }
    auto value = file->file.get_string(key);
    if (!value) return fail(value.err());
    if (length != nullptr) *length = value->size();
    if (buffer_size == 0) return CHATAI_OK;
    const std::size_t copied = std::min(value->size(), buffer_size - 1);
    std::memcpy(buffer, value->data(), copied);
    buffer[copied] = '\0';
    if (copied < value->size()) {
      return fail(CHATAI_ERROR_OUT_OF_RANGE, ("the value of '" + std::string(key) + "' needs " +
                                              std::to_string(value->size() + 1) + " bytes")
                                                 .c_str());
    }
    return CHATAI_OK;
  });
}

size_t chatai_model_file_tensor_count(const chatai_model_file* file) {
  return file == nullptr ? 0 : file->file.tensors().size();
}

}  // extern "C"
