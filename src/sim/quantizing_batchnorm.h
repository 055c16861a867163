// Internal: the training-time BatchNorm of a QatConvBn fused with the
// quantizer of its output, keeping the BatchNorm's input for backward
// instead of the quantizer's.
//
// In QatConvBn -> b -> QatFakeQuant -> Add (a residual block's last conv),
// a learned encoding's backward needs b itself: the scale gradient is
// round(b/s) - b/s where b lies inside the grid. So the quantizer keeps b
// as float while the BatchNorm keeps its own input and the Add keeps
// nothing; a frozen encoding would keep a byte mask. On ResNet-18 at
// batch 64 those eleven chains made range learning's peak 43 MiB higher.
// Linked, the QatConvBn applies the quantizer itself and recomputes b in
// backward from the BatchNorm's input and saved batch statistics with
// ATen's own transform (the same floats); the QatFakeQuant node passes its
// input on (docs/quantsim.md, "Recomputed BatchNorm outputs").
#pragma once

#include "qat/graph.h"
#include "qat/quantizer.h"

namespace qat {

// Node attribute of a linked QatConvBn: the attachment name of the
// quantizer it applies to its output; that quantizer's absorbed
// activation, if any, under kOutputPrefix (absorb_activations.h).
inline constexpr const char* kOutputQuantizerAttr = "output_quantizer";
inline constexpr const char* kOutputPrefix = "output_";
// Node attribute (1) of the QatFakeQuant node whose producer applies its
// quantizer while recomputes() holds: the node then passes its input on.
inline constexpr const char* kProducerQuantizesAttr = "producer_quantizes";

// BatchNormalization's operands: ATen's convention (momentum weighs the
// new statistic); `training` normalises with the batch's statistics and
// updates the running ones in place.
struct BatchNormArgs {
  torch::Tensor gamma, beta, running_mean, running_var;
  bool training = true;
  double momentum = 0.1, eps = 1e-5;
};

// quantizer(activation(batch_norm(x))) with the quantizer learning its
// encoding (recomputes()): the values and gradients of the two ops in a
// row, keeping x (which the BatchNorm keeps anyway) instead of b.
torch::Tensor quantizing_batch_norm(const torch::Tensor& x, const BatchNormArgs& bn, const Quantizer& quantizer,
                                    const FusedActivation& activation);

// Links each QatConvBn whose output only an activation quantizer reads to
// that quantizer, unless a linked conv reads the quantizer's output
// (recomputing_conv.h): that conv keeps b anyway. QuantSim links after
// link_quantized_conv_inputs while activation encodings learn.
void link_quantized_batchnorm_outputs(GraphModule& model);
void unlink_quantized_batchnorm_outputs(GraphModule& model);

}  // namespace qat
