// BN re-estimation after QAT (AIMET's reestimate_bn_stats followed by
// folding into the quantizer scale), for the simulated-fold QatConvBn
// layers of a sim.
//
// While QAT trains, each layer's running statistics average batch
// statistics of ever-changing weights (with momentum), so at the end they
// describe none of them. Re-estimation resets them and recomputes them
// from scratch as the plain average over `batches` of the batch
// statistics (mean and unbiased variance), with the trained weights and
// the quantizers on, in training mode.
//
// Folding then keeps the integer weights: the folded weight is the weight
// times the fold factor gamma / sqrt(running_var + eps), which the new
// variance changes per output channel by r = factor_new / factor_old; a
// per-channel weight scale is multiplied by the same r, so every weight
// keeps its integer code (up to float rounding: a code at a .5 boundary
// may move one step). This is done before every batch as well, so the
// statistics are those of the trained integer weights rather than of
// weights requantized with half-estimated statistics. (A per-tensor weight
// scale cannot follow per-channel ratios; it is left as is and those codes
// may move.)
#pragma once

#include "qat/quantsim.h"

#include <string>
#include <vector>

namespace qat {

// Returns the names of the re-estimated layers; throws
// std::invalid_argument if `batches` is empty.
std::vector<std::string> reestimate_batchnorm(QuantSim& sim, const std::vector<torch::Tensor>& batches);

}  // namespace qat
