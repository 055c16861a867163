// Internal: BatchNorm passes of the quantsim.
#pragma once

#include "qat/quantsim.h"

#include <string>
#include <vector>

namespace qat {

// Op type of a Conv fused with its BatchNorm for simulated folding.
inline constexpr const char* kConvBnOp = "QatConvBn";

void register_conv_bn_op();

// Replaces each foldable Conv + BatchNormalization pair by one QatConvBn
// node named as the conv. Returns the fused node names.
std::vector<std::string> simulate_batchnorms(GraphModule& model);

// What a QatConvBn node computes in eval mode: the conv with this weight
// and bias. `factor` is gamma / sqrt(running_var + eps) per output channel.
struct FoldedConvBn {
  torch::Tensor weight, bias, factor;
};
// [C] -> [C, 1, 1, ...]: scales a weight of `dim` dimensions per output
// channel.
torch::Tensor per_out_channel(const torch::Tensor& v, int64_t dim);

FoldedConvBn fold_conv_bn(const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& gamma,
                          const torch::Tensor& beta, const torch::Tensor& mean, const torch::Tensor& var, double eps);

}  // namespace qat
