// Internal: a weighted layer of a sim (Conv, Gemm, or a simulated-fold
// QatConvBn) seen as y = f(x, W), where W is the tensor its weight
// quantizer receives (the BN-folded weight for QatConvBn). The weight
// search passes (Sequential MSE, AdaRound) try replacements for the
// quantized W without touching the graph.
#pragma once

#include "qat/quantsim.h"
#include "sim/batchnorm.h"

#include <string>
#include <vector>

namespace qat::ptq {

class WeightedLayer {
 public:
  WeightedLayer(QuantSim& sim, const QuantizerInfo& weight_quantizer);

  const std::string& name() const { return node_.name; }
  Quantizer& quantizer() const { return *quantizer_; }
  // The value the layer reads as its input x.
  const std::string& input_value() const { return node_.inputs.at(0); }
  // What the weight quantizer receives.
  torch::Tensor weight() const;
  // The layer's eval-mode output for input x with `quantized_weight` in
  // place of quantizer(weight()). Output channels are on axis 1.
  torch::Tensor output(const torch::Tensor& x, const torch::Tensor& quantized_weight) const;
  // Stores `weight` as the new weight() (for QatConvBn: divided by the
  // fold factor, so that folding gives it back).
  void set_weight(const torch::Tensor& weight) const;

 private:
  torch::Tensor value_of(const std::string& name) const;
  // QatConvBn only: the eval-mode fold of the stored weight.
  FoldedConvBn fold() const;

  GraphModule* model_;  // pointers, not references: layers are sorted
  Node node_;
  Quantizer* quantizer_;
  std::string weight_initializer_;
};

// The weighted layers of `sim` this pass supports, in graph order:
// Conv/QatConvBn/Gemm whose weight quantizer is per-tensor or per output
// channel. Other weighted ops (MatMul, ConvTranspose) are left alone.
std::vector<WeightedLayer> weighted_layers(QuantSim& sim);

// Inputs of `layer` for each of `batches`, from a run of the sim in eval
// mode without autograd, with the quantizers as they are now.
std::vector<torch::Tensor> layer_inputs(QuantSim& sim, const WeightedLayer& layer,
                                        const std::vector<torch::Tensor>& batches);

// Enables exactly the weight quantizers of `done`; every other quantizer
// (activations, the remaining weights) is off.
void enable_only_weights_of(QuantSim& sim, const std::vector<WeightedLayer>& layers, size_t done);

}  // namespace qat::ptq
