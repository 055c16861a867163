#include "sim/recomputing_conv.h"

#include "sim/absorb_activations.h"
#include "sim/batchnorm.h"
#include "sim/saved_spec.h"

#include <ATen/ops/convolution_backward.h>
#include <torch/autograd.h>

#include <algorithm>
#include <array>
#include <tuple>

namespace qat {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// What backward needs to recompute one operand: its quantizer's spec and
// absorbed activation (the quantizer learns its encoding: recomputes()).
// Stored under a per-operand key prefix.
void save_operand(AutogradContext* ctx, const std::string& key, const ConvOperand& operand) {
  ctx->saved_data[key + "quantized"] = operand.quantizer != nullptr;
  if (operand.quantizer) save_spec(ctx, key, operand.quantizer->spec(), operand.activation);
}

void save_geometry(AutogradContext* ctx, const ConvGeometry& g) {
  ctx->saved_data["strides"] = g.strides;
  ctx->saved_data["padding"] = g.padding;
  ctx->saved_data["dilations"] = g.dilations;
  ctx->saved_data["groups"] = g.groups;
}

ConvGeometry saved_geometry(AutogradContext* ctx) {
  return {ctx->saved_data["strides"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
          ctx->saved_data["dilations"].toIntVector(), ctx->saved_data["groups"].toInt()};
}

Tensor convolve(const Tensor& input, const Tensor& weight, const Tensor& bias, const ConvGeometry& g) {
  return at::convolution(input, weight, bias, g.strides, g.padding, g.dilations, /*transposed=*/false,
                         std::vector<int64_t>(g.strides.size(), 0), g.groups);
}

// One operand rebuilt in backward: the value the conv saw, the leaves
// (source, scale, zero point, and a divided weight's divisor; each
// requiring grad when its input does, undefined where the operand has
// none) it was recomputed from, and whether the conv must give a gradient
// for it. No leaves: a plain operand, whose gradient is the conv's own.
struct Rebuilt {
  Tensor value;
  std::vector<Tensor> leaves;
  bool wanted = false;
};

Tensor leaf_of(const Tensor& t, bool wanted) { return t.detach().requires_grad_(wanted && t.requires_grad()); }

bool any_wanted(const std::vector<Tensor>& leaves) {
  return std::any_of(leaves.begin(), leaves.end(), [](const Tensor& t) { return t.defined() && t.requires_grad(); });
}

Rebuilt rebuild(AutogradContext* ctx, const std::string& key, const Tensor& source, const Tensor& scale,
                const Tensor& zero_point) {
  if (!ctx->saved_data[key + "quantized"].toBool()) return {source, {}, source.requires_grad()};
  Rebuilt r;
  r.leaves = {leaf_of(source, true), leaf_of(scale, true), leaf_of(zero_point, true)};
  r.wanted = any_wanted(r.leaves);
  torch::AutoGradMode enable_grad(true);
  r.value = apply_fake_quant(r.leaves[0], r.leaves[1], r.leaves[2], saved_spec(ctx, key), /*learnable=*/true,
                             saved_activation(ctx, key));
  return r;
}

// The weight operand divided per output channel by `divisor`, which joins
// its leaves as the fourth (a plain weight's source becomes its first).
Rebuilt rebuild_divided_weight(AutogradContext* ctx, const Tensor& source, const Tensor& scale,
                               const Tensor& zero_point, const Tensor& divisor) {
  Rebuilt r = rebuild(ctx, "w.", source, scale, zero_point);
  if (r.leaves.empty()) {
    r.leaves = {leaf_of(source, true), Tensor(), Tensor()};
    r.value = r.leaves[0];
  }
  r.leaves.push_back(leaf_of(divisor, true));
  r.wanted = any_wanted(r.leaves);
  torch::AutoGradMode enable_grad(true);
  r.value = r.value / per_out_channel(r.leaves[3], r.value.dim());
  return r;
}

std::tuple<Tensor, Tensor, Tensor> convolution_backward(const Tensor& grad_out, const Tensor& input,
                                                        const Tensor& weight, const ConvGeometry& g,
                                                        std::array<bool, 3> wanted) {
  return at::convolution_backward(grad_out, input, weight, std::vector<int64_t>{weight.size(0)}, g.strides, g.padding,
                                  g.dilations, /*transposed=*/false, std::vector<int64_t>(g.strides.size(), 0),
                                  g.groups, wanted);
}

// The input operand in backward: the value the conv saw, and the gradients
// of the source, scale and zero point (undefined where not wanted). A
// quantized input's value is recomputed and differentiated in one pass
// over the source (fake_quantize_learnable_pass), which is why its gradient
// is taken from the conv first: that needs only the weight (and the
// input's shape, which the source has).
struct InputBackward {
  Tensor value, source, scale, zero_point;
};

InputBackward input_backward(AutogradContext* ctx, const std::vector<Tensor>& saved, const Tensor& grad_out,
                             const Tensor& weight, const ConvGeometry& g) {
  const Tensor& source = saved[0];
  const bool quantized = ctx->saved_data["x.quantized"].toBool();
  InputBackward r{source, {}, {}, {}};
  if (!quantized && !source.requires_grad()) return r;
  const Tensor grad_value = std::get<0>(convolution_backward(grad_out, source, weight, g, {true, false, false}));
  if (!quantized) {
    r.source = grad_value;
    return r;
  }
  const QuantSpec spec = saved_spec(ctx, "x.");
  const LearnableFakeQuantPass pass = fake_quantize_learnable_pass(
      source, grad_value, saved[1], saved[2], spec, lsq_grad_factor(source, spec), saved_activation(ctx, "x."));
  r.value = pass.value;
  if (source.requires_grad()) r.source = pass.grad_x;
  if (saved[1].requires_grad()) r.scale = pass.grad_scale;
  if (saved[2].requires_grad()) r.zero_point = pass.grad_zero_point;
  return r;
}

// Inputs: per operand (input, weight) its source, quantized value, scale and
// zero point (the last three unused for a plain operand), then the weight's
// divisor per output channel and the bias (both empty: none). Saves the
// sources, scales, zero points and divisor; backward recomputes the
// quantized (and divided) values.
struct RecomputingConv : torch::autograd::Function<RecomputingConv> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& xq, const Tensor& x_scale,
                        const Tensor& x_zero_point, const Tensor& w, const Tensor& wq, const Tensor& w_scale,
                        const Tensor& w_zero_point, const Tensor& divisor, const Tensor& bias,
                        const ConvOperand& input, const ConvOperand& weight, const ConvGeometry& geometry) {
    ctx->save_for_backward({x, x_scale, x_zero_point, w, w_scale, w_zero_point, divisor});
    save_operand(ctx, "x.", input);
    save_operand(ctx, "w.", weight);
    save_geometry(ctx, geometry);
    const bool divided = divisor.numel() != 0;
    ctx->saved_data["divided"] = divided;
    ctx->saved_data["bias_wanted"] = divided && bias.requires_grad();
    if (!divided) return convolve(xq, wq, Tensor(), geometry);
    return convolve(xq, wq / per_out_channel(divisor, wq.dim()), bias, geometry);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Rebuilt w = ctx->saved_data["divided"].toBool()
                          ? rebuild_divided_weight(ctx, saved[3], saved[4], saved[5], saved[6])
                          : rebuild(ctx, "w.", saved[3], saved[4], saved[5]);
    const ConvGeometry g = saved_geometry(ctx);
    const InputBackward x = input_backward(ctx, saved, grads[0], w.value.detach(), g);
    const bool bias_wanted = ctx->saved_data["bias_wanted"].toBool();
    Tensor grad_w, grad_bias;
    if (w.wanted || bias_wanted) {
      std::tie(std::ignore, grad_w, grad_bias) =
          convolution_backward(grads[0], x.value.detach(), w.value.detach(), g, {false, w.wanted, bias_wanted});
    }
    // Through the recomputed weight quantizer (and division).
    std::vector<Tensor> gw(4);
    if (w.leaves.empty()) {
      gw[0] = grad_w;
    } else if (grad_w.defined()) {
      std::vector<Tensor> wanted;
      for (const auto& leaf : w.leaves) {
        if (leaf.defined() && leaf.requires_grad()) wanted.push_back(leaf);
      }
      const auto got = torch::autograd::grad({w.value}, wanted, {grad_w}, /*retain_graph=*/false,
                                             /*create_graph=*/false, /*allow_unused=*/true);
      size_t next = 0;
      for (size_t i = 0; i < w.leaves.size(); ++i) {
        if (w.leaves[i].defined() && w.leaves[i].requires_grad()) gw[i] = got[next++];
      }
    }
    // One gradient per forward argument: none for the quantized values,
    // whose history the caller dropped, nor for the non-tensor arguments.
    return {x.source, Tensor(), x.scale, x.zero_point, gw[0], Tensor(), gw[1], gw[2], gw[3], grad_bias,
            Tensor(), Tensor(), Tensor()};
  }
};

