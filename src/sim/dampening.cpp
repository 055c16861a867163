#include "qat/dampening.h"

#include "sim/batchnorm.h"

#include <cmath>

namespace qat {
namespace {

using torch::Tensor;

// The tensor a weight quantizer sees, with autograd history to the
// parameters it is made from.
Tensor quantizer_input(GraphModule& m, const QuantizerInfo& info) {
  const Node& node = m.graph().nodes[m.graph().node_index(info.layer)];
  if (node.op_type != kConvBnOp || node.inputs.at(1) != info.tensor) return m.initializer(info.tensor);
  const auto input = [&](size_t i) { return m.initializer(node.inputs.at(i)); };
  const Tensor w = input(1);
  const Tensor bias = node.has_input(2) ? input(2) : torch::zeros({w.size(0)}, w.options());
  return fold_conv_bn(w, bias, input(3), input(4), input(5), input(6), node.attr_float("epsilon", 1e-5)).weight;
}

}  // namespace

Tensor oscillation_dampening_loss(QuantSim& sim) {
  Tensor loss = torch::zeros({});
  for (const auto& info : sim.quantizers()) {
    Quantizer& q = sim.quantizer(info.name);
    if (!info.is_param || !q.quantizing()) continue;
    const Tensor w = quantizer_input(sim.model(), info);
    Tensor target, lo, hi;
    {
      torch::NoGradGuard no_grad;
      target = q.forward(w);
      const Encoding enc = q.encoding();
      const auto axis = enc.spec.channel_axis;
      const Tensor s = broadcast_along(enc.scale, w.dim(), axis);
      const Tensor z = broadcast_along(enc.zero_point.round(), w.dim(), axis);
      lo = (static_cast<double>(enc.spec.grid.qmin()) - z) * s;
      hi = (static_cast<double>(enc.spec.grid.qmax()) - z) * s;
    }
    loss = loss + (target - torch::min(torch::max(w, lo), hi)).pow(2).sum();
  }
  return loss;
}

double dampening_weight(double final_weight, double progress) {
  return final_weight * 0.5 * (1.0 - std::cos(M_PI * std::min(std::max(progress, 0.0), 1.0)));
}

}  // namespace qat
