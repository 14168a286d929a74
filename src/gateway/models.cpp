// The models of the gate's status document with their services and states.
#include "chatai/gateway/models.hpp"

#include <algorithm>
#include <map>

#include "chatai/core/json.hpp"

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
  auto doc = json::parse(status_json);
  if (!doc) return std::move(doc).err().with_context("the gate's status");
  std::map<std::string, model_entry> by_model;
  json::reader top(*doc, "the gate's status");
  top.allow_unknown();
  top.object_array("services", true, [&](json::reader& r, std::size_t) {
    r.allow_unknown();
    std::string id;
    std::vector<std::string> models;
    std::int64_t ready = 0, starting = 0, pending = 0;
    r.required("id", id);
    r.optional("models", models);
    r.object("backends", false, [&](json::reader& b) {
      b.allow_unknown();
      b.optional("ready", ready);
      b.optional("starting", starting);
      b.optional("pending", pending);
    });
    if (r.failed()) return;
    const model_state state = ready > 0 ? model_state::ready : starting + pending > 0 ? model_state::starting : model_state::offline;
    for (const auto& m : models) {
      auto [it, inserted] = by_model.try_emplace(m, model_entry{m, id, state});
      if (!inserted && static_cast<int>(state) < static_cast<int>(it->second.state)) it->second = model_entry{m, id, state};
    }
  });
  CHATAI_RETURN_IF_ERROR(top.finish());
  std::vector<model_entry> out;
  out.reserve(by_model.size());
  for (auto& [name, entry] : by_model) out.push_back(std::move(entry));
  return out;
}

}  // namespace chatai::gateway
