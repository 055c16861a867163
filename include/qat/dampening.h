// Oscillation dampening (Nagel et al., "Overcoming Oscillations in
// Quantization-Aware Training", ICML 2022).
//
// With the straight-through estimator a latent weight near the edge
// between two quantization bins can flip between the two codes from step
// to step without settling: an oscillation. It adds noise to training and
// to BatchNorm's running statistics, and it is worst in low-bit depthwise
// layers (MobileNetV2 at 4 bits). The dampening loss
//
//   L_d = sum over quantized weights w of (q(w) - clamp(w, w_min, w_max))^2
//
// with q(w) the quantizer's output held constant and [w_min, w_max] its
// grid's range, pulls every latent weight toward the centre of its bin.
// The QAT loss adds lambda * L_d, lambda rising from 0 to its final value
// on a cosine over training (docs/quantsim.md).
#pragma once

#include "qat/quantsim.h"

namespace qat {

// L_d over every enabled, calibrated weight quantizer of `sim`. For a
// QatConvBn w is the weight folded with the BN's running statistics, as
// the quantizer sees it; gradients reach the weights and BN scales, not
// the encodings.
torch::Tensor oscillation_dampening_loss(QuantSim& sim);

// lambda after `progress` (0 to 1) of training: final * (1 - cos(pi t)) / 2.
double dampening_weight(double final_weight, double progress);

}  // namespace qat
