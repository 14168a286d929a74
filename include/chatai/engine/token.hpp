// The type of token ids, shared by the vocabulary, the sampler and the backends.
#pragma once

#include <cstdint>

namespace chatai::engine {

using token_id = std::int32_t;

}  // namespace chatai::engine
