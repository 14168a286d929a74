// The cluster's models as the gateway sees them: each model's service and state, read from
// the gate's status document.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai::gateway {

// ready: a backend answers now; starting: none answers yet but one is starting; offline:
// neither (a service that scales from zero starts on the first request).
enum class model_state { ready, starting, offline };

std::string_view to_string(model_state s) noexcept;

// Thread safety: a value type.
struct model_entry {
  std::string model;
  std::string service;
  model_state state = model_state::offline;
};

// The models of a status document ({"services":[{"id","models":[...],"can_scale_from_zero",
// "backends":{"ready","starting","draining"}}]}), sorted by name. A model that several
// services offer appears once, with the service in the best state (the first one on a tie).
result<std::vector<model_entry>> models_from_status(std::string_view status_json);

}  // namespace chatai::gateway
