// Internal: the training-time convolution of QatConvBn, which keeps its
// operands' float sources for backward instead of their quantized copies.
//
// In x -> QatFakeQuant -> q -> QatConvBn, autograd would keep q for the
// conv's weight gradient (and the quantizer a mask or x for its own
// backward), while x itself is usually kept anyway (by the ReLU that made
// it, or by the LSQ backward). Likewise the conv would keep the quantized
// folded weight while LSQ keeps the folded weight. This conv keeps only
// the sources and recomputes the quantized values in backward, so QAT
// holds about as many activation tensors as FP32 training
// (docs/quantsim.md, "Recomputed conv operands").
#pragma once

#include "qat/graph.h"
#include "qat/quantizer.h"

#include <optional>
#include <vector>

namespace qat {

// Node attribute of a QatConvBn whose input 0 is the output of this
// quantizer's QatFakeQuant node and whose input 7 is that node's input
// (with the node's absorbed activation, if any, under kInputPrefix:
// absorb_activations.h).
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
// nullopt when the node pads by auto_pad SAME_* or asymmetrically: then
// no link is made and training runs the plain Conv kernel, which pads the
// input itself, recomputing nothing.
std::optional<ConvGeometry> static_conv_geometry(const Node& node, const std::vector<int64_t>& kernel);

// Whether the conv recomputes this quantizer's output in this run:
// training with gradients on, and the quantizer fake-quantizes (otherwise
// its output is its input) with a learned encoding. A frozen encoding's
// backward needs only a byte mask: keeping the quantized value and that
// mask costs about what keeping the source does (the ReLU's mask went
// with the ReLU, absorb_activations.h), and saves the recompute.
bool recomputes(const OpContext& ctx, const Quantizer& quantizer);

// One operand of the conv: `value` = quantizer(activation(source)), already
// computed (its value is used, its autograd history is not); or plain, with
// no quantizer and value == source.
struct ConvOperand {
  torch::Tensor source, value;
  const Quantizer* quantizer = nullptr;
  FusedActivation activation;
};

// conv(input.value, weight.value), with gradients reaching the sources and
// the quantizers' applied scales and zero points as through the quantizers'
// own ops. With a weight_divisor (per output channel):
// conv(input.value, weight.value / weight_divisor) + bias, gradients
// reaching the divisor and bias too.
torch::Tensor recomputing_conv(const ConvOperand& input, const ConvOperand& weight, const ConvGeometry& geometry,
                               const torch::Tensor& weight_divisor = {}, const torch::Tensor& bias = {});

// Links every QatConvBn reading an activation quantizer's output (see
// above), or takes the links out again. QuantSim links while activation
// encodings learn (set_range_learning): only then do convs recompute their
// input, and a link keeps the quantizer's input alive until the conv runs.
void link_quantized_conv_inputs(GraphModule& model);
void unlink_quantized_conv_inputs(GraphModule& model);

}  // namespace qat
