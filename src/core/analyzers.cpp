#include "qat/analyzers.h"

#include "core/extrema.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace qat {
namespace {

using torch::Tensor;
using Bins = HistogramAnalyzer::Bins;

// Candidate counts of the MSE search (docs/calibration.md, section 4).
constexpr int64_t kSymmetricCandidates = 512;
constexpr int64_t kAsymmetricCandidates = 100;

const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

std::string axis_name(std::optional<int64_t> axis) {
  return axis ? "axis " + std::to_string(*axis) : std::string("per-tensor");
}

// Per-row min and max over finite elements, as float64; +inf / -inf for a
// row without any, which leaves running minima and maxima unchanged. The
// finite filter (three more passes) runs only when the one-pass kernel met
// NaN or inf.
std::pair<Tensor, Tensor> finite_min_max(const Tensor& rows) {
  const double inf = std::numeric_limits<double>::infinity();
  if (rows.size(1) == 0) {
    return {torch::full({rows.size(0)}, inf, kF64), torch::full({rows.size(0)}, -inf, kF64)};
  }
  if (auto extrema = row_extrema(rows)) return *extrema;
  const Tensor finite = torch::isfinite(rows);
  return {torch::where(finite, rows, inf).amin(1).to(torch::kDouble),
          torch::where(finite, rows, -inf).amax(1).to(torch::kDouble)};
}

// Histogram of the finite elements of each row over [lo, hi] (which contains
// them), all rows at once: bin i of row c is counted at c * bins + i.
Tensor bin_counts(const Tensor& rows, const Tensor& lo, const Tensor& hi, int64_t bins) {
  const int64_t channels = rows.size(0);
  const Tensor width = ((hi - lo) / static_cast<double>(bins)).unsqueeze(1);
  // A constant row has zero width and goes to bin 0; the clamp puts each
  // row's maximum into its last bin.
  const Tensor bin = torch::where(width > 0, ((rows - lo.unsqueeze(1)) / width).floor(), 0.0)
                         .clamp(0, static_cast<double>(bins - 1));
  const Tensor offset = torch::arange(channels, kF64).unsqueeze(1) * static_cast<double>(bins);
  const Tensor flat = (bin + offset).masked_select(torch::isfinite(rows)).to(torch::kLong);
  return torch::bincount(flat, {}, channels * bins).to(torch::kDouble).reshape({channels, bins});
}

// Counts after widening each row's span [old_lo, old_hi] to [lo, hi] ⊇ it.
// Each old bin's mass is taken as uniform over the bin, so the old CDF is
// piecewise linear; a new bin receives the CDF's increase across it. A
// zero-width (constant) old histogram is a point mass at old_lo.
Tensor rebin(const Tensor& counts, const Tensor& old_lo, const Tensor& old_hi, const Tensor& lo,
             const Tensor& hi) {
  const int64_t channels = counts.size(0);
  const int64_t bins = counts.size(1);
  const double nb = static_cast<double>(bins);
  // Rows whose span is unchanged keep their counts bit for bit; rows that
  // never saw a finite value have nothing to move.
  const Tensor moved = (((lo != old_lo) | (hi != old_hi)) & (old_lo <= old_hi)).unsqueeze(1);
  // Only interior new edges are evaluated: the outer ones enclose none and
  // all of the old mass, exactly.
  const Tensor edges = lo.unsqueeze(1) + torch::arange(1, bins, kF64) * ((hi - lo) / nb).unsqueeze(1);
  const Tensor start = old_lo.unsqueeze(1);
  const Tensor old_width = ((old_hi - old_lo) / nb).unsqueeze(1);
  // Each edge's position in old-bin units, in [0, bins].
  Tensor pos = torch::where(old_width > 0, (edges - start) / old_width,
                            (edges > start).to(torch::kDouble) * nb);
  pos = torch::where(moved, pos, 0.0).clamp(0, nb);
  const Tensor bin = pos.floor().clamp_max(nb - 1);
  const Tensor index = bin.to(torch::kLong);
  const Tensor cumulative = counts.cumsum(1);
  const Tensor zero = torch::zeros({channels, 1}, kF64);
  const Tensor below = torch::cat({zero, cumulative.slice(1, 0, bins - 1)}, 1);
  const Tensor inner_cdf = below.gather(1, index) + (pos - bin) * counts.gather(1, index);
  const Tensor cdf = torch::cat({zero, inner_cdf, cumulative.slice(1, bins - 1)}, 1);
  return torch::where(moved, cdf.slice(1, 1) - cdf.slice(1, 0, bins), counts);
}

}  // namespace

