// Metric families and their Prometheus text rendering.
#include "chatai/core/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <type_traits>

namespace chatai::metrics {

namespace {

bool valid_name(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char digits[32];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    out.append(digits, end);
  }
}

void append_escaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
}

// "{a="x",b="y"}" (nothing when there are no labels); `extra` is appended as a last label.
void append_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                   std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i], true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void append_header(std::string& out, const std::string& name, const std::string& help, std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_escaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void append_sample(std::string& out, const std::string& name, std::string_view suffix,
                   const std::vector<std::string>& names, const std::vector<std::string>& values, double v,
                   std::string_view extra_name = {}, std::string_view extra_value = {}) {
  out += name;
  out += suffix;
  append_labels(out, names, values, extra_name, extra_value);
  out += ' ';
  append_value(out, v);
  out += '\n';
}

std::vector<double> checked_bounds(std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      throw std::invalid_argument("histogram buckets must be finite and strictly increasing");
    }
  }
  return bounds;
}

template <class Metric>
std::unique_ptr<Metric> make_metric(const std::vector<double>& bounds) {
  if constexpr (std::is_same_v<Metric, histogram>) {
    return std::make_unique<histogram>(bounds);
  } else {
    return std::make_unique<Metric>();
  }
}

}  // namespace

void counter::inc(double amount) noexcept {
  if (amount > 0) value_.fetch_add(amount, std::memory_order_relaxed);
}

histogram::histogram(std::vector<double> bounds)
    : bounds_(checked_bounds(std::move(bounds))),
      counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void histogram::observe(double v) noexcept {
  const std::size_t bucket = std::isnan(v) ? bounds_.size()
                                           : static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                                                      bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<std::uint64_t> histogram::cumulative_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

std::vector<double> default_buckets() { return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

std::vector<double> exponential_buckets(double start, double factor, int count) {
  if (start <= 0 || factor <= 1 || count < 1) {
    throw std::invalid_argument("exponential_buckets needs start > 0, factor > 1 and count >= 1");
  }
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(count));
  for (double v = start; count-- > 0; v *= factor) out.push_back(v);
  return out;
}

template <class Metric>
Metric& family<Metric>::labels(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": expected " + std::to_string(label_names_.size()) +
                                " label values, got " + std::to_string(values.size()));
  }
  std::lock_guard lock(mutex_);
  auto& child = children_[values];
  if (!child) child = make_metric<Metric>(bounds_);
  return *child;
}

template <class Metric>
void family<Metric>::render(std::string& out) const {
  std::lock_guard lock(mutex_);
  if constexpr (std::is_same_v<Metric, histogram>) {
    append_header(out, name_, help_, "histogram");
    for (const auto& [values, child] : children_) {
      const auto counts = child->cumulative_counts();
      std::string le;
      for (std::size_t i = 0; i < bounds_.size(); ++i) {
        le.clear();
        append_value(le, bounds_[i]);
        append_sample(out, name_, "_bucket", label_names_, values, static_cast<double>(counts[i]), "le", le);
      }
      append_sample(out, name_, "_bucket", label_names_, values, static_cast<double>(counts.back()), "le", "+Inf");
      append_sample(out, name_, "_sum", label_names_, values, child->sum());
      append_sample(out, name_, "_count", label_names_, values, static_cast<double>(counts.back()));
    }
  } else {
    append_header(out, name_, help_, std::is_same_v<Metric, counter> ? "counter" : "gauge");
    for (const auto& [values, child] : children_) append_sample(out, name_, "", label_names_, values, child->value());
  }
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

template <class Metric>
family<Metric>& registry::add(std::string name, std::string help, std::vector<std::string> label_names,
                              std::vector<double> bounds) {
  if (!valid_name(name, true)) throw std::invalid_argument("invalid metric name '" + name + "'");
  for (const auto& label : label_names) {
    if (!valid_name(label, false) || label.starts_with("__") ||
        (std::is_same_v<Metric, histogram> && label == "le")) {
      throw std::invalid_argument("metric " + name + ": invalid label name '" + label + "'");
    }
  }
  std::lock_guard lock(mutex_);
  for (const auto& existing : families_) {
    if (existing->name() != name) continue;
    auto* same = dynamic_cast<family<Metric>*>(existing.get());
    if (same == nullptr || same->label_names() != label_names) {
      throw std::invalid_argument("metric " + name + " is already registered with another kind or labels");
    }
    return *same;
  }
  auto created = std::make_unique<family<Metric>>(std::move(name), std::move(help), std::move(label_names),
                                                  checked_bounds(std::move(bounds)));
  auto& ref = *created;
  families_.push_back(std::move(created));
  if (ref.label_names().empty()) ref.get();  // a family without labels shows its zero at once
  return ref;
}

family<counter>& registry::add_counter(std::string name, std::string help, std::vector<std::string> label_names) {
  return add<counter>(std::move(name), std::move(help), std::move(label_names), {});
}

family<gauge>& registry::add_gauge(std::string name, std::string help, std::vector<std::string> label_names) {
  return add<gauge>(std::move(name), std::move(help), std::move(label_names), {});
}

family<histogram>& registry::add_histogram(std::string name, std::string help, std::vector<double> bounds,
                                           std::vector<std::string> label_names) {
  return add<histogram>(std::move(name), std::move(help), std::move(label_names), std::move(bounds));
}

std::string registry::expose() const {
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& f : families_) f->render(out);
  return out;
}

}  // namespace chatai::metrics
