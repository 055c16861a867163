// Test helpers for the sim: calibrated zoo sims, one training step's
// gradients, and a sim's graph taken back to what an earlier pass saw, so
// that tests can compare a pass's result with the graph without it.
#pragma once

#include "qat/graph.h"
#include "qat/quantsim.h"
#include "qat/zoo.h"
#include "sim/absorb_activations.h"
#include "sim/quantizing_batchnorm.h"
#include "sim/recomputing_conv.h"
#include "sim_options.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>

namespace qat {

inline std::unique_ptr<QuantSim> zoo_sim(const std::string& model, int bits) {
  ZooOptions o;
  o.seed = 3;
  return std::make_unique<QuantSim>(make_model(model, o), sim_options(bits, bits), std::vector<int64_t>{1, 1, 28, 28});
}

inline std::unique_ptr<QuantSim> calibrated_sim(const std::string& model, int bits, const torch::Tensor& batch) {
  auto sim = zoo_sim(model, bits);
  sim->compute_encodings([&](GraphModule& m) { m.forward(batch); });
  return sim;
}

// Logits and every gradient of one training step's loss.
inline std::map<std::string, torch::Tensor> step_gradients(QuantSim& sim, const torch::Tensor& batch,
                                                           const torch::Tensor& loss_weights) {
  GraphModule& m = sim.model();
  m.train();
  for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
  const torch::Tensor logits = m.forward(batch);
  (logits * loss_weights).sum().backward();
  std::map<std::string, torch::Tensor> result{{"logits", logits.detach()}};
  for (const auto& item : m.named_parameters()) {
    if (item.value().grad().defined()) result[item.key()] = item.value().grad().clone();
  }
  return result;
}

inline bool is_encoding(const std::string& parameter) {
  return parameter.find(".scale") != std::string::npos || parameter.find(".zero_point") != std::string::npos;
}

// Where a linked conv adds its part of an encoding's gradient separately
// from the quantizer's other readers, the two sums round differently, and
// they cancel heavily (a zero point's terms are -+s per clipped element):
// the tolerance for encoding `name` is rounding of the largest gradient of
// its quantizer's scale and zero point in `grads`.
inline double encoding_tolerance(const std::map<std::string, torch::Tensor>& grads, const std::string& name) {
  const std::string quantizer = name.substr(0, name.rfind('.'));
  double largest = 0.0;
  for (const char* part : {".scale", ".zero_point"}) {
    const auto it = grads.find(quantizer + part);
    if (it != grads.end()) largest = std::max(largest, it->second.abs().max().item<double>());
  }
  return 1e-4 * largest + 1e-6;
}

// The graph as it was before absorb_activations: each absorbed Relu or
// Clip back in front of its quantizer (and unlinked: linked convs would
// read the activation's input). set_range_learning(_, true) links again:
// unlink after it too.
inline void restore_activations(GraphModule& m) {
  unlink_quantized_conv_inputs(m);
  unlink_quantized_batchnorm_outputs(m);
  auto& nodes = m.mutable_graph().nodes;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!nodes[i].has_attr(kActivationAttr)) continue;
    Node& fq = nodes[i];
    Node activation;
    activation.name = fq.attr_string(kActivationNodeAttr);
    activation.op_type = fq.attr_string(kActivationAttr);
    activation.inputs = std::get<std::vector<std::string>>(fq.attributes.at(kActivationInputsAttr));
    activation.outputs = {fq.attr_string(kActivationOutputAttr)};
    fq.inputs[0] = activation.outputs[0];
    for (const char* key : {kActivationAttr, kActivationBoundsAttr, kActivationNodeAttr, kActivationInputsAttr,
                            kActivationOutputAttr}) {
      fq.attributes.erase(key);
    }
    nodes.insert(nodes.begin() + static_cast<std::ptrdiff_t>(i), std::move(activation));
    ++i;
  }
}

}  // namespace qat
