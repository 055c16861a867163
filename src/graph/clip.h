// Internal: the Clip kernel's fast path for constant bounds.
#pragma once

#include <torch/torch.h>

namespace qat::ops {

// clamp(x, lo, hi) for a float or double CPU tensor, with ATen's values and
// gradient (x's gradient passes where lo <= x <= hi, NaN gets none), but
// one pass each way and a one-byte mask saved instead of x.
torch::Tensor clamp_with_mask(const torch::Tensor& x, double lo, double hi);

// clamp(x, lo, hi) for a float CPU x: ATen's clamp, or clamp_with_mask when
// x needs a gradient.
torch::Tensor clamp_constant(const torch::Tensor& x, double lo, double hi);

}  // namespace qat::ops
