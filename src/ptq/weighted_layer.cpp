#include "ptq/weighted_layer.h"

#include <algorithm>
#include <stdexcept>

namespace qat::ptq {
namespace {

using torch::Tensor;

bool supported_op(const std::string& op) { return op == "Conv" || op == kConvBnOp || op == "Gemm"; }

const Node& node_named(const GraphModule& m, const std::string& name) {
  const Graph& g = m.graph();
  return g.nodes[g.node_index(name)];
}

// The initializer a weight input reads: directly (QatConvBn quantizes
// inside its kernel) or through the QatFakeQuant node in front of it.
std::string weight_initializer(const GraphModule& m, const Node& node) {
  const std::string& input = node.inputs.at(1);
  if (m.has_initializer(input)) return input;
  const Node* producer = m.graph().producer(input);
  if (producer && producer->op_type == kFakeQuantOp && m.has_initializer(producer->inputs.at(0))) {
    return producer->inputs[0];
  }
  return "";
}

}  // namespace

WeightedLayer::WeightedLayer(QuantSim& sim, const QuantizerInfo& info)
    : model_(&sim.model()),
      node_(node_named(sim.model(), info.layer)),
      quantizer_(&sim.quantizer(info.name)),
      weight_initializer_(weight_initializer(sim.model(), node_)) {
  if (!supported_op(node_.op_type) || weight_initializer_.empty()) {
    throw std::invalid_argument(node_.describe() + ": not a weighted layer the PTQ passes support");
  }
}

Tensor WeightedLayer::value_of(const std::string& name) const {
  if (name.empty()) return {};
  if (model_->has_initializer(name)) return model_->initializer(name);
  const Node* producer = model_->graph().producer(name);
  if (producer && producer->op_type == kFakeQuantOp && model_->has_initializer(producer->inputs.at(0))) {
    auto& q = static_cast<Quantizer&>(model_->attachment(producer->attr_string("quantizer")));
    return q.forward(model_->initializer(producer->inputs[0]));
  }
  throw std::invalid_argument(node_.describe() + ": input '" + name + "' is not a parameter");
}

FoldedConvBn WeightedLayer::fold() const {
  const auto& in = node_.inputs;
  const Tensor w = model_->initializer(weight_initializer_);
  const Tensor bias = node_.has_input(2) ? value_of(in[2]) : torch::zeros({w.size(0)}, w.options());
  return fold_conv_bn(w, bias, value_of(in[3]), value_of(in[4]), value_of(in[5]), value_of(in[6]),
                      node_.attr_float("epsilon", 1e-5));
}

Tensor WeightedLayer::weight() const {
  return node_.op_type == kConvBnOp ? fold().weight : model_->initializer(weight_initializer_);
}

Tensor WeightedLayer::output(const Tensor& x, const Tensor& quantized_weight) const {
  const OpContext ctx{node_, *model_, model_->graph().opset, /*training=*/false};
  std::vector<Tensor> inputs{x, quantized_weight};
  if (node_.op_type == kConvBnOp) {
    // The eval branch of QatConvBn: a Conv with the folded bias.
    inputs.push_back(fold().bias);
    return (*find_op("Conv"))(ctx, inputs).at(0);
  }
  for (size_t i = 2; i < node_.inputs.size(); ++i) inputs.push_back(value_of(node_.inputs[i]));
  return (*find_op(node_.op_type))(ctx, inputs).at(0);
}

void WeightedLayer::set_weight(const Tensor& weight) const {
  torch::NoGradGuard no_grad;
  Tensor stored = weight;
  if (node_.op_type == kConvBnOp) {
    // Folding multiplies output channel c by factor[c]; divide it out.
    std::vector<int64_t> shape(static_cast<size_t>(weight.dim()), 1);
    shape[0] = -1;
    stored = weight / fold().factor.reshape(shape);
  }
  model_->initializer(weight_initializer_).copy_(stored);
}

std::vector<WeightedLayer> weighted_layers(QuantSim& sim) {
  std::vector<WeightedLayer> layers;
  const GraphModule& m = sim.model();
  for (const auto& info : sim.quantizers()) {
    if (!info.is_param) continue;
    const Node& node = node_named(m, info.layer);
    if (!supported_op(node.op_type) || weight_initializer(m, node) != info.tensor) continue;
    layers.emplace_back(sim, info);
  }
  const Graph& g = m.graph();
  std::stable_sort(layers.begin(), layers.end(), [&](const auto& a, const auto& b) {
    return g.node_index(a.name()) < g.node_index(b.name());
  });
  return layers;
}

std::vector<Tensor> layer_inputs(QuantSim& sim, const WeightedLayer& layer, const std::vector<Tensor>& batches) {
  GraphModule& m = sim.model();
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  std::vector<Tensor> inputs;
  const bool is_graph_input = m.graph().producer(layer.input_value()) == nullptr;
  m.set_observer([&](const Node& node, const std::vector<Tensor>& outs) {
    for (size_t i = 0; i < outs.size(); ++i) {
      if (node.outputs[i] == layer.input_value()) inputs.push_back(outs[i]);
    }
  });
  for (const auto& batch : batches) {
    if (is_graph_input) inputs.push_back(batch);
    m.forward(batch);
  }
  m.set_observer(nullptr);
  m.train(was_training);
  return inputs;
}

void enable_only_weights_of(QuantSim& sim, const std::vector<WeightedLayer>& layers, size_t done) {
  sim.set_quantization_enabled(false);
  for (size_t i = 0; i < done; ++i) layers[i].quantizer().set_enabled(true);
}

}  // namespace qat::ptq
