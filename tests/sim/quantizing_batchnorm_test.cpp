#include "sim/quantizing_batchnorm.h"

#include "qat/quantsim.h"
#include "sim/batchnorm.h"
#include "sim_testing.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

using torch::Tensor;

// One BatchNorm and its learned 4-bit asymmetric quantizer, through the
// fused op and through the two ops in a row: values, every gradient and
// the updated running statistics must agree bit for bit.
void expect_plain_op_results(bool training, const FusedActivation& activation) {
  torch::manual_seed(2);
  const Tensor x = (torch::randn({4, 3, 6, 6}) * 2 + 0.3).requires_grad_();
  const Tensor gamma = (torch::rand({3}) + 0.5).requires_grad_();
  const Tensor beta = (torch::randn({3}) * 0.2).requires_grad_();
  const Tensor mean = torch::randn({3}) * 0.1, var = torch::rand({3}) + 0.5;
  const Tensor grad = torch::randn({4, 3, 6, 6});
  QuantSpec spec;
  spec.grid.bitwidth = 4;
  Quantizer quantizer(spec, "minmax");
  quantizer.set_encoding({spec, torch::tensor(0.4f), torch::tensor(6.0f)});  // clips both ends of b
  quantizer.set_trainable(true);
  const auto run = [&](bool fused) {
    const Tensor running_mean = mean.clone(), running_var = var.clone();
    const BatchNormArgs bn{gamma, beta, running_mean, running_var, training, 0.1, 1e-5};
    const Tensor out =
        fused ? quantizing_batch_norm(x, bn, quantizer, activation)
              : quantizer.forward(torch::batch_norm(x, gamma, beta, running_mean, running_var, training, 0.1, 1e-5,
                                                    /*cudnn_enabled=*/false),
                                  activation);
    std::vector<Tensor> results = torch::autograd::grad({out}, {x, gamma, beta, quantizer.named_parameters()["scale"],
                                                                quantizer.named_parameters()["zero_point"]},
                                                        {grad});
    results.push_back(out.detach());
    results.push_back(running_mean);
    results.push_back(running_var);
    return results;
  };
  const auto got = run(true), want = run(false);
  const char* names[] = {"dx", "dgamma", "dbeta", "dscale", "dzero_point", "value", "running mean", "running var"};
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].defined() && want[i].defined()) << names[i];
    EXPECT_TRUE(torch::equal(got[i], want[i])) << names[i];
  }
  EXPECT_GT(want[3].abs().item<float>(), 0.0f);  // the encoding does learn
  EXPECT_EQ(torch::equal(want[7], var), !training);
}

TEST(QuantizingBatchNorm, TrainingEqualsBatchNormThenQuantizer) { expect_plain_op_results(true, {}); }
TEST(QuantizingBatchNorm, FrozenStatisticsEqualBatchNormThenQuantizer) { expect_plain_op_results(false, {}); }
TEST(QuantizingBatchNorm, AbsorbedReluEqualsBatchNormThenQuantizer) {
  expect_plain_op_results(true, FusedActivation::relu());
}

size_t linked_batchnorms(const GraphModule& m) {
  size_t n = 0;
  for (const Node& node : m.graph().nodes) {
    if (!node.has_attr(kOutputQuantizerAttr)) continue;
    ++n;
    const auto readers = m.graph().consumers(node.outputs[0]);
    EXPECT_EQ(readers.size(), 1u) << node.name;
    const Node& fq = m.graph().nodes[readers.at(0)];
    EXPECT_EQ(fq.attr_string("quantizer"), node.attr_string(kOutputQuantizerAttr)) << node.name;
    EXPECT_EQ(fq.attr_int(kProducerQuantizesAttr, 0), 1) << fq.name;
  }
  return n;
}

// ResNet-8's three residual blocks end in conv -> BN -> quantizer -> Add,
// and the two downsampling shortcuts too. The other BatchNorms' quantizers
// feed linked convs, which keep the BatchNorm's output anyway.
TEST(QuantizingBatchNorm, LinksTheBatchNormsBeforeResidualAddsWhileActivationEncodingsLearn) {
  auto sim = calibrated_sim("resnet8", 8, torch::randn({2, 1, 28, 28}));
  EXPECT_EQ(linked_batchnorms(sim->model()), 0u);
  sim->set_range_learning(true, true);
  EXPECT_EQ(linked_batchnorms(sim->model()), 5u);
  const Graph& g = sim->model().graph();
  for (const Node& node : g.nodes) {
    if (!node.has_attr(kOutputQuantizerAttr)) continue;
    const Node& fq = g.nodes[g.consumers(node.outputs[0]).at(0)];
    for (size_t reader : g.consumers(fq.outputs[0])) EXPECT_EQ(g.nodes[reader].op_type, "Add") << node.name;
  }
  sim->set_range_learning(true, false);
  EXPECT_EQ(linked_batchnorms(sim->model()), 0u);
  for (const Node& node : sim->model().graph().nodes) EXPECT_FALSE(node.has_attr(kProducerQuantizesAttr)) << node.name;
}

// A whole training step with and without the links, BatchNorm statistics
// learning or frozen: the same logits, gradients and running statistics.
void expect_same_step(const std::string& model, bool frozen_bn) {
  torch::manual_seed(0);
  const Tensor batch = torch::randn({6, 1, 28, 28});
  const Tensor loss_weights = torch::randn({6, 10});
  auto linked = calibrated_sim(model, 4, batch);
  auto unlinked = calibrated_sim(model, 4, batch);
  for (auto* sim : {linked.get(), unlinked.get()}) {
    sim->set_range_learning(true, true);
    sim->freeze_batchnorm_stats(frozen_bn);
  }
  unlink_quantized_batchnorm_outputs(unlinked->model());
  ASSERT_GT(linked_batchnorms(linked->model()), 0u);
  const auto got = step_gradients(*linked, batch, loss_weights);
  const auto want = step_gradients(*unlinked, batch, loss_weights);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, value] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(torch::equal(got.at(name), value)) << name;
  }
  for (const auto& name : unlinked->model().initializer_names()) {
    if (name.find("running_") == std::string::npos) continue;
    EXPECT_TRUE(torch::equal(linked->model().initializer(name), unlinked->model().initializer(name))) << name;
  }
}

TEST(QuantizingBatchNorm, ResNetStepEqualsTheUnlinkedSim) { expect_same_step("resnet8", false); }
TEST(QuantizingBatchNorm, ResNetStepWithFrozenStatisticsEqualsTheUnlinkedSim) { expect_same_step("resnet8", true); }
TEST(QuantizingBatchNorm, MobileNetStepEqualsTheUnlinkedSim) { expect_same_step("mobilenet_v2_x0_5", false); }

}  // namespace
}  // namespace qat
