#include "qat/encoding.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace qat {

int64_t QuantGrid::qmin() const {
  if (!is_signed) return narrow_range ? 1 : 0;
  const int64_t lowest = -(int64_t{1} << (bitwidth - 1));
  return narrow_range ? lowest + 1 : lowest;
}

int64_t QuantGrid::qmax() const {
  return is_signed ? (int64_t{1} << (bitwidth - 1)) - 1 : (int64_t{1} << bitwidth) - 1;
}

void QuantGrid::validate() const {
  if (bitwidth < 2 || bitwidth > 16) {
    throw std::invalid_argument("bitwidth " + std::to_string(bitwidth) +
                                " is out of range: qat supports 2 to 16 bits");
  }
}

int64_t Encoding::num_channels() const { return spec.channel_axis ? scale.numel() : 1; }

torch::Tensor Encoding::min() const {
  return (static_cast<double>(spec.grid.qmin()) - zero_point) * scale;
}

torch::Tensor Encoding::max() const {
  return (static_cast<double>(spec.grid.qmax()) - zero_point) * scale;
}

std::string Encoding::to_string() const {
  std::ostringstream out;
  out << (spec.grid.is_signed ? "int" : "uint") << spec.grid.bitwidth
      << (spec.grid.narrow_range ? " narrow" : "") << (spec.symmetric ? " symmetric" : " asymmetric");
  if (spec.channel_axis) out << " per-channel(axis " << *spec.channel_axis << ", " << num_channels() << ")";
  else out << " per-tensor scale " << scale.item<float>() << " zero_point " << zero_point.item<float>();
  return out.str();
}

int64_t normalize_axis(int64_t axis, int64_t dim) {
  const int64_t normalized = axis < 0 ? axis + dim : axis;
  if (normalized < 0 || normalized >= dim) {
    throw std::invalid_argument("axis " + std::to_string(axis) +
                                " is out of bounds for a tensor of rank " + std::to_string(dim));
  }
  return normalized;
}

torch::Tensor broadcast_along(const torch::Tensor& param, int64_t dim, std::optional<int64_t> axis) {
  if (!axis) return param;
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[static_cast<size_t>(normalize_axis(*axis, dim))] = param.numel();
  return param.reshape(shape);
}

namespace {

double sanitize_bound(double v) {
  if (std::isnan(v)) throw std::invalid_argument("quantization range contains NaN");
  return std::min(std::max(v, -kMaxRangeBound), kMaxRangeBound);
}

// One channel's conversion, in double so that the float result is the
// correctly rounded value of the exact formula.
void range_to_scale_offset(double lo, double hi, const QuantSpec& spec, float* scale, float* zero_point) {
  lo = sanitize_bound(lo);
  hi = sanitize_bound(hi);
  if (lo > hi) {
    throw std::invalid_argument("quantization range has min " + std::to_string(lo) + " > max " +
                                std::to_string(hi));
  }
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const double qmin = static_cast<double>(spec.grid.qmin());
  const double qmax = static_cast<double>(spec.grid.qmax());
  double s = 0.0;
  double z = 0.0;
  if (spec.symmetric && spec.grid.is_signed) {
    // Symmetric around 0 on [-qmax, qmax]; the extra negative level (if
    // any) is left unused, as in AIMET and ONNX Runtime's weight quantizer.
    s = std::max(std::max(-lo, hi) / qmax, kMinScale);
  } else if (spec.symmetric) {
    // Unsigned symmetric: the tensor is assumed non-negative, 0 sits at qmin.
    s = std::max(hi / (qmax - qmin), kMinScale);
    z = qmin;
  } else {
    s = std::max((hi - lo) / (qmax - qmin), kMinScale);
    // Rounding z keeps 0.0 on the grid; clamping only matters when the range
    // is shifted so far that s was raised to kMinScale.
    z = std::min(std::max(qmin - std::nearbyint(lo / s), qmin), qmax);
  }
  *scale = static_cast<float>(s);
  *zero_point = static_cast<float>(z);
}

}  // namespace

Encoding encoding_from_range(const torch::Tensor& min, const torch::Tensor& max, const QuantSpec& spec) {
  spec.grid.validate();
  if (min.sizes() != max.sizes() || min.dim() > 1) {
    throw std::invalid_argument("range min and max must have the same shape, [] or [C]");
  }
  if (!spec.channel_axis && min.numel() != 1) {
    throw std::invalid_argument("a per-tensor encoding needs a single min/max, got " +
                                std::to_string(min.numel()));
  }
  const auto lo = min.to(torch::kDouble).contiguous();
  const auto hi = max.to(torch::kDouble).contiguous();
  const auto options = torch::TensorOptions().dtype(torch::kFloat);
  Encoding enc{spec, torch::empty(min.sizes(), options), torch::empty(min.sizes(), options)};
  const double* lo_ptr = lo.data_ptr<double>();
  const double* hi_ptr = hi.data_ptr<double>();
  float* s_ptr = enc.scale.data_ptr<float>();
  float* z_ptr = enc.zero_point.data_ptr<float>();
  for (int64_t c = 0; c < lo.numel(); ++c) {
    range_to_scale_offset(lo_ptr[c], hi_ptr[c], spec, s_ptr + c, z_ptr + c);
  }
  return enc;
}

Encoding encoding_from_range(double min, double max, const QuantSpec& spec) {
  return encoding_from_range(torch::tensor(min, torch::kDouble), torch::tensor(max, torch::kDouble), spec);
}

}  // namespace qat
