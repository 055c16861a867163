// BatchNorm handling for quantization: static folding into the preceding
// Conv, and the simulated-fold op (QatConvBn) used during QAT.
#include "sim/batchnorm.h"

#include "qat/quantizer.h"
#include "sim/absorb_activations.h"
#include "sim/quantizing_batchnorm.h"
#include "sim/recomputing_conv.h"
#include "sim/unfold.h"

#include <cmath>
#include <set>
#include <stdexcept>

namespace qat {
namespace {

using torch::Tensor;

// A Conv whose only reader is a BatchNormalization: the pair to fold.
struct ConvBnPair {
  size_t conv;
  size_t bn;
};

std::vector<ConvBnPair> conv_bn_pairs(const Graph& g) {
  std::vector<ConvBnPair> pairs;
  const std::set<std::string> outputs(g.outputs.begin(), g.outputs.end());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& bn = g.nodes[i];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() < 5 || bn.outputs.size() > 1) continue;
    const Node* conv = g.producer(bn.inputs[0]);
    if (!conv || conv->op_type != "Conv" || outputs.count(bn.inputs[0])) continue;
    if (g.consumers(bn.inputs[0]).size() != 1) continue;
    pairs.push_back({g.node_index(conv->name), i});
  }
  return pairs;
}

bool all_initializers(const GraphModule& m, const Node& node, std::initializer_list<size_t> inputs) {
  for (size_t i : inputs) {
    if (!node.has_input(i) || !m.has_initializer(node.inputs[i])) return false;
  }
  return true;
}

// gamma / sqrt(running_var + eps), per output channel.
Tensor fold_factor(const Tensor& gamma, const Tensor& var, double eps) { return gamma / torch::sqrt(var + eps); }

std::string unused_initializer_name(const GraphModule& m, const std::string& base) {
  std::string name = base;
  for (int i = 1; m.has_initializer(name); ++i) name = base + "_" + std::to_string(i);
  return name;
}

void remove_unused_initializers(GraphModule& m, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (m.has_initializer(name) && m.graph().consumers(name).empty()) m.remove_initializer(name);
  }
}

Tensor input_or_zeros(const std::vector<Tensor>& in, size_t i, int64_t channels, const Tensor& like) {
  return i < in.size() && in[i].defined() ? in[i] : torch::zeros({channels}, like.options());
}

Quantizer* quantizer_named(const OpContext& ctx, const char* attribute) {
  if (!ctx.node.has_attr(attribute)) return nullptr;
  return &static_cast<Quantizer&>(ctx.module.attachment(ctx.node.attr_string(attribute)));
}

// `quantized` = quantizer(activation(source)) as an operand of the
// training conv: recomputed from `source` in backward, or plain (no
// quantizer, or one that needs no recompute).
ConvOperand operand(const OpContext& ctx, const Tensor& source, const Tensor& quantized, Quantizer* quantizer,
                    const FusedActivation& activation = {}) {
  if (quantizer && recomputes(ctx, *quantizer)) return {source, quantized, quantizer, activation};
  return {quantized, quantized, nullptr, {}};
}

int64_t conv_output_numel(const Tensor& input, const Tensor& weight, const ConvGeometry& g) {
  int64_t numel = input.size(0) * weight.size(0);
  for (size_t i = 0; i < g.strides.size(); ++i) {
    const int64_t extent = g.dilations[i] * (weight.size(2 + i) - 1) + 1;
    numel *= (input.size(2 + i) + 2 * g.padding[i] - extent) / g.strides[i] + 1;
  }
  return numel;
}

// The training conv must hand BatchNorm the unfolded conv, conv(x, q(W f))
// / f + b. Dividing the output (unfold.cpp) is a pass over the activation
// each way; dividing the weight, conv(x, q(W f) / f) + b, the same
// function up to rounding, is a few passes over the weight, whose
// temporaries the caching allocator then keeps per weight shape (on
// ResNet-18 dividing every weight cost 73 MiB of peak RSS). So a layer
// divides its weight only where the weight is under a quarter of the
// output (docs/quantsim.md lists which layers of the zoo models do).
bool divides_weight(const Tensor& input, const Tensor& weight, const ConvGeometry& g) {
  return 4 * weight.numel() < conv_output_numel(input, weight, g);
}

