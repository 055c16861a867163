// Mixed precision for weights: per-layer bitwidths among candidates (4, 8,
// 16) under a budget on the mean weight bitwidth (weighted by parameter
// count, i.e. the model's weight size), chosen greedily from sensitivity
// data.
//
// The sensitivity of layer l at b bits is the noise power its weights add
// to the logits when quantized alone, n(l, b) = 10^(-SQNR / 10) relative to
// the signal. Starting with every layer at the widest candidate, the
// greedy step lowers the layer whose next narrower candidate adds the
// least noise per bit saved, (n(l, b') - n(l, b)) / (params_l (b - b')),
// until the mean fits the budget. Independent noises add, so this keeps
// the total output noise low for the size.
#pragma once

#include "qat/data.h"
#include "qat/quantsim.h"

#include <map>
#include <string>
#include <vector>

namespace qat {

struct MixedPrecisionOptions {
  std::vector<int> candidates{4, 8, 16};
  double mean_weight_bits = 8.0;  // the budget
};

// One weighted layer's size and measured noise per candidate bitwidth.
struct LayerNoise {
  std::string layer;
  int64_t params = 0;
  std::map<int, double> noise;  // candidate bits -> relative noise power
};

// Throws std::invalid_argument naming --mp-budget when the budget lies
// outside [smallest, widest candidate], or --mp-candidates for a bitwidth
// outside 2..16.
void check_mixed_precision_options(const MixedPrecisionOptions& options);

// The greedy choice (checks the options first).
std::map<std::string, int> greedy_weight_bits(const std::vector<LayerNoise>& layers,
                                              const MixedPrecisionOptions& options);

// Parameter-weighted mean bitwidth of a choice.
double mean_weight_bits(const std::vector<LayerNoise>& layers, const std::map<std::string, int>& bits);

// Gives `layer`'s weight quantizers `bits` and re-encodes them from the
// weights with their analyzer. Throws std::invalid_argument naming
// --layer-bits for a name that is not a weighted layer of the sim.
void set_weight_bits(QuantSim& sim, const std::string& layer, int bits);

// Measures every weighted layer's noise at each candidate on `batches`
// (one layer's weights quantized at a time), applies the greedy choice to
// the sim and returns the measurements with it.
struct MixedPrecisionResult {
  std::vector<LayerNoise> layers;
  std::map<std::string, int> bits;
  double mean_bits = 0.0;
};
MixedPrecisionResult choose_weight_bits(QuantSim& sim, const std::vector<data::Batch>& batches,
                                        const MixedPrecisionOptions& options);

}  // namespace qat
