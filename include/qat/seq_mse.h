// Sequential MSE: a per-channel weight range search, layer by layer in
// graph order, that minimises the error of each layer's output rather
// than of its weights (AIMET's seq_mse; unlike AIMET, for any bitwidth).
//
// For layer k, its input x comes from the sim with the weights of layers
// 0..k-1 quantized (already searched) and every activation quantizer off.
// Candidate ranges per output channel are the fractions i / N, i = 1..N,
// of the channel's [min, max] weight range; the loss of a candidate is
// the error between the layer output with FP32 weights and with
// quantized weights, both on x, summed over the batches. Each channel
// keeps its best candidate, which becomes the weight encoding.
#pragma once

#include "qat/quantsim.h"

#include <string>
#include <vector>

namespace qat {

struct SeqMseOptions {
  int64_t candidates = 20;   // N, AIMET's num_candidates
  std::string loss = "mse";  // "mse" or "l1" (per channel, summed)
};

// Searches the weight encodings of every Conv/Gemm (and simulated-fold
// ConvBn) of a calibrated sim on `batches` (model inputs). Activation
// encodings are left as they are. Every quantizer is enabled afterwards.
void apply_seq_mse(QuantSim& sim, const std::vector<torch::Tensor>& batches, const SeqMseOptions& options = {});

}  // namespace qat