// The training conv of a QatConvBn on its (linked) input and its folded
// weight, quantized by the weight quantizer; its output unfolded.
Tensor training_conv(const OpContext& ctx, const std::vector<Tensor>& in, const FoldedConvBn& fold,
                     const Tensor& bias, Quantizer* weight_quantizer) {
  const Tensor& folded = fold.weight;
  const auto geometry = static_conv_geometry(ctx.node, folded.sizes().slice(2).vec());
  if (!geometry) {
    const Tensor weight = weight_quantizer ? weight_quantizer->forward(folded) : folded;
    return unfold_conv_output((*find_op("Conv"))(ctx, {in[0], weight})[0], fold.factor, bias);
  }
  Quantizer* input_quantizer = quantizer_named(ctx, kInputQuantizerAttr);
  const ConvOperand input = operand(ctx, input_quantizer ? in.at(kFloatInputIndex) : in[0], in[0], input_quantizer,
                                    fused_activation(ctx.node, kInputPrefix));
  Tensor quantized_weight = folded;
  if (weight_quantizer) {
    // No history when backward recomputes it.
    torch::AutoGradMode grad_mode(torch::GradMode::is_enabled() && !recomputes(ctx, *weight_quantizer));
    quantized_weight = weight_quantizer->forward(folded);
  }
  const ConvOperand weight = operand(ctx, folded, quantized_weight, weight_quantizer);
  if (divides_weight(input.value, folded, *geometry)) {
    return recomputing_conv(input, weight, *geometry, fold.factor, bias);
  }
  return unfold_conv_output(recomputing_conv(input, weight, *geometry), fold.factor, bias);
}

// QatConvBn: inputs x, W, B (optional), gamma, beta, running mean, running
// var, and x's float input when linked (recomputing_conv.h); Conv's
// attributes plus epsilon, momentum (ONNX convention), weight_quantizer
// (attachment name, optional), input_quantizer and output_quantizer (when
// linked) and frozen (0/1).
std::vector<Tensor> conv_bn_kernel(const OpContext& ctx, const std::vector<Tensor>& in) {
  const Node& node = ctx.node;
  const double eps = node.attr_float("epsilon", 1e-5);
  const Tensor& w = in.at(1);
  const Tensor &gamma = in.at(3), &beta = in.at(4), &mean = in.at(5), &var = in.at(6);
  const Tensor bias = input_or_zeros(in, 2, w.size(0), w);
  const FoldedConvBn fold = fold_conv_bn(w, bias, gamma, beta, mean, var, eps);
  Quantizer* weight_quantizer = quantizer_named(ctx, "weight_quantizer");
  if (!ctx.training) {
    // Eval: exactly the statically folded conv, with quantized weights.
    const Tensor weight = weight_quantizer ? weight_quantizer->forward(fold.weight) : fold.weight;
    return (*find_op("Conv"))(ctx, {in[0], weight, fold.bias});
  }
  // Training (torch.ao's ConvBn): undo the fold so that BN sees the
  // unfolded conv's statistics, then normalise.
  const Tensor y = training_conv(ctx, in, fold, bias, weight_quantizer);
  const bool frozen = node.attr_int("frozen", 0) != 0;
  // ONNX momentum weighs the old statistic; torch's weighs the new one.
  const double momentum = 1.0 - node.attr_float("momentum", 0.9);
  Quantizer* output_quantizer = quantizer_named(ctx, kOutputQuantizerAttr);
  if (output_quantizer && recomputes(ctx, *output_quantizer)) {
    const BatchNormArgs bn{gamma, beta, mean, var, /*training=*/!frozen, momentum, eps};
    return {quantizing_batch_norm(y, bn, *output_quantizer, fused_activation(node, kOutputPrefix))};
  }
  Tensor running_mean = mean, running_var = var;
  return {torch::batch_norm(y, gamma, beta, running_mean, running_var, /*training=*/!frozen, momentum, eps,
                            /*cudnn_enabled=*/false)};
}

}  // namespace

