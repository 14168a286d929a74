// The models of the gate's status document with their services and states.
#include "chatai/gateway/models.hpp"

#include <algorithm>
#include <map>

#include "chatai/proto/wire.hpp"

namespace chatai::gateway {

std::string_view to_string(model_state s) noexcept {
  switch (s) {
    case model_state::ready: return "ready";
    case model_state::starting: return "starting";
    case model_state::offline: return "offline";
  }
  return "offline";
}

result<std::vector<model_entry>> models_from_status(std::string_view status_json) {
  auto doc = proto::parse_status(status_json);
  if (!doc) return std::move(doc).err();
  std::map<std::string, model_entry> by_model;
  for (const auto& s : doc->services) {
    const model_state state = s.ready > 0                    ? model_state::ready
                              : s.starting + s.pending > 0 ? model_state::starting
                                                           : model_state::offline;
    for (const auto& m : s.models) {
      auto [it, inserted] = by_model.try_emplace(m, model_entry{m, s.id, state});
      if (!inserted && static_cast<int>(state) < static_cast<int>(it->second.state)) it->second = model_entry{m, s.id, state};
    }
  }
  std::vector<model_entry> out;
  out.reserve(by_model.size());
  for (auto& [name, entry] : by_model) out.push_back(std::move(entry));
  return out;
}

}  // namespace chatai::gateway
