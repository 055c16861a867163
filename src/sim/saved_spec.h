// Internal: a quantizer's spec and absorbed activation carried from a
// custom autograd function's forward to its backward (saved_data holds
// only IValues), for the sim's functions that recompute a quantizer there.
#pragma once

#include "qat/encoding.h"
#include "qat/fake_quant.h"

#include <torch/autograd.h>

#include <string>

namespace qat {

// Stores under keys that start with `key`, so that one function can carry
// several quantizers.
void save_spec(torch::autograd::AutogradContext* ctx, const std::string& key, const QuantSpec& spec,
               const FusedActivation& activation);
QuantSpec saved_spec(torch::autograd::AutogradContext* ctx, const std::string& key);
FusedActivation saved_activation(torch::autograd::AutogradContext* ctx, const std::string& key);

}  // namespace qat
