// Internal: training-time convolution of a fake-quantized activation that
// keeps the activation's float input for backward instead of its quantized
// copy.
//
// In x -> QatFakeQuant -> q -> QatConvBn, autograd would keep q for the
// conv's weight gradient (and the quantizer a mask or x for its own
// backward), while x itself is usually kept anyway (by the ReLU that made
// it, or by the LSQ backward). The linked conv keeps only x and recomputes
// q = fake_quant(x) in backward, so QAT holds about as many activation
// tensors as FP32 training (docs/quantsim.md, "Recomputed conv inputs").
#pragma once

#include "qat/graph.h"
#include "qat/quantizer.h"

#include <optional>
#include <vector>

namespace qat {

// Node attribute of a QatConvBn whose input 0 is the output of this
// quantizer's QatFakeQuant node and whose input 7 is that node's input.
inline constexpr const char* kInputQuantizerAttr = "input_quantizer";
// Node attribute (1) of a QatFakeQuant node whose readers all are linked
// convs: its output then needs no autograd history of its own.
inline constexpr const char* kReadersRecomputeAttr = "readers_recompute";
// Index of the linked conv's extra input: the quantizer's float input.
inline constexpr size_t kFloatInputIndex = 7;

// Convolution attributes that do not depend on the input's size: explicit
// symmetric padding (or VALID), as at::convolution takes them.
struct ConvGeometry {
  std::vector<int64_t> strides, padding, dilations;
  int64_t groups = 1;
};
// nullopt when the node pads by auto_pad SAME_* or asymmetrically (then
// the conv kernel pads the input itself, and no link is made).
std::optional<ConvGeometry> static_conv_geometry(const Node& node, const std::vector<int64_t>& kernel);

// Whether a linked conv recomputes its input in this run: training with
// gradients on, and the quantizer fake-quantizes (otherwise q is x).
bool recomputes_input(const OpContext& ctx, const Quantizer& quantizer);

// conv(q, weight) where q = quantizer(x) was already computed (its value
// is used, its autograd history is not). Gradients reach x, weight and the
// quantizer's applied scale and zero point as through the unlinked pair.
torch::Tensor quantized_input_conv(const torch::Tensor& x, const torch::Tensor& q, const torch::Tensor& weight,
                                   const Quantizer& quantizer, const ConvGeometry& geometry);

// Links every QatConvBn reading an activation quantizer's output (see
// above). Run once the quantizer nodes are placed.
void link_quantized_conv_inputs(GraphModule& model);

}  // namespace qat
