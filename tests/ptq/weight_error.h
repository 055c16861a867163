// Shared measurements of the weight passes' tests: per-layer output error
// of the quantized weights, and the logits SQNR with only weights quantized.
#pragma once

#include "ptq/weighted_layer.h"

#include <cmath>
#include <vector>

namespace qat::testing {

using torch::Tensor;

// Squared error of each weighted layer's output with `sim`'s quantized
// weights against `reference`'s FP32 layer (a sim of the same model before
// any pass changed its weights), both on the FP32 model's input to the
// layer (activations unquantized).
inline std::vector<double> layer_errors(QuantSim& sim, QuantSim& reference, const std::vector<Tensor>& data) {
  torch::NoGradGuard no_grad;
  const auto layers = ptq::weighted_layers(sim);
  const auto fp32 = ptq::weighted_layers(reference);
  sim.set_quantization_enabled(false);
  reference.set_quantization_enabled(false);
  std::vector<double> errors;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& layer = layers[i];
    layer.quantizer().set_enabled(true);
    const Tensor qw = layer.quantizer().forward(layer.weight());
    layer.quantizer().set_enabled(false);
    double error = 0.0;
    for (const auto& x : ptq::layer_inputs(reference, fp32.at(i), data)) {
      error += (layer.output(x, qw) - fp32[i].output(x, fp32[i].weight())).pow(2).sum().item<double>();
    }
    errors.push_back(error);
  }
  sim.set_quantization_enabled(true);
  reference.set_quantization_enabled(true);
  return errors;
}

// SQNR of the logits with only `sim`'s weights quantized, against the
// FP32 logits of `reference`.
inline double weights_only_sqnr(QuantSim& sim, QuantSim& reference, const Tensor& batch) {
  torch::NoGradGuard no_grad;
  sim.model().eval();
  reference.model().eval();
  reference.set_quantization_enabled(false);
  const Tensor ref = reference.model().forward(batch);
  reference.set_quantization_enabled(true);
  for (const auto& info : sim.quantizers()) sim.quantizer(info.name).set_enabled(info.is_param);
  const Tensor out = sim.model().forward(batch);
  sim.set_quantization_enabled(true);
  return 10.0 * std::log10(ref.pow(2).sum().item<double>() / (ref - out).pow(2).sum().item<double>());
}

}  // namespace qat::testing