// ---- EncodingAnalyzer -------------------------------------------------------

EncodingAnalyzer::EncodingAnalyzer(std::optional<int64_t> channel_axis) : channel_axis_(channel_axis) {}

EncodingAnalyzer::~EncodingAnalyzer() = default;

Tensor EncodingAnalyzer::to_rows(const Tensor& x) {
  const Tensor data = x.detach().to(torch::kCPU, x.scalar_type() == torch::kFloat ? torch::kFloat : torch::kDouble);
  Tensor front = data;
  int64_t channels = 1;
  if (channel_axis_) {
    const int64_t axis = normalize_axis(*channel_axis_, data.dim());
    channels = data.size(axis);
    front = data.movedim(axis, 0);
  }
  if (channels == 0) throw std::invalid_argument("the channel axis has size 0");
  if (channels_ != 0 && channels != channels_) {
    throw std::invalid_argument("batch has " + std::to_string(channels) + " channels along " +
                                axis_name(channel_axis_) + ", earlier batches had " +
                                std::to_string(channels_));
  }
  channels_ = channels;
  rank_ = data.dim();
  return front.reshape({channels, data.numel() / channels}).contiguous();
}

void EncodingAnalyzer::require_update() const {
  if (channels_ == 0) throw std::logic_error("encoding analyzer has no statistics: call update() first");
}

Range EncodingAnalyzer::shaped(const Tensor& min, const Tensor& max) const {
  if (channel_axis_) return {min, max};
  return {min.reshape({}), max.reshape({})};
}

Encoding EncodingAnalyzer::compute_encoding(const QuantSpec& spec) const {
  const Range r = range(spec);
  const bool same_axis =
      spec.channel_axis.has_value() == channel_axis_.has_value() &&
      (!channel_axis_ || normalize_axis(*spec.channel_axis, rank_) == normalize_axis(*channel_axis_, rank_));
  if (!same_axis) {
    throw std::invalid_argument("spec is " + axis_name(spec.channel_axis) + " but the analyzer collected " +
                                axis_name(channel_axis_) + " statistics");
  }
  return encoding_from_range(r.min, r.max, spec);
}

// ---- MinMaxAnalyzer ---------------------------------------------------------

MinMaxAnalyzer::MinMaxAnalyzer(std::optional<int64_t> channel_axis) : EncodingAnalyzer(channel_axis) {}

void MinMaxAnalyzer::update(const Tensor& x) {
  const auto [lo, hi] = finite_min_max(to_rows(x));
  min_ = min_.defined() ? torch::minimum(min_, lo) : lo;
  max_ = max_.defined() ? torch::maximum(max_, hi) : hi;
}

Range MinMaxAnalyzer::range(const QuantSpec&) const {
  require_update();
  const Tensor seen = min_ <= max_;
  return shaped(torch::where(seen, min_, 0.0), torch::where(seen, max_, 0.0));
}

// ---- MovingAverageMinMaxAnalyzer --------------------------------------------

MovingAverageMinMaxAnalyzer::MovingAverageMinMaxAnalyzer(std::optional<int64_t> channel_axis, double momentum)
    : EncodingAnalyzer(channel_axis), momentum_(momentum) {
  if (!(momentum > 0.0 && momentum <= 1.0)) {
    throw std::invalid_argument("EMA momentum must be in (0, 1], got " + std::to_string(momentum));
  }
}

void MovingAverageMinMaxAnalyzer::update(const Tensor& x) {
  const auto [lo, hi] = finite_min_max(to_rows(x));
  if (!seen_.defined()) {
    seen_ = torch::zeros(lo.sizes(), torch::kBool);
    min_ = torch::zeros_like(lo);
    max_ = torch::zeros_like(hi);
  }
  // A batch without finite values for a channel leaves that channel alone.
  const Tensor valid = lo <= hi;
  min_ = torch::where(valid, torch::where(seen_, min_ + momentum_ * (lo - min_), lo), min_);
  max_ = torch::where(valid, torch::where(seen_, max_ + momentum_ * (hi - max_), hi), max_);
  seen_ = seen_ | valid;
}

Range MovingAverageMinMaxAnalyzer::range(const QuantSpec&) const {
  require_update();
  return shaped(min_.clone(), max_.clone());
}

// ---- HistogramAnalyzer ------------------------------------------------------

HistogramAnalyzer::HistogramAnalyzer(std::optional<int64_t> channel_axis, int64_t num_bins)
    : EncodingAnalyzer(channel_axis), num_bins_(num_bins) {
  if (num_bins < 1) {
    throw std::invalid_argument("histogram needs at least one bin, got " + std::to_string(num_bins));
  }
}

