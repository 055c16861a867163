// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization",
// as in AIMET's equalize_model) for an FP32 model, before the sim is
// built. Depthwise-separable nets (MobileNetV2) have weight ranges that
// differ by orders of magnitude between the channels of one layer, which
// a per-tensor weight grid cannot serve; CLE moves range between
// consecutive layers so that the channels even out.
//
// 1. BatchNorm is folded into the convs (fold_batchnorms), after noting
//    each BN's beta and gamma (each channel's output mean and spread).
// 2. Pairs: a Conv A whose output reaches exactly one Conv B (groups 1 or
//    depthwise), directly or through one ReLU or ReLU6. A ReLU6 between
//    them is replaced by a ReLU, as AIMET does: clipping at 6 does not
//    commute with scaling (this changes the FP32 model where activations
//    exceed 6).
// 3. Equalization, in sweeps over all pairs: with r1_i the range of A's
//    output channel i and r2_i that of B's input channel i,
//    s_i = sqrt(r1_i / r2_i); A's channel i (weights, bias) is divided by
//    s_i and B's input channel i multiplied by it, so both ranges become
//    sqrt(r1_i r2_i). ReLU(x / s) = ReLU(x) / s for s > 0, so the FP32
//    function is unchanged.
// 4. High-bias absorption: where A's output (by its BN, mean beta_i and
//    spread gamma_i, scaled along) stays above c_i = max(0, beta_i - 3 gamma_i),
//    c_i moves from A's bias into B's (b_B += sum over i and the kernel of
//    W_B[:, i] c_i), shrinking the activation range; exact except where
//    A's output falls below c_i or where B pads.
#pragma once

#include "qat/graph.h"

#include <string>
#include <utility>
#include <vector>

namespace qat {

struct CleOptions {
  int64_t sweeps = 16;  // passes over all pairs (chains through depthwise layers need several)
  bool absorb_high_bias = true;
};

struct CleResult {
  std::vector<std::pair<std::string, std::string>> pairs;  // (A, B) conv names
  int64_t relu6_replaced = 0;
  int64_t biases_absorbed = 0;  // pairs where some c_i > 0
};

CleResult equalize_cross_layer(GraphModule& model, const CleOptions& options = {});

}  // namespace qat
