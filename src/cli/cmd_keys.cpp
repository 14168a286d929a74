// `chatai keys --db FILE create|list|revoke|usage`: the gateway's API keys and their usage.
// create prints the key once; nothing else ever shows a secret.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "chatai/core/json.hpp"
#include "chatai/gate/breaker.hpp"
#include "chatai/gateway/key_store.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

struct keys_options {
  std::string db;
  std::string user;
  std::string expires;
  std::optional<std::int64_t> rpm;
  std::optional<std::int64_t> concurrency;
  std::string id;
  std::string since;
  bool json = false;
};

std::string limit_text(const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : "default"; }

void append_optional_time(std::string& out, const std::optional<std::int64_t>& ms) {
  if (ms) json::append_quoted(out, gateway::format_time(*ms));
  else out += "null";
}

void append_optional_int(std::string& out, const std::optional<std::int64_t>& v) {
  out += v ? std::to_string(*v) : "null";
}

int fail(const char* action, const error& e) {
  std::fprintf(stderr, "chatai keys %s: %s\n", action, e.message().c_str());
  return e.code() == errc::invalid_argument || e.code() == errc::not_found ? 2 : 1;
}

int create(gateway::key_store& store, const keys_options& o) {
  const std::int64_t now = gate::unix_ms_now();
  std::optional<std::int64_t> expires;
  if (!o.expires.empty()) {
    auto t = gateway::parse_time(o.expires, now, true);
    if (!t) return fail("create", t.err().with_context("--expires"));
    if (*t <= now) return fail("create", error(errc::invalid_argument, "--expires: lies in the past"));
    expires = *t;
  }
  auto key = store.create(o.user, expires, {o.rpm, o.concurrency});
  if (!key) return fail("create", key.err());
  if (o.json) {
    std::string out = "{\"id\":";
    json::append_quoted(out, key->info.id);
    out += ",\"key\":";
    json::append_quoted(out, key->key);
    out += ",\"user\":";
    json::append_quoted(out, key->info.user);
    out += ",\"expires_at\":";
    append_optional_time(out, key->info.expires_at_ms);
    out += "}\n";
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("%s\n", key->key.c_str());
    std::fprintf(stderr, "key %s for %s%s%s: shown once, store it now\n", key->info.id.c_str(), key->info.user.c_str(),
                 expires ? ", expires " : "", expires ? gateway::format_time(*expires).c_str() : "");
  }
  return 0;
}

int list(gateway::key_store& store, const keys_options& o) {
  auto keys = store.list();
  if (!keys) return fail("list", keys.err());
  const std::int64_t now = gate::unix_ms_now();
  auto state = [&](const gateway::key_info& k) {
    if (k.revoked_at_ms) return "revoked";
    if (k.expires_at_ms && *k.expires_at_ms <= now) return "expired";
    return "active";
  };
  if (o.json) {
    std::string out = "[";
    for (std::size_t i = 0; i < keys->size(); ++i) {
      const auto& k = (*keys)[i];
      if (i) out += ',';
      out += "{\"id\":";
      json::append_quoted(out, k.id);
      out += ",\"user\":";
      json::append_quoted(out, k.user);
      out += ",\"state\":\"" + std::string(state(k)) + "\",\"created_at\":";
      json::append_quoted(out, gateway::format_time(k.created_at_ms));
      out += ",\"expires_at\":";
      append_optional_time(out, k.expires_at_ms);
      out += ",\"revoked_at\":";
      append_optional_time(out, k.revoked_at_ms);
      out += ",\"rpm\":";
      append_optional_int(out, k.limits.requests_per_minute);
      out += ",\"concurrency\":";
      append_optional_int(out, k.limits.concurrent_streams);
      out += "}";
    }
    out += "]\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-12s  %-20s  %-8s  %-20s  %-20s  %-8s  %s\n", "ID", "USER", "STATE", "CREATED", "EXPIRES", "RPM",
              "CONCURRENCY");
  for (const auto& k : *keys)
    std::printf("%-12s  %-20s  %-8s  %-20s  %-20s  %-8s  %s\n", k.id.c_str(), k.user.c_str(), state(k),
                gateway::format_time(k.created_at_ms).c_str(),
                k.expires_at_ms ? gateway::format_time(*k.expires_at_ms).c_str() : "never",
                limit_text(k.limits.requests_per_minute).c_str(), limit_text(k.limits.concurrent_streams).c_str());
  return 0;
}