void HistogramAnalyzer::update(const Tensor& x) {
  const Tensor rows = to_rows(x).to(torch::kDouble);  // bin edges need double
  const auto [batch_lo, batch_hi] = finite_min_max(rows);
  if (counts_.defined()) {
    const Tensor lo = torch::minimum(lo_, batch_lo);
    const Tensor hi = torch::maximum(hi_, batch_hi);
    counts_ = rebin(counts_, lo_, hi_, lo, hi);
    lo_ = lo;
    hi_ = hi;
  } else {
    counts_ = torch::zeros({rows.size(0), num_bins_}, kF64);
    lo_ = batch_lo;
    hi_ = batch_hi;
  }
  counts_ = counts_ + bin_counts(rows, lo_, hi_, num_bins_);
}

Range HistogramAnalyzer::range(const QuantSpec& spec) const {
  require_update();
  const Tensor counts = counts_.contiguous();
  const int64_t channels = counts.size(0);
  Tensor min = torch::zeros({channels}, kF64);
  Tensor max = torch::zeros({channels}, kF64);
  auto min_out = min.accessor<double, 1>();
  auto max_out = max.accessor<double, 1>();
  const auto lo = lo_.accessor<double, 1>();
  const auto hi = hi_.accessor<double, 1>();
  for (int64_t c = 0; c < channels; ++c) {
    const double* row = counts.data_ptr<double>() + c * num_bins_;
    const Bins bins{row, num_bins_, lo[c], hi[c], std::accumulate(row, row + num_bins_, 0.0)};
    if (bins.total > 0.0) std::tie(min_out[c], max_out[c]) = channel_range(bins, spec);
  }
  return shaped(min, max);
}

// ---- PercentileAnalyzer -----------------------------------------------------

namespace {

// The value at which the CDF reaches `mass`, when bin k holds that point
// and `below` is the mass of bins 0..k-1; linear inside the bin.
double value_at(const Bins& b, int64_t k, double below, double mass) {
  const double frac = (mass - below) / b.counts[k];
  return std::clamp(b.lo + (static_cast<double>(k) + frac) * b.width(), b.lo, b.hi);
}

// Smallest x with CDF(x) >= mass, for 0 < mass <= total.
double upper_quantile(const Bins& b, double mass) {
  double below = 0.0;
  for (int64_t k = 0; k < b.size; ++k) {
    if (b.counts[k] > 0.0 && below + b.counts[k] >= mass) return value_at(b, k, below, mass);
    below += b.counts[k];
  }
  return b.hi;  // only if rounding put mass above total
}

// Largest x with CDF(x) <= mass, for 0 <= mass < total: the mirror image,
// so that p = 100 gives exactly [min, max].
double lower_quantile(const Bins& b, double mass) {
  double below = 0.0;
  for (int64_t k = 0; k < b.size; ++k) {
    if (below + b.counts[k] > mass) return value_at(b, k, below, mass);
    below += b.counts[k];
  }
  return b.lo;  // not reached: mass < total
}

}  // namespace

PercentileAnalyzer::PercentileAnalyzer(std::optional<int64_t> channel_axis, double percentile,
                                       int64_t num_bins)
    : HistogramAnalyzer(channel_axis, num_bins), percentile_(percentile) {
  if (!(percentile >= 50.0 && percentile <= 100.0)) {
    throw std::invalid_argument("percentile must be in [50, 100], got " + std::to_string(percentile));
  }
}

std::pair<double, double> PercentileAnalyzer::channel_range(const Bins& bins, const QuantSpec&) const {
  const double q = percentile_ / 100.0;
  return {lower_quantile(bins, (1.0 - q) * bins.total), upper_quantile(bins, q * bins.total)};
}

// ---- MseAnalyzer ------------------------------------------------------------

namespace {

// Prefix sums of n, n*x and n*x^2 over bin centres x: the squared clipping
// error of any range then costs two binary searches.
class ClipError {
 public:
    explicit ClipError(const Bins& b)
      : centres_(static_cast<size_t>(b.size)), n_(centres_.size() + 1), nx_(n_.size()), nxx_(n_.size()) {
    for (size_t k = 0; k < centres_.size(); ++k) {
      const double x = b.lo + (static_cast<double>(k) + 0.5) * b.width();
      const double c = b.counts[k];
      centres_[k] = x;
      n_[k + 1] = n_[k] + c;
      nx_[k + 1] = nx_[k] + c * x;
      nxx_[k + 1] = nxx_[k] + c * x * x;
    }
  }

