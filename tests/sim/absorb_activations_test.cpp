#include "sim/absorb_activations.h"

#include "qat/quantsim.h"
#include "sim_testing.h"

#include <gtest/gtest.h>
#include <torch/torch.h>


namespace qat {
namespace {

using torch::Tensor;

size_t count_ops(const GraphModule& m, const std::string& op_type) {
  size_t n = 0;
  for (const Node& node : m.graph().nodes) n += node.op_type == op_type;
  return n;
}

size_t count_absorbed(const GraphModule& m, const std::string& op_type) {
  size_t n = 0;
  for (const Node& node : m.graph().nodes) n += node.attr_string(kActivationAttr, "") == op_type;
  return n;
}

TEST(AbsorbActivations, EveryQuantizedReluAndRelu6IsAbsorbed) {
  const Tensor batch = torch::randn({2, 1, 28, 28});
  const ZooOptions o;
  // ResNet-8: stem, one ReLU inside each of 3 blocks and one after each
  // block's Add.
  auto resnet = calibrated_sim("resnet8", 8, batch);
  EXPECT_EQ(count_ops(resnet->model(), "Relu"), 0u);
  EXPECT_EQ(count_absorbed(resnet->model(), "Relu"), 7u);
  EXPECT_EQ(count_ops(*make_model("resnet8", o), "Relu"), 7u);
  // MobileNetV2: every ReLU6 (a Clip to [0, 6]).
  auto mobilenet = calibrated_sim("mobilenet_v2_x0_5", 8, batch);
  EXPECT_EQ(count_ops(mobilenet->model(), "Clip"), 0u);
  EXPECT_EQ(count_absorbed(mobilenet->model(), "Clip"), count_ops(*make_model("mobilenet_v2_x0_5", o), "Clip"));
  for (const Node& node : mobilenet->model().graph().nodes) {
    if (!node.has_attr(kActivationAttr)) continue;
    EXPECT_EQ(node.attr_floats(kActivationBoundsAttr), (std::vector<double>{0.0, 6.0})) << node.name;
    // The quantized tensor keeps the activation's output name (encodings files use it).
    EXPECT_EQ(node.outputs[0], node.attr_string(kActivationOutputAttr) + ".quantized");
  }
}

// Only a Clip whose bounds are constants: a trainable bound stays a node.
TEST(AbsorbActivations, OnlyClipsWithConstantBounds) {
  for (bool trainable_bound : {false, true}) {
    Graph g;
    g.inputs = {{"x", {-1, 4}, torch::kFloat}};
    Node clip;
    clip.name = "clip";
    clip.op_type = "Clip";
    clip.inputs = {"x", "lo", "hi"};
    clip.outputs = {"y"};
    g.nodes = {clip};
    g.outputs = {"y"};
    auto m = std::make_shared<GraphModule>(g);
    m->add_initializer("lo", torch::tensor(-1.0f), false);
    m->add_initializer("hi", torch::tensor(2.0f), trainable_bound);
    QuantSim sim(m, sim_options(8, 8), {1, 4});
    EXPECT_EQ(count_ops(sim.model(), "Clip"), trainable_bound ? 1u : 0u);
    EXPECT_EQ(count_absorbed(sim.model(), "Clip"), trainable_bound ? 0u : 1u);
  }
}

// The sim with its activations back as graph nodes (and unlinked),
// calibrated so, ready for a training step.
std::unique_ptr<QuantSim> restored_sim(const std::string& model, const Tensor& batch, bool range_learning) {
  auto sim = zoo_sim(model, 4);
  restore_activations(sim->model());
  sim->compute_encodings([&](GraphModule& m) { m.forward(batch); });
  sim->set_range_learning(true, range_learning);
  unlink_quantized_conv_inputs(sim->model());
  return sim;
}

// One training step of the sim against the same sim with its activations
// back as graph nodes: calibration, eval and train logits, and every
// gradient. Without range learning they agree bit for bit; with it the
// linked convs add their part of an encoding's gradient separately
// (encoding_tolerance), everything else exactly. The absorbed sim is then
// compared unlinked too, where it must agree exactly throughout.
void expect_same_as_restored(const std::string& model, bool range_learning) {
  torch::manual_seed(0);
  const Tensor batch = torch::randn({6, 1, 28, 28});
  const Tensor loss_weights = torch::randn({6, 10});
  auto absorbed = calibrated_sim(model, 4, batch);
  auto restored = restored_sim(model, batch, range_learning);
  ASSERT_GT(count_ops(restored->model(), "Relu") + count_ops(restored->model(), "Clip"), 0u);
  for (const auto& info : absorbed->quantizers()) {
    const Encoding a = absorbed->quantizer(info.name).encoding(), r = restored->quantizer(info.name).encoding();
    EXPECT_TRUE(torch::equal(a.scale, r.scale) && torch::equal(a.zero_point, r.zero_point)) << info.name;
  }
  {
    torch::NoGradGuard no_grad;
    absorbed->model().eval();
    restored->model().eval();
    EXPECT_TRUE(torch::equal(absorbed->model().forward(batch), restored->model().forward(batch)));
  }
  const auto want = step_gradients(*restored, batch, loss_weights);
  // A training step moves BN statistics, which the next step's folded
  // weights depend on: each comparison steps a fresh sim.
  const auto compare = [&](QuantSim& sim, bool exact) {
    const auto got = step_gradients(sim, batch, loss_weights);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, value] : want) {
      ASSERT_TRUE(got.count(name)) << name;
      const double difference = (got.at(name) - value).abs().max().item<double>();
      if (exact || !is_encoding(name)) {
        EXPECT_TRUE(torch::equal(got.at(name), value)) << name << " differs by " << difference;
      } else {
        EXPECT_LE(difference, encoding_tolerance(want, name)) << name;
      }
    }
  };
  absorbed->set_range_learning(true, range_learning);
  compare(*absorbed, !range_learning);
  if (range_learning) {
    auto unlinked = calibrated_sim(model, 4, batch);
    unlinked->set_range_learning(true, true);
    unlink_quantized_conv_inputs(unlinked->model());
    compare(*unlinked, true);
  }
}

TEST(AbsorbActivations, ResNetStepEqualsTheRestoredGraph) { expect_same_as_restored("resnet8", false); }

TEST(AbsorbActivations, ResNetRangeLearningStepEqualsTheRestoredGraph) { expect_same_as_restored("resnet8", true); }

TEST(AbsorbActivations, MobileNetStepEqualsTheRestoredGraph) { expect_same_as_restored("mobilenet_v2_x0_5", false); }

TEST(AbsorbActivations, MobileNetRangeLearningStepEqualsTheRestoredGraph) {
  expect_same_as_restored("mobilenet_v2_x0_5", true);
}

// A disabled (or calibrating) quantizer still applies the activation it
// absorbed: the all-disabled sim is the float model.
TEST(AbsorbActivations, DisabledQuantizersStillApplyTheActivation) {
  const Tensor batch = torch::randn({3, 1, 28, 28});
  ZooOptions o;
  o.seed = 3;
  auto reference = make_model("mobilenet_v2_x0_5", o);
  auto sim = calibrated_sim("mobilenet_v2_x0_5", 8, batch);
  sim->set_quantization_enabled(false);
  sim->model().eval();
  reference->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(sim->model().forward(batch), reference->forward(batch), 1e-5, 1e-5));
}

}  // namespace
}  // namespace qat
