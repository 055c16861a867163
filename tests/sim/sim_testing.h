// Test helpers for the sim: calibrated zoo sims, one training step's
// gradients, and a sim's graph taken back to what an earlier pass saw, so
// that tests can compare a pass's result with the graph without it.
#pragma once

#include "qat/graph.h"
#include "qat/quantsim.h"
#include "qat/zoo.h"
#include "sim/absorb_activations.h"
#include "sim/recomputing_conv.h"
#include "sim_options.h"

#include <map>
#include <memory>
#include <string>

namespace qat {

inline std::unique_ptr<QuantSim> calibrated_sim(const std::string& model, int bits, const torch::Tensor& batch) {
  ZooOptions o;
  o.seed = 3;
  auto sim = std::make_unique<QuantSim>(make_model(model, o), sim_options(bits, bits),
                                        std::vector<int64_t>{1, 1, 28, 28});
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

// The graph as it was before link_quantized_conv_inputs.
inline void unlink(GraphModule& m) {
  for (Node& node : m.mutable_graph().nodes) {
    if (node.attributes.erase(kInputQuantizerAttr)) node.inputs.resize(kFloatInputIndex);
    node.attributes.erase(kReadersRecomputeAttr);
    for (const char* key : {kActivationAttr, kActivationBoundsAttr}) node.attributes.erase(kInputPrefix + std::string(key));
  }
}

// The graph as it was before absorb_activations: each absorbed Relu or
// Clip back in front of its quantizer (implies unlink: linked convs would
// read the activation's input).
inline void restore_activations(GraphModule& m) {
  unlink(m);
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