  // Mass inside [lo, hi], and the sum of n * (x - nearer bound)^2 outside.
  std::pair<double, double> operator()(double lo, double hi) const {
    const size_t first_in = std::lower_bound(centres_.begin(), centres_.end(), lo) - centres_.begin();
    const size_t first_above = std::upper_bound(centres_.begin(), centres_.end(), hi) - centres_.begin();
    return {n_[first_above] - n_[first_in],
            squared_distance(0, first_in, lo) + squared_distance(first_above, centres_.size(), hi)};
  }

 private:
  // Sum over bins [from, to) of n * (x - bound)^2, expanded.
  double squared_distance(size_t from, size_t to, double bound) const {
    const double n = n_[to] - n_[from];
    const double nx = nx_[to] - nx_[from];
    const double nxx = nxx_[to] - nxx_[from];
    return nxx - 2.0 * bound * nx + bound * bound * n;
  }

  std::vector<double> centres_, n_, nx_, nxx_;
};

// i / n for i = 1..n.
Tensor shrink_factors(int64_t n) { return torch::arange(1, n + 1, kF64) / static_cast<double>(n); }

// Candidate ranges [lo_i, hi_i] for one channel spanning [lo, hi].
std::pair<Tensor, Tensor> candidates(double lo, double hi, const QuantSpec& spec) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (spec.symmetric) {
    const Tensor shrink = shrink_factors(kSymmetricCandidates);
    if (!spec.grid.is_signed) return {torch::zeros_like(shrink), hi * shrink};
    const double absmax = std::max(-lo, hi);
    return {-absmax * shrink, absmax * shrink};
  }
  const Tensor shrink = shrink_factors(kAsymmetricCandidates);
  const auto grid = torch::meshgrid({lo * shrink, hi * shrink}, "ij");
  return {grid[0].reshape({-1}), grid[1].reshape({-1})};
}

}  // namespace

MseAnalyzer::MseAnalyzer(std::optional<int64_t> channel_axis, double clip_weight, int64_t num_bins)
    : HistogramAnalyzer(channel_axis, num_bins), clip_weight_(clip_weight) {
  if (!(clip_weight > 0.0)) {
    throw std::invalid_argument("clip weight must be positive, got " + std::to_string(clip_weight));
  }
}

std::unique_ptr<MseAnalyzer> MseAnalyzer::sqnr(std::optional<int64_t> channel_axis) {
  return std::make_unique<MseAnalyzer>(channel_axis, kSqnrClipWeight);
}

std::pair<double, double> MseAnalyzer::channel_range(const Bins& bins, const QuantSpec& spec) const {
  const auto [lo, hi] = candidates(bins.lo, bins.hi, spec);
  // Each candidate as one "channel", so that its step and clipping bounds
  // are exactly those the final encoding will have (float32 scale included).
  QuantSpec each = spec;
  each.channel_axis = 0;
  const Encoding enc = encoding_from_range(lo, hi, each);
  const Tensor step = enc.scale.to(torch::kDouble).contiguous();
  const Tensor grid_lo = enc.min().to(torch::kDouble).contiguous();
  const Tensor grid_hi = enc.max().to(torch::kDouble).contiguous();
  const double* s = step.data_ptr<double>();
  const double* g_lo = grid_lo.data_ptr<double>();
  const double* g_hi = grid_hi.data_ptr<double>();
  const ClipError clip_error(bins);
  int64_t best = 0;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < lo.numel(); ++i) {
    const auto [inside, clipped] = clip_error(g_lo[i], g_hi[i]);
    const double cost = inside * s[i] * s[i] / 12.0 + clip_weight_ * clipped;
    if (cost < best_cost) {
      best_cost = cost;
      best = i;
    }
  }
  return {lo[best].item<double>(), hi[best].item<double>()};
}

// ---- factory ----------------------------------------------------------------

std::unique_ptr<EncodingAnalyzer> make_analyzer(const std::string& name,
                                                std::optional<int64_t> channel_axis) {
  if (name == "minmax") return std::make_unique<MinMaxAnalyzer>(channel_axis);
  if (name == "ema") return std::make_unique<MovingAverageMinMaxAnalyzer>(channel_axis);
  if (name == "percentile") return std::make_unique<PercentileAnalyzer>(channel_axis);
  if (name == "mse") return std::make_unique<MseAnalyzer>(channel_axis);
  if (name == "sqnr") return MseAnalyzer::sqnr(channel_axis);
  throw std::invalid_argument("unknown encoding analyzer '" + name +
                              "' (expected minmax, ema, percentile, mse or sqnr)");
}

}  // namespace qat