bool is_linkable_reader(const Node& node, const std::string& value) {
  if (node.op_type != kConvBnOp || node.inputs.empty() || node.inputs[0] != value) return false;
  return std::count(node.inputs.begin(), node.inputs.end(), value) == 1;
}

std::optional<ConvGeometry> geometry_of(const GraphModule& m, const Node& conv) {
  const Tensor weight = m.initializer(conv.inputs.at(1));
  return static_conv_geometry(conv, weight.sizes().slice(2).vec());
}

}  // namespace

std::optional<ConvGeometry> static_conv_geometry(const Node& node, const std::vector<int64_t>& kernel) {
  const size_t rank = kernel.size();
  const std::string auto_pad = node.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID") return std::nullopt;
  ConvGeometry g;
  g.strides = node.has_attr("strides") ? node.attr_ints("strides") : std::vector<int64_t>(rank, 1);
  g.dilations = node.has_attr("dilations") ? node.attr_ints("dilations") : std::vector<int64_t>(rank, 1);
  g.groups = node.attr_int("group", 1);
  g.padding.assign(rank, 0);
  if (g.strides.size() != rank || g.dilations.size() != rank) return std::nullopt;
  if (auto_pad == "NOTSET" && node.has_attr("pads")) {
    const auto pads = node.attr_ints("pads");
    if (pads.size() != 2 * rank) return std::nullopt;
    for (size_t i = 0; i < rank; ++i) {
      // Asymmetric or wider than the window: left to the Conv kernel, which
      // pads by hand or rejects the attribute.
      const int64_t extent = (kernel[i] - 1) * g.dilations[i] + 1;
      if (pads[i] != pads[i + rank] || pads[i] < 0 || pads[i] > extent) return std::nullopt;
      g.padding[i] = pads[i];
    }
  }
  return g;
}

