#include "sim/recomputing_conv.h"

#include "qat/builder.h"
#include "qat/quantsim.h"
#include "qat/zoo.h"
#include "sim/batchnorm.h"
#include "sim/unfold.h"
#include "sim_options.h"
#include "sim_testing.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

using torch::Tensor;

// Range learning: the linked sim against the same sim unlinked.
void expect_same_gradients(const std::string& model, int bits) {
  torch::manual_seed(0);
  const Tensor batch = torch::randn({6, 1, 28, 28});
  const Tensor loss_weights = torch::randn({6, 10});
  auto linked = calibrated_sim(model, bits, batch);
  auto unlinked = calibrated_sim(model, bits, batch);
  linked->set_range_learning(true, true);
  unlinked->set_range_learning(true, true);
  unlink_quantized_conv_inputs(unlinked->model());
  const auto got = step_gradients(*linked, batch, loss_weights);
  const auto want = step_gradients(*unlinked, batch, loss_weights);
  size_t trainable = 0;
  for (const auto& p : unlinked->model().parameters()) trainable += p.requires_grad();
  EXPECT_EQ(want.size(), trainable + 1);  // and the logits
  ASSERT_EQ(got.size(), want.size());
  size_t encoding_grads = 0;
  for (const auto& [name, value] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const bool encoding = is_encoding(name);
    encoding_grads += encoding;
    if (encoding) {
      EXPECT_LE((got.at(name) - value).abs().max().item<double>(), encoding_tolerance(want, name)) << name;
    } else {
      EXPECT_TRUE(torch::equal(got.at(name), value)) << name << " differs by "
                                                     << (got.at(name) - value).abs().max().item<double>();
    }
  }
  EXPECT_GT(encoding_grads, 0u);
}

Quantizer* quantizer_reading(QuantSim& sim, const std::string& value) {
  for (const Node& node : sim.model().graph().nodes) {
    if (node.op_type == "QatFakeQuant" && node.inputs[0] == value) return &sim.quantizer(node.attr_string("quantizer"));
  }
  return nullptr;
}

// Two Conv+BN layers through the sim, against the same computation written
// with plain ops: the quantizers' own forward, torch::conv2d (ATen's conv
// backward) and the sim's unfold and fold helpers. conv1's weight (108
// values) is under a quarter of its output (2430), so the sim divides its
// weight by the fold factor; conv2's (216) is not (output 500), so the sim
// divides its output: the reference does the same, bit for bit.
void expect_plain_op_gradients(bool range_learning) {
  GraphBuilder b(5);
  std::string x = b.input("image", {-1, 2, 9, 9});
  x = b.relu(b.batch_norm(b.conv(x, "conv1", 6, 3), "bn1"));
  b.output(b.batch_norm(b.conv(x, "conv2", 4, 3, /*stride=*/2), "bn2"));
  const auto model = b.build();
  torch::manual_seed(1);
  {
    torch::NoGradGuard no_grad;
    for (const std::string bn : {"bn1", "bn2"}) {
      const int64_t c = model->initializer(bn + ".weight").size(0);
      model->initializer(bn + ".weight").copy_(torch::rand({c}) + 0.5);
      model->initializer(bn + ".bias").copy_(torch::randn({c}) * 0.1);
      model->initializer(bn + ".running_mean").copy_(torch::randn({c}) * 0.1);
      model->initializer(bn + ".running_var").copy_(torch::rand({c}) + 0.5);
    }
  }
  const Tensor batch = torch::randn({5, 2, 9, 9});
  const Tensor loss_weights = torch::randn({5, 4, 5, 5});
  QuantSim sim(model, sim_options(4, 4), {1, 2, 9, 9});
  sim.compute_encodings([&](GraphModule& m) { m.forward(batch); });
  sim.freeze_batchnorm_stats(true);  // running statistics stay put, so both passes see the same
  sim.set_range_learning(true, range_learning);
  GraphModule& m = sim.model();
  m.train();
  const auto collect = [&] {
    std::map<std::string, Tensor> grads;
    for (auto& item : m.named_parameters()) {
      if (item.value().grad().defined()) grads[item.key()] = item.value().grad().clone();
      item.value().mutable_grad() = Tensor();
    }
    return grads;
  };
  (m.forward(batch) * loss_weights).sum().backward();
  const auto got = collect();

  const auto layer = [&](const Tensor& in, const std::string& conv, const std::string& bn, int64_t stride,
                         bool divide_weight) {
    const Tensor w = m.initializer(conv + ".weight");
    const Tensor gamma = m.initializer(bn + ".weight"), beta = m.initializer(bn + ".bias");
    const Tensor mean = m.initializer(bn + ".running_mean"), var = m.initializer(bn + ".running_var");
    const Tensor zeros = torch::zeros({w.size(0)});
    const FoldedConvBn fold = fold_conv_bn(w, zeros, gamma, beta, mean, var, 1e-5);
    const Tensor weight = sim.quantizer(conv + ".weight_quantizer").forward(fold.weight);
    const Tensor y = divide_weight ? torch::conv2d(in, weight / fold.factor.reshape({-1, 1, 1, 1}), zeros, stride, 1)
                                   : unfold_conv_output(torch::conv2d(in, weight, {}, stride, 1), fold.factor, zeros);
    return torch::batch_norm(y, gamma, beta, mean, var, false, 0.1, 1e-5, false);
  };
  const auto quantized = [&](const Tensor& t, const std::string& value) {
    Quantizer* q = quantizer_reading(sim, value);
    return q ? q->forward(t) : t;
  };
  const Tensor hidden = torch::relu(layer(quantized(batch, "image"), "conv1", "bn1", 1, true));
  // The ReLU's quantizer absorbed the ReLU, so it reads bn1.out; here the
  // ReLU runs on its own and the quantizer after it.
  ASSERT_EQ(m.graph().nodes[m.graph().consumers("bn1.out").at(0)].attr_string("activation", ""), "Relu");
  const Tensor out = quantized(layer(quantized(hidden, "bn1.out"), "conv2", "bn2", 2, false), "bn2.out");
  (out * loss_weights).sum().backward();
  const auto want = collect();
  size_t trainable = 0;
  for (const auto& p : m.parameters()) trainable += p.requires_grad();
  EXPECT_EQ(want.size(), trainable);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, value] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(torch::equal(got.at(name), value)) << name << " differs by "
                                                   << (got.at(name) - value).abs().max().item<double>();
  }
}