int usage(gateway::key_store& store, const keys_options& o) {
  std::optional<std::int64_t> since;
  if (!o.since.empty()) {
    auto t = gateway::parse_time(o.since, gate::unix_ms_now(), false);
    if (!t) return fail("usage", t.err().with_context("--since"));
    since = *t;
  }
  auto report = store.usage(since);
  if (!report) return fail("usage", report.err());
  if (o.json) {
    auto rows = [](std::string& out, const std::vector<gateway::usage_total>& totals, bool with_key) {
      out += '[';
      for (std::size_t i = 0; i < totals.size(); ++i) {
        const auto& t = totals[i];
        if (i) out += ',';
        out += '{';
        if (with_key) {
          out += "\"key\":";
          json::append_quoted(out, t.key_id);
          out += ',';
        }
        out += "\"user\":";
        json::append_quoted(out, t.user);
        out += ",\"requests\":" + std::to_string(t.requests) + ",\"prompt_tokens\":" + std::to_string(t.prompt_tokens) +
               ",\"completion_tokens\":" + std::to_string(t.completion_tokens) + "}";
      }
      out += ']';
    };
    std::string out = "{\"since\":";
    append_optional_time(out, since);
    out += ",\"by_key\":";
    rows(out, report->by_key, true);
    out += ",\"by_user\":";
    rows(out, report->by_user, false);
    out += "}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-12s  %-20s  %10s  %14s  %18s\n", "KEY", "USER", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS");
  for (const auto& t : report->by_key)
    std::printf("%-12s  %-20s  %10lld  %14lld  %18lld\n", t.key_id.c_str(), t.user.c_str(), static_cast<long long>(t.requests),
                static_cast<long long>(t.prompt_tokens), static_cast<long long>(t.completion_tokens));
  std::printf("\n%-20s  %10s  %14s  %18s\n", "USER", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS");
  for (const auto& t : report->by_user)
    std::printf("%-20s  %10lld  %14lld  %18lld\n", t.user.c_str(), static_cast<long long>(t.requests),
                static_cast<long long>(t.prompt_tokens), static_cast<long long>(t.completion_tokens));
  return 0;
}

}  // namespace

void add_keys_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<keys_options>();
  auto* cmd = app.add_subcommand("keys", "the gateway's API keys: create, list, revoke, and usage per key and user");
  cmd->add_option("--db", opts->db, "the gateway's database (SQLite)")->required();
  cmd->require_subcommand(1);

  auto* create_cmd = cmd->add_subcommand("create", "create a key and print it (once)");
  create_cmd->add_option("--user", opts->user, "the user the key belongs to")->required();
  create_cmd->add_option("--expires", opts->expires, "a span (30d, 12h) or an ISO date (2026-12-31)");
  create_cmd->add_option("--rpm", opts->rpm, "requests per minute (0: unlimited; default: the gateway's)")
      ->check(CLI::NonNegativeNumber);
  create_cmd->add_option("--concurrency", opts->concurrency, "requests at once (0: unlimited; default: the gateway's)")
      ->check(CLI::NonNegativeNumber);
  create_cmd->add_flag("--json", opts->json, "print {\"id\",\"key\",\"user\",\"expires_at\"}");

  auto* list_cmd = cmd->add_subcommand("list", "list the keys (never their secrets)");
  list_cmd->add_flag("--json", opts->json, "print JSON");

  auto* revoke_cmd = cmd->add_subcommand("revoke", "revoke a key by id");
  revoke_cmd->add_option("id", opts->id, "the key's id (the part after sk-chatai-)")->required();

  auto* usage_cmd = cmd->add_subcommand("usage", "requests and tokens per key and per user");
  usage_cmd->add_option("--since", opts->since, "a span back from now (7d) or an ISO date");
  usage_cmd->add_flag("--json", opts->json, "print JSON");

  cmd->callback([opts, cmd, create_cmd, list_cmd, revoke_cmd, &exit_code] {
    auto store = gateway::key_store::open(opts->db);
    if (!store) {
      std::fprintf(stderr, "chatai keys: %s\n", store.err().message().c_str());
      exit_code = 1;
      return;
    }
    auto& s = **store;
    if (cmd->got_subcommand(create_cmd)) exit_code = create(s, *opts);
    else if (cmd->got_subcommand(list_cmd)) exit_code = list(s, *opts);
    else if (cmd->got_subcommand(revoke_cmd)) {
      auto st = s.revoke(opts->id, gate::unix_ms_now());
      exit_code = st ? 0 : fail("revoke", st.err());
      if (st) std::fprintf(stderr, "key %s revoked\n", opts->id.c_str());
    } else exit_code = usage(s, *opts);
  });
}

}  // namespace chatai::cli
