// Internal: the quantizer of a ReLU's or ReLU6's output absorbs the
// activation.
//
// In x -> Relu -> c -> QatFakeQuant -> c.quantized, the Relu and the
// quantizer each cost a pass over the activation each way, and each keeps
// a mask for backward. Where c has no other reader, the pass below removes
// the Relu (or Clip with constant bounds) and has the quantizer node read x
// and apply the activation inside its own kernel (FusedActivation): one
// pass and one mask each way, the same values and gradients
// (docs/quantsim.md, "Absorbed activations"). This is also how integer
// kernels run it: ReLU6 becomes the clamp of the requantized output.
//
// The node keeps what export needs to write the activation back in front
// of QuantizeLinear: its op type, name, inputs and output (c, the
// quantized tensor's name in encodings files).
#pragma once

#include "qat/fake_quant.h"
#include "qat/graph.h"

#include <map>
#include <string>

namespace qat {

// QatFakeQuant attributes of an absorbed activation.
inline constexpr const char* kActivationAttr = "activation";                // "Relu" or "Clip"
inline constexpr const char* kActivationBoundsAttr = "activation_bounds";   // Clip: {lo, hi}
inline constexpr const char* kActivationNodeAttr = "activation_node";       // its node name
inline constexpr const char* kActivationInputsAttr = "activation_inputs";   // its inputs, x first
inline constexpr const char* kActivationOutputAttr = "activation_output";   // c
// The same activation on a QatConvBn that recomputes its input quantizer
// (recomputing_conv.h): "input_activation", "input_activation_bounds".
inline constexpr const char* kInputPrefix = "input_";

// Absorbs every ReLU or constant-bound Clip whose output is read only by
// one activation quantizer (and is not a graph output). `dtypes` gives
// the activations' output types (float or double; Clip bounds must have
// the same type, as the Clip kernel requires for its constant-bound path).
void absorb_activations(GraphModule& model, const std::map<std::string, torch::ScalarType>& dtypes);

// The activation `node` applies, from attributes prefix + kActivationAttr
// and prefix + kActivationBoundsAttr (none when absent).
FusedActivation fused_activation(const Node& node, const std::string& prefix = "");

// Copies `from`'s activation attributes onto `to`, under `prefix`.
void copy_activation_attributes(const Node& from, Node& to, const std::string& prefix);

}  // namespace qat
