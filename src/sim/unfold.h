// Internal: the "unfold" step of the simulated BatchNorm fold.
#pragma once

#include <torch/torch.h>

namespace qat {

// y = conv / factor + bias, with factor and bias per channel (dim 1), as
// one autograd node. Same values as the two ATen ops; its backward
// recovers conv from y instead of keeping it (see unfold.cpp).
torch::Tensor unfold_conv_output(const torch::Tensor& conv, const torch::Tensor& factor, const torch::Tensor& bias);

}  // namespace qat
