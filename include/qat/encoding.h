// Affine quantization encodings: the grid, the scale and the zero point.
//
// The math (docs/quantization.md has the derivation):
//   q  = clamp(round_half_even(x / s) + z, qmin, qmax)
//   x' = (q - z) * s
// An Encoding holds s and z for one tensor (per-tensor) or for each slice
// along one axis (per-channel). z is stored as a float tensor holding
// integers so that it can become a trainable parameter during range learning.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace qat {

// Smallest scale ever produced: float32's machine epsilon, as torch.ao and
// AIMET use. A zero scale would turn x / s into inf or NaN.
constexpr double kMinScale = 1.1920928955078125e-07;
// Range bounds are clamped to +-kMaxRangeBound before conversion, so an
// infinite min or max still gives a finite scale and finite grid points.
constexpr double kMaxRangeBound = 1.2676506002282294e+30;  // 2^100

// The integer grid. Signed b-bit: [-2^(b-1), 2^(b-1)-1]; unsigned:
// [0, 2^b-1]. Narrow range drops the lowest level ([-127, 127] for int8).
struct QuantGrid {
  int bitwidth = 8;
  bool is_signed = false;
  bool narrow_range = false;

  int64_t qmin() const;
  int64_t qmax() const;
  // Throws std::invalid_argument unless 2 <= bitwidth <= 16.
  void validate() const;
};

// What a quantizer is asked to do; the numbers come from calibration.
struct QuantSpec {
  QuantGrid grid;
  // Symmetric: z is fixed at 0 (signed grid) or at qmin (unsigned grid, for
  // non-negative tensors such as ReLU outputs).
  bool symmetric = false;
  // Per-channel along this axis when set; per-tensor otherwise.
  std::optional<int64_t> channel_axis;
};

struct Encoding {
  QuantSpec spec;
  torch::Tensor scale;       // float32, shape [] or [C]
  torch::Tensor zero_point;  // float32 with integer values, same shape

  int64_t num_channels() const;  // 1 for per-tensor
  // The represented range: (qmin - z) * s and (qmax - z) * s.
  torch::Tensor min() const;
  torch::Tensor max() const;
  std::string to_string() const;
};

// Builds the encoding whose grid covers [min, max] (float tensors of shape
// [] or [C]). The range is first widened to include 0.0, so that zero is
// exactly representable (padding and ReLU zeros stay exact); NaN bounds
// throw std::invalid_argument; infinite bounds clamp to +-kMaxRangeBound;
// scales never fall below kMinScale.
Encoding encoding_from_range(const torch::Tensor& min, const torch::Tensor& max,
                             const QuantSpec& spec);
Encoding encoding_from_range(double min, double max, const QuantSpec& spec);

// Shape that broadcasts a [C] parameter against a tensor of `dim` dimensions
// along `axis`: [1, .., C, .., 1]. Per-tensor parameters are returned as is.
torch::Tensor broadcast_along(const torch::Tensor& param, int64_t dim,
                              std::optional<int64_t> axis);

// Normalises a possibly negative axis for a tensor of `dim` dimensions;
// throws std::invalid_argument when out of bounds.
int64_t normalize_axis(int64_t axis, int64_t dim);

}  // namespace qat
