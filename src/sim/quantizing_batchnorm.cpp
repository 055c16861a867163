#include "sim/quantizing_batchnorm.h"

#include "sim/absorb_activations.h"
#include "sim/batchnorm.h"
#include "sim/recomputing_conv.h"
#include "sim/saved_spec.h"

#include <ATen/ops/native_batch_norm.h>
#include <ATen/ops/native_batch_norm_backward.h>
#include <torch/autograd.h>

#include <algorithm>
#include <tuple>

namespace qat {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// b = batch_norm(x) as the forward computed it: per channel b = x * alpha
// + beta', alpha = invstd * gamma and beta' = beta - mean * alpha from the
// batch's mean and invstd. Training mode would compute those statistics
// again, a pass over x that costs 4x the transform (ATen 1.13, one
// thread). Eval mode applies the transform alone but derives invstd from a
// variance; with variance 1 - eps its invstd is exactly 1, so weight alpha
// and the batch mean give eval mode the very alpha and beta' of training,
// and the same transform. A probe checks that invstd is 1 here; where it
// is not, the statistics are recomputed after all.
Tensor recompute_output(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& batch_mean,
                        const Tensor& batch_invstd, double eps) {
  const int64_t channels = batch_invstd.numel();
  const Tensor unit_variance = torch::full({channels}, 1.0 - eps, x.options());
  const Tensor ones = torch::ones({channels}, x.options()), zeros = torch::zeros({channels}, x.options());
  const Tensor probe = std::get<0>(at::native_batch_norm(ones.reshape({1, channels, 1}), ones, zeros, zeros,
                                                         unit_variance, /*training=*/false, 0.0, eps));
  if (!torch::equal(probe.reshape({channels}), ones)) {
    return std::get<0>(at::native_batch_norm(x, gamma, beta, {}, {}, /*training=*/true, 0.0, eps));
  }
  return std::get<0>(at::native_batch_norm(x, batch_invstd * gamma, beta, batch_mean, unit_variance,
                                           /*training=*/false, 0.0, eps));
}

// Inputs: x, gamma, beta, the quantizer's applied scale and zero point,
// the running mean and variance. Saves x, gamma, beta, the encoding and
// the batch statistics (or, in eval mode, the running ones, which nothing
// changes before this backward); backward recomputes b = batch_norm(x).
struct QuantizingBatchNorm : torch::autograd::Function<QuantizingBatchNorm> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                        const Tensor& scale, const Tensor& zero_point, const Tensor& running_mean,
                        const Tensor& running_var, const BatchNormArgs& bn, const QuantSpec& spec,
                        const FusedActivation& activation) {
    const auto [b, batch_mean, batch_invstd] =
        at::native_batch_norm(x, gamma, beta, running_mean, running_var, bn.training, bn.momentum, bn.eps);
    // Training: the next step updates the running statistics in place,
    // and backward does not read them.
    ctx->save_for_backward({x, gamma, beta, scale, zero_point, bn.training ? Tensor() : running_mean,
                            bn.training ? Tensor() : running_var, batch_mean, batch_invstd});
    ctx->saved_data["training"] = bn.training;
    ctx->saved_data["eps"] = bn.eps;
    save_spec(ctx, "", spec, activation);
    return fake_quantize_learnable(b, scale, zero_point, spec, lsq_grad_factor(b, spec), activation);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &gamma = saved[1], &beta = saved[2], &scale = saved[3], &zero_point = saved[4];
    const Tensor &running_mean = saved[5], &running_var = saved[6];
    const bool training = ctx->saved_data["training"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    Tensor b = training ? recompute_output(x, gamma, beta, saved[7], saved[8], eps)
                        : std::get<0>(at::native_batch_norm(x, gamma, beta, running_mean, running_var,
                                                            /*training=*/false, 0.0, eps));
    const QuantSpec spec = saved_spec(ctx, "");
    const LearnableFakeQuantPass q = fake_quantize_learnable_backward(
        b, grads[0], scale, zero_point, spec, lsq_grad_factor(b, spec), saved_activation(ctx, ""));
    // Free b and dL/dq before the BatchNorm backward allocates dx.
    b.reset();
    grads[0].reset();
    const auto [dx, dgamma, dbeta] =
        at::native_batch_norm_backward(q.grad_x, x, gamma, running_mean, running_var, saved[7], saved[8], training,
                                       eps, {x.requires_grad(), gamma.requires_grad(), beta.requires_grad()});
    const Tensor dscale = scale.requires_grad() ? q.grad_scale : Tensor();
    const Tensor dzero_point = zero_point.requires_grad() ? q.grad_zero_point : Tensor();
    // None for the running statistics and the non-tensor arguments.
    return {dx, dgamma, dbeta, dscale, dzero_point, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

bool is_graph_output(const Graph& g, const std::string& value) {
  return std::find(g.outputs.begin(), g.outputs.end(), value) != g.outputs.end();
}

// A conv linked to the quantizer node `fq` keeps fq's input for its own
// recompute: fusing fq into its producer would then save nothing.
bool read_by_linked_conv(const Graph& g, const Node& fq) {
  const auto readers = g.consumers(fq.outputs.at(0));
  return std::any_of(readers.begin(), readers.end(),
                     [&](size_t reader) { return g.nodes[reader].has_attr(kInputQuantizerAttr); });
}

}  // namespace

Tensor quantizing_batch_norm(const Tensor& x, const BatchNormArgs& bn, const Quantizer& quantizer,
                             const FusedActivation& activation) {
  return QuantizingBatchNorm::apply(x, bn.gamma, bn.beta, quantizer.applied_scale(), quantizer.applied_zero_point(),
                                    bn.running_mean, bn.running_var, bn, quantizer.spec(), activation);
}

void link_quantized_batchnorm_outputs(GraphModule& m) {
  Graph& g = m.mutable_graph();
  for (Node& fq : g.nodes) {
    if (fq.op_type != kFakeQuantOp) continue;
    const std::string& b = fq.inputs.at(0);
    const Node* producer = g.producer(b);
    if (!producer || producer->op_type != kConvBnOp || g.consumers(b).size() != 1 || is_graph_output(g, b)) continue;
    if (read_by_linked_conv(g, fq)) continue;
    Node& conv_bn = g.nodes[g.node_index(producer->name)];
    conv_bn.attributes[kOutputQuantizerAttr] = fq.attr_string("quantizer");
    copy_activation_attributes(fq, conv_bn, kOutputPrefix);
    fq.attributes[kProducerQuantizesAttr] = int64_t{1};
  }
}

void unlink_quantized_batchnorm_outputs(GraphModule& m) {
  for (Node& node : m.mutable_graph().nodes) {
    node.attributes.erase(kOutputQuantizerAttr);
    node.attributes.erase(kProducerQuantizesAttr);
    for (const char* key : {kActivationAttr, kActivationBoundsAttr}) {
      node.attributes.erase(kOutputPrefix + std::string(key));
    }
  }
}

}  // namespace qat
