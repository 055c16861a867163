// Internal: the built-in op kernels, grouped by file. graph.cpp seeds the
// registry with them on first use (explicit calls, not static registrars,
// which a static library's linker would drop).
#pragma once

#include "qat/graph.h"

#include <map>
#include <string>

namespace qat::ops {

using KernelMap = std::map<std::string, OpKernel>;

void add_nn_ops(KernelMap& kernels);           // ops_nn.cpp: Conv, Gemm, BatchNormalization, pools, ...
void add_elementwise_ops(KernelMap& kernels);  // ops_elementwise.cpp: activations and arithmetic
void add_tensor_ops(KernelMap& kernels);       // ops_tensor.cpp: shape and layout ops

}  // namespace qat::ops
