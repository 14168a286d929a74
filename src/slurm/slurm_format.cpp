// Parsing and formatting of Slurm durations, host lists and squeue lines.
#include "chatai/slurm/slurm_format.hpp"

#include <charconv>

namespace chatai::slurm {

namespace {

bool parse_uint(std::string_view s, std::int64_t& out) {
  if (s.empty() || s.size() > 12) return false;
  for (const char c : s)
    if (c < '0' || c > '9') return false;
  std::from_chars(s.data(), s.data() + s.size(), out);
  return true;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const auto pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

}  // namespace

result<slurm_duration> parse_duration(std::string_view text) {
  if (text == "UNLIMITED" || text == "INFINITE") return slurm_duration::unlimited();
  if (text == "INVALID" || text == "NOT_SET" || text == "N/A") return slurm_duration::unknown();
  auto bad = [&] { return error(errc::parse_error, "not a Slurm duration: \"" + std::string(text) + "\""); };
  std::int64_t days = 0;
  std::string_view rest = text;
  const bool has_days = rest.find('-') != std::string_view::npos;
  if (has_days) {
    const auto dash = rest.find('-');
    if (!parse_uint(rest.substr(0, dash), days)) return bad();
    rest = rest.substr(dash + 1);
  }
  const auto parts = split(rest, ':');
  if (parts.size() > 3) return bad();
  std::int64_t v[3] = {0, 0, 0};
  for (std::size_t i = 0; i < parts.size(); ++i)
    if (!parse_uint(parts[i], v[i])) return bad();
  std::int64_t seconds = 0;
  if (has_days) {
    // D-HH, D-HH:MM, D-HH:MM:SS
    seconds = days * 86400 + v[0] * 3600 + v[1] * 60 + v[2];
  } else if (parts.size() == 1) {
    seconds = v[0] * 60;  // MM
  } else if (parts.size() == 2) {
    seconds = v[0] * 60 + v[1];  // MM:SS
  } else {
    seconds = v[0] * 3600 + v[1] * 60 + v[2];  // HH:MM:SS
  }
  return slurm_duration::finite(std::chrono::seconds(seconds));
}

std::string format_duration(std::chrono::seconds s) {
  const auto total = std::max<std::int64_t>(0, s.count());
  const auto days = total / 86400;
  const auto hours = (total % 86400) / 3600;
  const auto minutes = (total % 3600) / 60;
  const auto seconds = total % 60;
  char buffer[48];
  if (days > 0)
    std::snprintf(buffer, sizeof buffer, "%lld-%02lld:%02lld:%02lld", static_cast<long long>(days),
                  static_cast<long long>(hours), static_cast<long long>(minutes), static_cast<long long>(seconds));
  else
    std::snprintf(buffer, sizeof buffer, "%02lld:%02lld:%02lld", static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(seconds));
  return buffer;
}

namespace {

// Expands one host expression (no top-level commas), appending to `out`.
status expand_one(std::string_view expr, std::vector<std::string>& out, std::size_t max_hosts) {
  const auto open = expr.find('[');
  if (open == std::string_view::npos) {
    if (expr.find(']') != std::string_view::npos) return error(errc::parse_error, "unbalanced ']'");
    out.emplace_back(expr);
    return {};
  }
  const auto close = expr.find(']', open);
  if (close == std::string_view::npos) return error(errc::parse_error, "unbalanced '['");
  const std::string_view prefix = expr.substr(0, open);
  const std::string_view ranges = expr.substr(open + 1, close - open - 1);
  const std::string_view suffix = expr.substr(close + 1);
  if (ranges.empty()) return error(errc::parse_error, "empty range '[]'");
  for (const auto range : split(ranges, ',')) {
    const auto dash = range.find('-');
    const std::string_view lo_text = range.substr(0, dash);
    const std::string_view hi_text = dash == std::string_view::npos ? lo_text : range.substr(dash + 1);
    std::int64_t lo = 0, hi = 0;
    if (!parse_uint(lo_text, lo) || !parse_uint(hi_text, hi) || hi < lo)
      return error(errc::parse_error, "bad range \"" + std::string(range) + "\"");
    const std::size_t width = lo_text.size();  // zero padding as written
    for (std::int64_t n = lo; n <= hi; ++n) {
      std::string number = std::to_string(n);
      if (number.size() < width) number.insert(0, width - number.size(), '0');
      std::string head = std::string(prefix) + number;
      std::vector<std::string> tails;
      CHATAI_RETURN_IF_ERROR(expand_one(suffix, tails, max_hosts));
      for (auto& t : tails) {
        if (out.size() >= max_hosts)
          return error(errc::out_of_range, "more than " + std::to_string(max_hosts) + " hosts");
        out.push_back(head + t);
      }
    }
  }
  return {};
}

}  // namespace

result<std::vector<std::string>> expand_hostlist(std::string_view list, std::size_t max_hosts) {
  std::vector<std::string> hosts;
  if (list.empty() || list == "(null)") return hosts;
  // Split on commas outside brackets.
  std::size_t depth = 0, start = 0;
  for (std::size_t i = 0; i <= list.size(); ++i) {
    if (i < list.size() && list[i] == '[') ++depth;
    if (i < list.size() && list[i] == ']') {
      if (depth == 0) return error(errc::parse_error, "host list \"" + std::string(list) + "\": unbalanced ']'");
      --depth;
    }
    if (i == list.size() || (list[i] == ',' && depth == 0)) {
      const auto expr = list.substr(start, i - start);
      if (expr.empty()) return error(errc::parse_error, "host list \"" + std::string(list) + "\": empty name");
      if (auto st = expand_one(expr, hosts, max_hosts); !st)
        return error(st.err().code(), "host list \"" + std::string(list) + "\": " + st.err().message());
      start = i + 1;
    }
  }
  if (depth != 0) return error(errc::parse_error, "host list \"" + std::string(list) + "\": unbalanced '['");
  return hosts;
}

std::string_view squeue_format() { return "%i|%j|%T|%L|%l|%N|%r"; }

result<std::vector<squeue_job>> parse_squeue(std::string_view output) {
  std::vector<squeue_job> jobs;
  std::size_t line_no = 0;
  for (auto line : split(output, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    auto fail = [&](const std::string& what) {
      return error(errc::parse_error, "squeue line " + std::to_string(line_no) + ": " + what + ": \"" +
                                          std::string(line) + "\"");
    };
    // The reason comes last and may itself hold '|'.
    std::vector<std::string_view> f;
    std::size_t start = 0;
    for (int i = 0; i < 6; ++i) {
      const auto pos = line.find('|', start);
      if (pos == std::string_view::npos) return fail("expected 7 fields");
      f.push_back(line.substr(start, pos - start));
      start = pos + 1;
    }
    f.push_back(line.substr(start));
    squeue_job job;
    job.job_id = std::string(f[0]);
    std::int64_t id_number = 0;
    const auto underscore = f[0].find('_');  // array jobs print "123_4"
    if (!parse_uint(f[0].substr(0, underscore), id_number)) return fail("bad job id");
    job.name = std::string(f[1]);
    job.state = std::string(f[2]);
    if (job.state.empty()) return fail("empty state");
    auto left = parse_duration(f[3]);
    if (!left) return fail(left.err().message());
    auto limit = parse_duration(f[4]);
    if (!limit) return fail(limit.err().message());
    job.time_left = *left;
    job.time_limit = *limit;
    auto nodes = expand_hostlist(f[5]);
    if (!nodes) return fail(nodes.err().message());
    job.nodes = std::move(*nodes);
    job.reason = std::string(f[6]);
    jobs.push_back(std::move(job));
  }
  return jobs;
}

}  // namespace chatai::slurm