TEST(RecomputingConv, GradientsEqualPlainOps) { expect_plain_op_gradients(false); }

TEST(RecomputingConv, RangeLearningGradientsEqualPlainOps) { expect_plain_op_gradients(true); }

size_t linked_convs(const GraphModule& m) {
  size_t n = 0;
  for (const Node& node : m.graph().nodes) n += node.has_attr(kInputQuantizerAttr);
  return n;
}

TEST(RecomputingConv, LinksEveryConvReadingAnActivationQuantizer) {
  auto sim = calibrated_sim("resnet8", 8, torch::randn({2, 1, 28, 28}));
  sim->set_range_learning(true, true);
  const Graph& g = sim->model().graph();
  size_t linked = 0, recomputed = 0;
  for (const Node& node : g.nodes) {
    if (node.op_type == kConvBnOp) {
      const Node* producer = g.producer(node.inputs[0]);
      const bool reads_quantizer = producer && producer->op_type == "QatFakeQuant";
      EXPECT_EQ(node.has_attr(kInputQuantizerAttr), reads_quantizer) << node.name;
      if (reads_quantizer) {
        EXPECT_EQ(node.attr_string(kInputQuantizerAttr), producer->attr_string("quantizer"));
        EXPECT_EQ(node.inputs.at(kFloatInputIndex), producer->inputs[0]);
      }
      linked += reads_quantizer;
    }
    if (node.has_attr(kReadersRecomputeAttr)) {
      ++recomputed;
      for (size_t reader : g.consumers(node.outputs[0])) EXPECT_EQ(g.nodes[reader].op_type, kConvBnOp);
    }
  }
  // ResNet-8: the stem, two convs per block and two downsampling convs.
  EXPECT_EQ(linked, 9u);
  // Read by convs alone: the model input, each block's inner activation,
  // and the inputs of the two downsampling blocks (conv and shortcut conv);
  // the first block's input is read by its residual Add too.
  EXPECT_EQ(recomputed, 6u);
}

// Frozen activation encodings are not recomputed, and a link would only
// keep each quantizer's input alive until its conv runs (calibration and
// evaluation too): the sim links while activation encodings learn.
TEST(RecomputingConv, LinksOnlyWhileActivationEncodingsLearn) {
  auto sim = calibrated_sim("resnet8", 8, torch::randn({2, 1, 28, 28}));
  EXPECT_EQ(linked_convs(sim->model()), 0u);
  sim->set_range_learning(true, true);
  EXPECT_EQ(linked_convs(sim->model()), 9u);
  sim->set_range_learning(true, false);
  EXPECT_EQ(linked_convs(sim->model()), 0u);
  for (const Node& node : sim->model().graph().nodes) {
    EXPECT_FALSE(node.has_attr(kReadersRecomputeAttr)) << node.name;
    if (node.op_type == kConvBnOp) EXPECT_LE(node.inputs.size(), kFloatInputIndex) << node.name;
  }
}

TEST(RecomputingConv, ResNetRangeLearningGradientsMatchTheUnlinkedSim) { expect_same_gradients("resnet8", 4); }

// Depthwise convolutions (groups) and ReLU6 activations.
TEST(RecomputingConv, MobileNetRangeLearningGradientsMatchTheUnlinkedSim) {
  expect_same_gradients("mobilenet_v2_x0_5", 4);
}

TEST(RecomputingConv, NoLinkWhenPaddingDependsOnTheInput) {
  Node conv;
  conv.attributes["auto_pad"] = std::string("SAME_UPPER");
  EXPECT_FALSE(static_conv_geometry(conv, {3, 3}));
  conv.attributes["auto_pad"] = std::string("NOTSET");
  conv.attributes["pads"] = std::vector<int64_t>{1, 0, 1, 1};  // asymmetric on the second axis
  EXPECT_FALSE(static_conv_geometry(conv, {3, 3}));
  conv.attributes["pads"] = std::vector<int64_t>{1, 2, 1, 2};
  conv.attributes["strides"] = std::vector<int64_t>{2, 1};
  const auto g = static_conv_geometry(conv, {3, 5});
  ASSERT_TRUE(g);
  EXPECT_EQ(g->padding, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(g->strides, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(g->dilations, (std::vector<int64_t>{1, 1}));
}

}  // namespace
}  // namespace qat
