// Test helper: quantsim options from a preset with the given bitwidths.
#pragma once

#include "qat/quantsim.h"
#include "qat/sim_config.h"

#include <string>

namespace qat {

inline QuantSimOptions sim_options(int param_bits, int act_bits, BatchNormMode bn = BatchNormMode::kSimulate,
                                   const std::string& preset = "default") {
  QuantSimOptions o;
  o.config = load_sim_config(preset);
  o.config.param_bitwidth = param_bits;
  o.config.activation_bitwidth = act_bits;
  o.batchnorm = bn;
  return o;
}

}  // namespace qat
