#include "qat/bn_reestimation.h"

#include "sim/batchnorm.h"

#include <optional>
#include <stdexcept>

namespace qat {
namespace {

using torch::Tensor;

// A QatConvBn node's inputs: x, W, B, gamma, beta, running mean, running var.
constexpr size_t kGamma = 3, kMean = 5, kVar = 6;

Tensor fold_factor(const GraphModule& m, const Node& node) {
  const Tensor var = m.initializer(node.inputs[kVar]);
  return m.initializer(node.inputs[kGamma]) / torch::sqrt(var + node.attr_float("epsilon", 1e-5));
}

// A layer's state before re-estimation: BN attributes to restore, and the
// fold factor and weight encoding the integer weights were trained with.
struct Saved {
  std::string name;
  AttributeValue momentum, frozen;
  Tensor factor;
  std::optional<Encoding> weight_encoding;  // per-channel weight quantizers only
};

std::optional<Encoding> per_channel_weight_encoding(QuantSim& sim, const Node& node) {
  if (!node.has_attr("weight_quantizer")) return std::nullopt;
  const Quantizer& q = sim.quantizer(node.attr_string("weight_quantizer"));
  if (!q.has_encoding() || !q.spec().channel_axis) return std::nullopt;
  return q.encoding();
}

// Scales the weight encoding with the fold factor, so that the folded
// weight keeps its trained integer codes. Done before every batch: the
// statistics must be those of the trained quantized weights, not of
// weights requantized with half-estimated statistics.
void follow_fold(QuantSim& sim, const Node& node, const Saved& saved) {
  if (!saved.weight_encoding) return;
  Encoding enc = *saved.weight_encoding;
  enc.scale = enc.scale * (fold_factor(sim.model(), node) / saved.factor).abs();
  sim.quantizer(node.attr_string("weight_quantizer")).set_encoding(enc);
}

// Batch b of the average gets weight 1 / (b + 1): ONNX momentum b / (b + 1)
// (the weight of the old statistic), so the running value is the plain mean.
void prepare_batch(QuantSim& sim, const std::vector<Saved>& layers, int64_t b) {
  Graph& g = sim.model().mutable_graph();
  for (const auto& layer : layers) {
    Node& node = g.nodes[g.node_index(layer.name)];
    node.attributes["momentum"] = static_cast<double>(b) / static_cast<double>(b + 1);
    node.attributes["frozen"] = int64_t{0};
    follow_fold(sim, node, layer);
  }
}

}  // namespace

std::vector<std::string> reestimate_batchnorm(QuantSim& sim, const std::vector<Tensor>& batches) {
  if (batches.empty()) throw std::invalid_argument("BN re-estimation needs at least one batch");
  GraphModule& m = sim.model();
  torch::NoGradGuard no_grad;
  std::vector<Saved> layers;
  for (const Node& node : m.graph().nodes) {
    if (node.op_type != kConvBnOp) continue;
    layers.push_back({node.name, node.attributes.at("momentum"), node.attributes.at("frozen"), fold_factor(m, node),
                      per_channel_weight_encoding(sim, node)});
    m.initializer(node.inputs[kMean]).zero_();
    m.initializer(node.inputs[kVar]).fill_(1.0);
  }
  const bool was_training = m.is_training();
  m.train();
  for (size_t b = 0; b < batches.size(); ++b) {
    prepare_batch(sim, layers, static_cast<int64_t>(b));
    m.forward(batches[b]);
  }
  m.train(was_training);
  std::vector<std::string> names;
  Graph& g = m.mutable_graph();
  for (const auto& layer : layers) {
    Node& node = g.nodes[g.node_index(layer.name)];
    node.attributes["momentum"] = layer.momentum;
    node.attributes["frozen"] = layer.frozen;
    follow_fold(sim, node, layer);
    names.push_back(layer.name);
  }
  return names;
}

}  // namespace qat