bool recomputes(const OpContext& ctx, const Quantizer& quantizer) {
  return ctx.training && torch::GradMode::is_enabled() && quantizer.quantizing() && quantizer.trainable();
}

Tensor recomputing_conv(const ConvOperand& input, const ConvOperand& weight, const ConvGeometry& geometry,
                        const Tensor& weight_divisor, const Tensor& bias) {
  // Placeholders for absent tensors: LibTorch 1.13's custom functions
  // reject undefined tensor arguments.
  const auto or_empty = [&](const Tensor& t) { return t.defined() ? t : weight.source.new_empty({0}); };
  auto parameters = [&](const ConvOperand& operand) -> std::pair<Tensor, Tensor> {
    if (!operand.quantizer) return {or_empty(Tensor()), or_empty(Tensor())};
    return {operand.quantizer->applied_scale(), operand.quantizer->applied_zero_point()};
  };
  const auto [x_scale, x_zero_point] = parameters(input);
  const auto [w_scale, w_zero_point] = parameters(weight);
  return RecomputingConv::apply(input.source, input.value.detach(), x_scale, x_zero_point, weight.source,
                                weight.value.detach(), w_scale, w_zero_point, or_empty(weight_divisor),
                                or_empty(bias), input, weight, geometry);
}

void link_quantized_conv_inputs(GraphModule& m) {
  Graph& g = m.mutable_graph();
  for (Node& fq : g.nodes) {
    if (fq.op_type != kFakeQuantOp || m.has_initializer(fq.inputs.at(0))) continue;
    const std::string& q = fq.outputs.at(0);
    bool all_linked = std::find(g.outputs.begin(), g.outputs.end(), q) == g.outputs.end();
    for (size_t reader : g.consumers(q)) {
      Node& conv = g.nodes[reader];
      if (!is_linkable_reader(conv, q) || !geometry_of(m, conv)) {
        all_linked = false;
        continue;
      }
      conv.inputs.resize(kFloatInputIndex + 1);
      conv.inputs[kFloatInputIndex] = fq.inputs[0];
      conv.attributes[kInputQuantizerAttr] = fq.attr_string("quantizer");
      copy_activation_attributes(fq, conv, kInputPrefix);
    }
    if (all_linked) fq.attributes[kReadersRecomputeAttr] = int64_t{1};
  }
}

void unlink_quantized_conv_inputs(GraphModule& m) {
  for (Node& node : m.mutable_graph().nodes) {
    if (node.attributes.erase(kInputQuantizerAttr)) node.inputs.resize(kFloatInputIndex);
    node.attributes.erase(kReadersRecomputeAttr);
    for (const char* key : {kActivationAttr, kActivationBoundsAttr}) node.attributes.erase(kInputPrefix + std::string(key));
  }
}

}  // namespace qat
