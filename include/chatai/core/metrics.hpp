// Counters, gauges and histograms with labels, exposed in the Prometheus text format 0.0.4.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace chatai::metrics {

// A value that only goes up.
// Thread safety: all members may be called from any thread (lock-free).
class counter {
 public:
  void inc(double amount = 1.0) noexcept;  // negative amounts are ignored
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
// Thread safety: all members may be called from any thread (lock-free).
class gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double amount) noexcept { value_.fetch_add(amount, std::memory_order_relaxed); }
  void sub(double amount) noexcept { value_.fetch_add(-amount, std::memory_order_relaxed); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into buckets with upper bounds (plus an implicit +Inf), with their sum.
// Thread safety: all members may be called from any thread (lock-free).
class histogram {
 public:
  explicit histogram(std::vector<double> bounds);

  void observe(double v) noexcept;

  const std::vector<double>& bounds() const noexcept { return bounds_; }
  // Cumulative counts per bound, the last one (+Inf) being the total count.
  std::vector<std::uint64_t> cumulative_counts() const;
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // one per bound, then +Inf
  std::atomic<double> sum_{0.0};
};

// The Prometheus default buckets, 5 ms to 10 s.
std::vector<double> default_buckets();
// `count` bounds starting at `start`, each `factor` times the previous.
std::vector<double> exponential_buckets(double start, double factor, int count);

// What every family has: a name, help text and label names; rendering is per kind.
// Thread safety: all members may be called from any thread.
class family_base {
 public:
  virtual ~family_base() = default;
  const std::string& name() const noexcept { return name_; }
  const std::vector<std::string>& label_names() const noexcept { return label_names_; }
  // Appends the HELP and TYPE lines and every child's samples.
  virtual void render(std::string& out) const = 0;

 protected:
  family_base(std::string name, std::string help, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
};

// Metrics of one name, one per combination of label values. Children are created on first
// use and live as long as the registry: keep the reference instead of looking it up per event.
// Thread safety: all members may be called from any thread.
template <class Metric>
class family final : public family_base {
 public:
  family(std::string name, std::string help, std::vector<std::string> label_names, std::vector<double> bounds = {})
      : family_base(std::move(name), std::move(help), std::move(label_names)), bounds_(std::move(bounds)) {}

  // The child for these label values (as many as the family has label names; a mismatch is a
  // programming error and throws std::invalid_argument).
  Metric& labels(const std::vector<std::string>& values);
  // The child of a family without labels.
  Metric& get() { return labels({}); }

  void render(std::string& out) const override;

 private:
  std::vector<double> bounds_;  // histograms only
  mutable std::mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_;
};

// Owns metric families and renders them.
// Thread safety: all members may be called from any thread. Registering a name twice returns
// the existing family when its kind and label names match; otherwise, and for invalid names,
// it throws std::invalid_argument (a programming error).
class registry {
 public:
  registry() = default;
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  family<counter>& add_counter(std::string name, std::string help, std::vector<std::string> label_names = {});
  family<gauge>& add_gauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  family<histogram>& add_histogram(std::string name, std::string help, std::vector<double> bounds = default_buckets(),
                                   std::vector<std::string> label_names = {});

  // The text exposition format 0.0.4 (Content-Type: exposition_content_type), families in
  // registration order, children sorted by label values.
  std::string expose() const;

 private:
  template <class Metric>
  family<Metric>& add(std::string name, std::string help, std::vector<std::string> label_names,
                      std::vector<double> bounds);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<family_base>> families_;
};

// The Content-Type of expose()'s output.
inline constexpr std::string_view exposition_content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace chatai::metrics
