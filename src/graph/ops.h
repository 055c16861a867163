// Internal: the built-in op kernels, grouped by file. graph.cpp seeds the
// registry with them on first use (explicit calls, not static registrars,
// which a static library's linker would drop).
#pragma once

#include "qat/graph.h"

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace qat::ops {

using KernelMap = std::map<std::string, OpKernel>;

// Checks that the first `count` inputs are present; kernels index them
// freely after.
inline void require_inputs(const std::vector<torch::Tensor>& in, size_t count) {
  if (in.size() < count) {
    throw std::invalid_argument("needs " + std::to_string(count) + " inputs, got " + std::to_string(in.size()));
  }
  for (size_t i = 0; i < count; ++i) {
    if (!in[i].defined()) throw std::invalid_argument("input " + std::to_string(i) + " is required");
  }
}

void add_nn_ops(KernelMap& kernels);           // ops_nn.cpp: Conv, Gemm, BatchNormalization, pools, ...
void add_elementwise_ops(KernelMap& kernels);  // ops_elementwise.cpp: activations and arithmetic
void add_tensor_ops(KernelMap& kernels);       // ops_tensor.cpp: shape and layout ops

}  // namespace qat::ops
