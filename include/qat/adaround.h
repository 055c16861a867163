// AdaRound (Nagel et al. 2020, as in AIMET): instead of rounding each
// weight to the nearest grid point, learn per weight whether to round up
// or down so that the layer's output stays close to the FP32 one.
//
// Per layer, with s, z the calibrated weight encoding and W the weight,
//   W~ = s * (clamp(floor(W / s) + h(V) + z, qmin, qmax) - z),
//   h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1), zeta 1.1, gamma -0.1,
// V initialised so that W~ = W. V minimises
//   || f(x_q, W~) - f(x_fp, W) ||^2 (summed over channels, mean over samples)
//   + reg * sum(1 - |2 h(V) - 1|^beta),
// the regulariser off for the first warm_start of the iterations, then
// with beta annealed (cosine) from beta_start to beta_end, pushing h to 0
// or 1. x_q is the layer input in the sim with the earlier layers'
// weights already rounded (activation quantizers off); x_fp the FP32
// model's. Finally h >= 0.5 rounds up, and the rounded weights replace
// the layer's weights, so the quantizer's nearest rounding reproduces them.
#pragma once

#include "qat/quantsim.h"

#include <vector>

namespace qat {

// Defaults are AIMET's (AdaroundParameters, AdaroundOptimizer).
struct AdaRoundOptions {
  int64_t iterations = 10000;
  int64_t batch_size = 32;  // samples per step, drawn from the cached inputs
  double reg_param = 0.01;
  double beta_start = 20.0;
  double beta_end = 2.0;
  double warm_start = 0.2;
  double lr = 1e-3;  // Adam
  uint64_t seed = 0;
};

// Rounds the weights of every Conv/Gemm (and simulated-fold ConvBn) of a
// calibrated sim, learning on `batches` (model inputs). Weight encodings
// are kept; every quantizer is enabled afterwards.
void apply_adaround(QuantSim& sim, const std::vector<torch::Tensor>& batches, const AdaRoundOptions& options = {});

}  // namespace qat
