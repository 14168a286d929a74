// Re-encoding a model's weight matrices in another type, with round-to-nearest quantizers
// (llama-quantize without importance matrices): conversions for tests and benchmarks.
#pragma once

#include <filesystem>

#include "chatai/core/status.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine {

// Thread safety: a value type.
struct quantize_options {
  ggml_type type = ggml_type::q8_0;      // for every 2-D tensor
  ggml_type fallback = ggml_type::q8_0;  // for matrices whose rows do not fill `type`'s blocks
};

// Writes `in` to `out` with its 2-D tensors converted (through f32) to options.type, and
// every other tensor and metadata entry copied (general.file_type, which would be stale, is
// dropped). Errors: unsupported for a source or target type the engine does not compute
// with; those of gguf_writer for the output. Thread safety: safe from any thread.
status quantize_model(const gguf_file& in, const std::filesystem::path& out, const quantize_options& options);

// Adds `value` to `w` under `key`, with the type the file holds it in. Errors: those of
// gguf_writer; unsupported for nested arrays. Thread safety: safe from any thread.
status copy_metadata_value(gguf_writer& w, std::string_view key, const gguf_value& value);

}  // namespace chatai::engine
