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

}  // namespace qat
