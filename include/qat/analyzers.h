// Encoding analyzers: calibration statistics that turn observed tensors into
// a quantization range (docs/calibration.md has the math).
//
// An analyzer sees one calibration batch per update() and accumulates; range()
// summarises everything seen so far. Per-channel analyzers treat each slice
// along the channel axis exactly as a per-tensor analyzer would treat that
// slice alone. NaN and +-inf elements are ignored: they carry no usable range
// information and would otherwise poison every statistic. A channel that has
// seen no finite value yet reports the range [0, 0]. Statistics are kept on
// the CPU in float64, whatever the input's device and dtype.
#pragma once

#include "qat/encoding.h"

#include <memory>
#include <string>
#include <utility>

namespace qat {

// float64 tensors of shape [] (per-tensor) or [C] (per-channel).
struct Range {
  torch::Tensor min, max;
};

class EncodingAnalyzer {
 public:
  explicit EncodingAnalyzer(std::optional<int64_t> channel_axis);
  virtual ~EncodingAnalyzer();

  // Adds one calibration batch. Throws std::invalid_argument when the channel
  // axis is out of bounds or the channel count differs from earlier batches.
  virtual void update(const torch::Tensor& x) = 0;
  // The range for `spec`'s grid (MSE-type searches depend on it). Throws
  // std::logic_error before the first update().
  virtual Range range(const QuantSpec& spec) const = 0;
  // encoding_from_range(range(spec), spec); spec.channel_axis must name the
  // analyzer's axis (std::invalid_argument otherwise).
  Encoding compute_encoding(const QuantSpec& spec) const;

  std::optional<int64_t> channel_axis() const { return channel_axis_; }

 protected:
  // The batch as a contiguous [C, N] tensor, float32 for float32 input and
  // float64 otherwise: channel axis moved to the front, C = 1 per-tensor.
  // Checks the channel count against earlier batches.
  torch::Tensor to_rows(const torch::Tensor& x);
  // Throws std::logic_error unless update() has been called.
  void require_update() const;
  // A [C] result as the Range shape: [] per-tensor, [C] per-channel.
  Range shaped(const torch::Tensor& min, const torch::Tensor& max) const;

 private:
  std::optional<int64_t> channel_axis_;
  int64_t channels_ = 0;  // 0 until the first update
  int64_t rank_ = 0;      // rank of the latest batch, to normalise axes
};

// Global minimum and maximum over all batches.
class MinMaxAnalyzer : public EncodingAnalyzer {
 public:
  explicit MinMaxAnalyzer(std::optional<int64_t> channel_axis = std::nullopt);
  void update(const torch::Tensor& x) override;
  Range range(const QuantSpec& spec) const override;

 private:
  torch::Tensor min_, max_;  // [C]; +inf / -inf where nothing finite was seen
};

// Exponential moving average of each batch's min and max, as torch.ao's
// MovingAverageMinMaxObserver: m <- m + momentum * (batch_min - m). The
// first batch with finite values initialises a channel.
class MovingAverageMinMaxAnalyzer : public EncodingAnalyzer {
 public:
  // Throws std::invalid_argument unless 0 < momentum <= 1.
  explicit MovingAverageMinMaxAnalyzer(std::optional<int64_t> channel_axis = std::nullopt,
                                       double momentum = 0.01);
  void update(const torch::Tensor& x) override;
  Range range(const QuantSpec& spec) const override;

 private:
  double momentum_;
  torch::Tensor min_, max_;  // [C]
  torch::Tensor seen_;       // [C] bool: the channel has been initialised
};

// Accumulates a [C, bins] histogram spanning each channel's observed
// [min, max]. A batch beyond that span widens it; the old counts are then
// re-binned as if each old bin's mass were uniform over the bin.
class HistogramAnalyzer : public EncodingAnalyzer {
 public:
  // Throws std::invalid_argument unless num_bins >= 1.
  HistogramAnalyzer(std::optional<int64_t> channel_axis, int64_t num_bins);
  void update(const torch::Tensor& x) override;
  Range range(const QuantSpec& spec) const final;

  int64_t num_bins() const { return num_bins_; }
  // Counts [C, bins] (fractional after re-binning); bin i of channel c
  // covers [lo + i * w, lo + (i + 1) * w), w = (hi - lo) / bins, with lo and
  // hi from histogram_min() and histogram_max() ([C] each).
  const torch::Tensor& histogram() const { return counts_; }
  const torch::Tensor& histogram_min() const { return lo_; }
  const torch::Tensor& histogram_max() const { return hi_; }

  // One non-empty channel's histogram, as handed to channel_range().
  struct Bins {
    const double* counts;
    int64_t size;
    double lo, hi;
    double total;  // sum of counts, summed in bin order
    double width() const { return (hi - lo) / static_cast<double>(size); }
  };

 protected:
  virtual std::pair<double, double> channel_range(const Bins& bins, const QuantSpec& spec) const = 0;

 private:
  int64_t num_bins_;
  torch::Tensor counts_, lo_, hi_;
};

// Range = [value at (100 - p) %, value at p %] of the accumulated
// distribution, interpolating linearly inside a bin.
class PercentileAnalyzer : public HistogramAnalyzer {
 public:
  // Throws std::invalid_argument unless 50 <= percentile <= 100.
  explicit PercentileAnalyzer(std::optional<int64_t> channel_axis = std::nullopt,
                              double percentile = 99.99, int64_t num_bins = 2048);

 private:
  std::pair<double, double> channel_range(const Bins& bins, const QuantSpec& spec) const override;
  double percentile_;
};

// Weight of the clipping noise in the SQNR preset: AIMET's
// SqnrEncodingAnalyzer default (gamma = 3.0).
constexpr double kSqnrClipWeight = 3.0;

// Searches candidate ranges for the least expected quantization noise:
//   (in-range mass) * s^2 / 12 + clip_weight * sum of squared clipping errors,
// over symmetric candidates absmax * i / N (N = 512) or, for asymmetric
// grids, the 100 x 100 grid lo = min * i / 100, hi = max * j / 100.
// clip_weight = 1 estimates the MSE; larger weights clip less.
class MseAnalyzer : public HistogramAnalyzer {
 public:
  // Throws std::invalid_argument unless clip_weight > 0.
  explicit MseAnalyzer(std::optional<int64_t> channel_axis = std::nullopt, double clip_weight = 1.0,
                       int64_t num_bins = 2048);
  // The SQNR preset: clip_weight = kSqnrClipWeight.
  static std::unique_ptr<MseAnalyzer> sqnr(std::optional<int64_t> channel_axis = std::nullopt);

 private:
  std::pair<double, double> channel_range(const Bins& bins, const QuantSpec& spec) const override;
  double clip_weight_;
};

// "minmax", "ema", "percentile", "mse" or "sqnr", with default parameters.
// Throws std::invalid_argument naming an unknown analyzer.
std::unique_ptr<EncodingAnalyzer> make_analyzer(const std::string& name,
                                                std::optional<int64_t> channel_axis);

}  // namespace qat
