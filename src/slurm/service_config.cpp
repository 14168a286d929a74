// Loading and checking the deployment configuration.
#include "chatai/slurm/service_config.hpp"

#include <algorithm>
#include <set>

#include "chatai/core/config.hpp"
#include "chatai/slurm/registry.hpp"
#include "chatai/slurm/slurm_format.hpp"

namespace chatai::slurm {

namespace {

// A duration field written the way sbatch takes it ("1-00:00:00", "30:00", "90") or as seconds.
void read_duration(json::reader& r, std::string_view key, std::chrono::seconds& out) {
  const auto* v = r.raw(key);
  if (!v) return;
  if (v->IsInt64() && v->GetInt64() >= 0) {
    out = std::chrono::seconds(v->GetInt64());
    return;
  }
  if (!v->IsString()) {
    r.fail(key, "expected seconds or a Slurm duration such as \"1-00:00:00\", got " + std::string(json::type_name(*v)));
    return;
  }
  auto d = parse_duration(std::string_view(v->GetString(), v->GetStringLength()));
  if (!d || d->what != slurm_duration::kind::finite) {
    r.fail(key, "expected a finite Slurm duration such as \"1-00:00:00\", got \"" + std::string(v->GetString()) + "\"");
    return;
  }
  out = d->value;
}

void read_probe(json::reader& r, std::string_view key, probe_settings& probe) {
  r.object(key, false, [&](json::reader& p) {
    p.optional("path", probe.path);
    std::int64_t timeout_ms = probe.timeout.count();
    p.optional_in_range("timeout_ms", timeout_ms, 10, 600000);
    probe.timeout = std::chrono::milliseconds(timeout_ms);
    p.optional_in_range("failures_before_unhealthy", probe.failures_before_unhealthy, 1, 1000);
    if (!p.failed() && (probe.path.empty() || probe.path[0] != '/')) p.fail("path", "must start with '/'");
  });
}

// The first {{placeholder}} of a job template that the scheduler does not fill, or "".
std::string unknown_placeholder(std::string_view text) {
  static constexpr std::string_view known[] = {"service", "job_name", "state_dir", "key_file", "endpoint_file", "model"};
  for (auto open = text.find("{{"); open != std::string_view::npos; open = text.find("{{", open + 2)) {
    const auto close = text.find("}}", open + 2);
    if (close == std::string_view::npos) return std::string(text.substr(open, 32));
    const auto name = text.substr(open + 2, close - open - 2);
    if (std::find(std::begin(known), std::end(known), name) == std::end(known))
      return std::string(text.substr(open, close + 2 - open));
  }
  return {};
}

}  // namespace

result<deployment_config> parse_deployment(std::string_view text, const std::string& name,
                                           const std::filesystem::path& base_dir) {
  deployment_config cfg;
  std::set<std::string> ids, models;
  auto st = config::load_text(text, name, [&](json::reader& r) {
    std::string state_dir;
    r.required("state_dir", state_dir);
    cfg.state_dir = base_dir / state_dir;
    r.optional("job_prefix", cfg.job_prefix);
    if (!r.failed() && (cfg.job_prefix.empty() || !valid_service_id(cfg.job_prefix)))
      r.fail("job_prefix", "must be 1 to 128 characters of [A-Za-z0-9._:-]");
    r.object("slurm", false, [&](json::reader& s) {
      std::string conf;
      s.optional("conf", conf);
      if (!conf.empty()) cfg.slurm_env["SLURM_CONF"] = (base_dir / conf).string();
      for (auto [key, program] : {std::pair{"sbatch", &cfg.sbatch}, {"squeue", &cfg.squeue}, {"scancel", &cfg.scancel}}) {
        s.optional(key, *program);
        if (!s.failed() && program->empty()) s.fail(key, "must name a program");
        if (!s.failed() && program->find('/') != std::string::npos) *program = (base_dir / *program).string();
      }
      std::int64_t timeout_ms = cfg.slurm_timeout.count();
      s.optional_in_range("timeout_ms", timeout_ms, 100, 600000);
      cfg.slurm_timeout = std::chrono::milliseconds(timeout_ms);
    });
    r.optional("demand_smoothing", cfg.demand_smoothing);
    if (!r.failed() && !(cfg.demand_smoothing > 0.0 && cfg.demand_smoothing <= 1.0))
      r.fail("demand_smoothing", "must be in (0, 1]");
    r.object_array("services", true, [&](json::reader& s, std::size_t) {
      service_config svc;
      s.required("id", svc.id);
      if (!s.failed() && !valid_service_id(svc.id)) s.fail("id", "must be 1 to 128 characters of [A-Za-z0-9._:-]");
      if (!s.failed() && !ids.insert(svc.id).second) s.fail("id", "\"" + svc.id + "\" is used by another service");
      s.optional("models", svc.models);
      if (!s.failed() && svc.models.empty()) s.fail("models", "must name at least one model");
      for (const auto& m : svc.models) {
        if (s.failed()) break;
        if (!valid_model_name(m)) s.fail("models", "\"" + m + "\" is not a valid model name");
        else if (!models.insert(m).second) s.fail("models", "\"" + m + "\" is served by another service");
      }
      std::string template_file;
      s.optional("template", svc.job_template);
      s.optional("template_file", template_file);
      if (!s.failed()) {
        if (svc.job_template.empty() == template_file.empty()) {
          s.fail("template", "give exactly one of template and template_file");
        } else if (!template_file.empty()) {
          auto text_or = config::read_file(base_dir / template_file);
          if (!text_or) s.fail("template_file", text_or.err().message());
          else svc.job_template = std::move(*text_or);
        }
      }
      if (!s.failed()) {
        if (const auto bad = unknown_placeholder(svc.job_template); !bad.empty())
          s.fail(template_file.empty() ? "template" : "template_file",
                 "unknown placeholder " + bad + " (known: {{service}}, {{job_name}}, {{state_dir}}, {{key_file}}, "
                 "{{endpoint_file}}, {{model}})");
      }
      s.optional("sbatch_args", svc.sbatch_args);
      for (const auto& a : svc.sbatch_args) {
        if (s.failed()) break;
        if (a.rfind("--", 0) != 0 || a.find_first_of("\n\r") != std::string::npos)
          s.fail("sbatch_args", "each must be one option such as \"--gres=gpu:1\", got \"" + a + "\"");
        for (const char* owned : {"--job-name", "--time", "--time-min", "--signal", "--output", "--parsable"})
          if (!s.failed() && a.rfind(owned, 0) == 0)
            s.fail("sbatch_args", std::string(owned) + " is set by chatai from the service's settings");
      }
      s.optional_in_range("min_instances", svc.min_instances, 0, 1000);
      s.optional_in_range("max_instances", svc.max_instances, 1, 1000);
      if (!s.failed() && svc.max_instances < svc.min_instances)
        s.fail("max_instances", "must be at least min_instances (" + std::to_string(svc.min_instances) + ")");
      s.optional_in_range("requests_per_instance", svc.requests_per_instance, 1, 100000);
      read_duration(s, "time_limit", svc.time_limit);
      read_duration(s, "time_min", svc.time_min);
      read_duration(s, "rotation_lead", svc.rotation_lead);
      read_duration(s, "idle_before_zero", svc.idle_before_zero);
      read_duration(s, "start_timeout", svc.start_timeout);
      if (!s.failed() && svc.time_limit.count() < 60) s.fail("time_limit", "must be at least one minute");
      if (!s.failed() && svc.time_min > svc.time_limit) s.fail("time_min", "must not exceed time_limit");
      if (!s.failed() && svc.rotation_lead >= (svc.time_min.count() > 0 ? svc.time_min : svc.time_limit))
        s.fail("rotation_lead", "must be shorter than the shortest time a job may be granted");
      read_probe(s, "readiness", svc.readiness);
      read_probe(s, "health", svc.health);
      std::string launcher = "slurm";
      s.optional("launcher", launcher);
      if (launcher == "slurm") svc.launcher = launcher_kind::slurm;
      else if (launcher == "local") svc.launcher = launcher_kind::local;
      else if (!s.failed()) s.fail("launcher", "must be \"slurm\" or \"local\", got \"" + launcher + "\"");
      cfg.services.push_back(std::move(svc));
    });
  });
  if (!st) return std::move(st).err();
  return cfg;
}

result<deployment_config> load_deployment(const std::filesystem::path& path) {
  auto text = config::read_file(path);
  if (!text) return std::move(text).err();
  return parse_deployment(*text, path.string(), path.parent_path());
}

}  // namespace chatai::slurm