Tensor per_out_channel(const Tensor& v, int64_t dim) {
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[0] = v.numel();
  return v.reshape(shape);
}

FoldedConvBn fold_conv_bn(const Tensor& weight, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& var, double eps) {
  const Tensor factor = fold_factor(gamma, var, eps);
  return {weight * per_out_channel(factor, weight.dim()), (bias - mean) * factor + beta, factor};
}

void register_conv_bn_op() { register_op(kConvBnOp, conv_bn_kernel); }

std::vector<std::string> fold_batchnorms(GraphModule& m) {
  std::vector<std::string> folded;
  std::vector<size_t> removed;
  std::vector<std::string> stale;
  Graph& g = m.mutable_graph();
  for (const ConvBnPair& pair : conv_bn_pairs(g)) {
    Node& conv = g.nodes[pair.conv];
    const Node& bn = g.nodes[pair.bn];
    if (!all_initializers(m, conv, {1}) || !all_initializers(m, bn, {1, 2, 3, 4})) continue;
    if (conv.has_input(2) && !m.has_initializer(conv.inputs[2])) continue;
    torch::NoGradGuard no_grad;
    const Tensor w = m.initializer(conv.inputs[1]);
    const Tensor gamma = m.initializer(bn.inputs[1]), beta = m.initializer(bn.inputs[2]);
    const Tensor mean = m.initializer(bn.inputs[3]), var = m.initializer(bn.inputs[4]);
    const Tensor factor = fold_factor(gamma, var, bn.attr_float("epsilon", 1e-5));
    const Tensor bias = conv.has_input(2) ? m.initializer(conv.inputs[2]) : torch::zeros_like(mean);
    m.set_initializer(conv.inputs[1], w * per_out_channel(factor, w.dim()));
    const Tensor new_bias = (bias - mean) * factor + beta;
    if (conv.has_input(2)) {
      m.set_initializer(conv.inputs[2], new_bias);
    } else {
      const std::string name = unused_initializer_name(m, conv.name + ".bias");
      m.add_initializer(name, new_bias, true);
      conv.inputs.resize(3);
      conv.inputs[2] = name;
    }
    // The conv takes over the BN's output name, so readers and encodings
    // that refer to it stay valid.
    conv.outputs[0] = bn.outputs[0];
    stale.insert(stale.end(), bn.inputs.begin() + 1, bn.inputs.end());
    folded.push_back(bn.name);
    removed.push_back(pair.bn);
  }
  std::sort(removed.rbegin(), removed.rend());
  for (size_t index : removed) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(index));
  remove_unused_initializers(m, stale);
  return folded;
}

std::vector<std::string> simulate_batchnorms(GraphModule& m) {
  register_conv_bn_op();
  std::vector<std::string> fused;
  std::vector<size_t> removed;
  Graph& g = m.mutable_graph();
  for (const ConvBnPair& pair : conv_bn_pairs(g)) {
    Node& conv = g.nodes[pair.conv];
    const Node& bn = g.nodes[pair.bn];
    if (!all_initializers(m, conv, {1}) || !all_initializers(m, bn, {1, 2, 3, 4})) continue;
    conv.op_type = kConvBnOp;
    const std::string bias = conv.has_input(2) ? conv.inputs[2] : "";
    conv.inputs = {conv.inputs[0], conv.inputs[1], bias, bn.inputs[1], bn.inputs[2], bn.inputs[3], bn.inputs[4]};
    conv.attributes["epsilon"] = bn.attr_float("epsilon", 1e-5);
    conv.attributes["momentum"] = bn.attr_float("momentum", 0.9);
    conv.attributes["frozen"] = int64_t{0};
    conv.outputs[0] = bn.outputs[0];
    fused.push_back(conv.name);
    removed.push_back(pair.bn);
  }
  std::sort(removed.rbegin(), removed.rend());
  for (size_t index : removed) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(index));
  return fused;
}

}  // namespace qat
