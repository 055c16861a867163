#include "sim/quantized_input_conv.h"

#include "sim/batchnorm.h"

#include <ATen/ops/convolution_backward.h>
#include <torch/autograd.h>

#include <algorithm>

namespace qat {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr const char* kFakeQuantOp = "QatFakeQuant";

void save_spec(AutogradContext* ctx, const QuantSpec& spec, bool learnable) {
  ctx->saved_data["bitwidth"] = int64_t{spec.grid.bitwidth};
  ctx->saved_data["signed"] = spec.grid.is_signed;
  ctx->saved_data["narrow"] = spec.grid.narrow_range;
  ctx->saved_data["symmetric"] = spec.symmetric;
  ctx->saved_data["has_axis"] = spec.channel_axis.has_value();
  ctx->saved_data["axis"] = spec.channel_axis.value_or(0);
  ctx->saved_data["learnable"] = learnable;
}

QuantSpec saved_spec(AutogradContext* ctx) {
  QuantSpec spec;
  spec.grid.bitwidth = static_cast<int>(ctx->saved_data["bitwidth"].toInt());
  spec.grid.is_signed = ctx->saved_data["signed"].toBool();
  spec.grid.narrow_range = ctx->saved_data["narrow"].toBool();
  spec.symmetric = ctx->saved_data["symmetric"].toBool();
  if (ctx->saved_data["has_axis"].toBool()) spec.channel_axis = ctx->saved_data["axis"].toInt();
  return spec;
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

Tensor convolve(const Tensor& q, const Tensor& weight, const ConvGeometry& g) {
  return at::convolution(q, weight, Tensor(), g.strides, g.padding, g.dilations, /*transposed=*/false,
                         std::vector<int64_t>(g.strides.size(), 0), g.groups);
}

// Inputs x, q, weight, scale, zero point; backward recomputes q from x.
struct QuantizedInputConv : torch::autograd::Function<QuantizedInputConv> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& q, const Tensor& weight,
                        const Tensor& scale, const Tensor& zero_point, const QuantSpec& spec, bool learnable,
                        const ConvGeometry& geometry) {
    ctx->save_for_backward({x, weight, scale, zero_point});
    save_spec(ctx, spec, learnable);
    save_geometry(ctx, geometry);
    return convolve(q, weight, geometry);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &scale = saved[2], &zero_point = saved[3];
    const bool learnable = ctx->saved_data["learnable"].toBool();
    const ConvGeometry geometry = saved_geometry(ctx);
    // Leaves for the recomputation, each requiring grad when the matching
    // input does, so that the quantizer's own backward gives their grads.
    std::vector<Tensor> leaves{x.detach().requires_grad_(x.requires_grad()),
                               scale.detach().requires_grad_(learnable && scale.requires_grad()),
                               zero_point.detach().requires_grad_(learnable && zero_point.requires_grad())};
    Tensor q;
    {
      torch::AutoGradMode enable_grad(true);
      q = apply_fake_quant(leaves[0], leaves[1], leaves[2], saved_spec(ctx), learnable);
    }
    std::vector<Tensor> wanted;
    for (const auto& leaf : leaves) {
      if (leaf.requires_grad()) wanted.push_back(leaf);
    }
    auto [grad_q, grad_weight, grad_bias] = at::convolution_backward(
        grads[0], q.detach(), weight, c10::nullopt, geometry.strides, geometry.padding, geometry.dilations,
        /*transposed=*/false, std::vector<int64_t>(geometry.strides.size(), 0), geometry.groups,
        {!wanted.empty(), weight.requires_grad(), false});
    std::vector<Tensor> leaf_grads(leaves.size());
    if (!wanted.empty()) {
      const auto got = torch::autograd::grad({q}, wanted, {grad_q}, /*retain_graph=*/false,
                                             /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t i = 0, k = 0; i < leaves.size(); ++i) {
        if (leaves[i].requires_grad()) leaf_grads[i] = got[k++];
      }
    }
    // One gradient per forward argument; none for q, whose history the
    // caller dropped, nor for the non-tensor arguments.
    return {leaf_grads[0], Tensor(), grad_weight, leaf_grads[1], leaf_grads[2], Tensor(), Tensor(), Tensor()};
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

bool recomputes_input(const OpContext& ctx, const Quantizer& quantizer) {
  return ctx.training && torch::GradMode::is_enabled() && quantizer.quantizing();
}

Tensor quantized_input_conv(const Tensor& x, const Tensor& q, const Tensor& weight, const Quantizer& quantizer,
                            const ConvGeometry& geometry) {
  return QuantizedInputConv::apply(x, q.detach(), weight, quantizer.applied_scale(), quantizer.applied_zero_point(),
                                   quantizer.spec(), quantizer.trainable(), geometry);
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
    }
    if (all_linked) fq.attributes[kReadersRecomputeAttr] = int64_t{1};
  }
}

}  // namespace qat
