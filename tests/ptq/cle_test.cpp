#include "qat/cle.h"

#include "ptq/ptq_test_util.h"
#include "ptq/weight_error.h"
#include "qat/sensitivity.h"

#include <gtest/gtest.h>

#include <iostream>
#include <set>

namespace qat {
namespace {

using torch::Tensor;
using testing::batches;
using testing::images;

// BN scales spread over two orders of magnitude between channels, as in
// trained depthwise nets, so per-channel weight ranges differ widely.
std::shared_ptr<GraphModule> model_with_spread_ranges(const std::string& name) {
  ZooOptions zoo;
  zoo.seed = 2;
  auto m = make_model(name, zoo);
  torch::manual_seed(2);
  torch::NoGradGuard no_grad;
  for (const auto& init : m->initializer_names()) {
    Tensor t = m->initializer(init);
    if (init.find(".bn.weight") != std::string::npos) t.copy_(torch::exp(torch::randn_like(t) * 1.5));
    if (init.find(".bn.bias") != std::string::npos) t.copy_(torch::randn_like(t) * 0.1);
    if (init.find("running_var") != std::string::npos) t.copy_(torch::rand_like(t) + 0.5);
  }
  return m;
}

Tensor logits(GraphModule& m, const Tensor& x) {
  torch::NoGradGuard no_grad;
  m.eval();
  return m.forward(x);
}

double sqnr_db(const Tensor& ref, const Tensor& out) {
  return 10.0 * std::log10(ref.pow(2).sum().item<double>() / (ref - out).pow(2).sum().item<double>());
}

// Mean |log(r1_i / r2_i)| over the channels of every pair: 0 when equalised.
double imbalance(GraphModule& m, const std::vector<std::pair<std::string, std::string>>& pairs) {
  double total = 0.0;
  for (const auto& [a, b] : pairs) {
    const Node& na = m.graph().nodes[m.graph().node_index(a)];
    const Node& nb = m.graph().nodes[m.graph().node_index(b)];
    const Tensor wa = m.initializer(na.inputs[1]), wb = m.initializer(nb.inputs[1]);
    const int64_t axis = nb.attr_int("group", 1) == 1 ? 1 : 0;
    const Tensor r1 = std::get<0>(wa.flatten(1).abs().max(1));
    const Tensor r2 = std::get<0>(wb.movedim(axis, 0).flatten(1).abs().max(1));
    total += (r1 / r2).log().abs().mean().item<double>();
  }
  return total / static_cast<double>(pairs.size());
}

TEST(Cle, PreservesTheFp32FunctionOfAReluNet) {
  auto original = model_with_spread_ranges("resnet8");
  auto equalised = testing::clone(*original);
  CleOptions options;
  options.absorb_high_bias = false;
  const CleResult result = equalize_cross_layer(*equalised, options);
  EXPECT_EQ(result.pairs.size(), 3u) << "conv pairs inside the three blocks";
  EXPECT_EQ(result.relu6_replaced, 0);
  const Tensor x = torch::cat(images(batches(data::Split::kTest, 0, 128)));
  const Tensor ref = logits(*original, x);
  EXPECT_TRUE(torch::allclose(logits(*equalised, x), ref, 1e-3, 1e-3 * ref.abs().max().item<double>()));
}

TEST(Cle, EqualisesRangesAndHelpsPerTensorWeightsOfMobileNetV2) {
  auto original = model_with_spread_ranges("mobilenet_v2_x0_5");
  auto folded = testing::clone(*original);
  fold_batchnorms(*folded);
  auto equalised = testing::clone(*original);
  const CleResult result = equalize_cross_layer(*equalised);
  ASSERT_GE(result.pairs.size(), 20u) << "expand -> depthwise -> project chains";
  EXPECT_GT(result.relu6_replaced, 0);
  const double before = imbalance(*folded, result.pairs), after = imbalance(*equalised, result.pairs);
  std::cout << "mean |log(r1/r2)|: folded " << before << ", equalised " << after << "\n";
  EXPECT_GT(before, 1.0);
  EXPECT_LT(after, 0.05);

  QuantSimOptions per_tensor = testing::sim_options(8, 8, BatchNormMode::kFold);
  per_tensor.config.per_channel = false;
  for (auto& [op, settings] : per_tensor.config.op_types) settings.per_channel_quantization.reset();
  const auto calibration = batches(data::Split::kTrain, 0, 128);
  auto plain = testing::calibrated_sim(testing::clone(*original), per_tensor, images(calibration));
  auto cle = testing::calibrated_sim(equalised, per_tensor, images(calibration));
  // Per layer: the logits SQNR with only that layer's weights quantized.
  const auto plain_layers = analyze_sensitivity(*plain, calibration).layers;
  const auto cle_layers = analyze_sensitivity(*cle, calibration).layers;
  ASSERT_EQ(plain_layers.size(), cle_layers.size());
  std::set<std::string> first_of_pair;
  for (const auto& pair : result.pairs) first_of_pair.insert(pair.first);
  double gain = 0.0;
  size_t improved = 0;
  for (size_t i = 0; i < plain_layers.size(); ++i) {
    if (!first_of_pair.count(plain_layers[i].layer)) continue;
    const double delta = cle_layers[i].weights->sqnr_db - plain_layers[i].weights->sqnr_db;
    gain += delta;
    improved += delta > 0.0;
  }
  gain /= static_cast<double>(first_of_pair.size());
  std::cout << "per-tensor W8, first layers of pairs: mean SQNR gain " << gain << " dB, " << improved << " of "
            << first_of_pair.size() << " improved\n";
  EXPECT_GT(gain, 6.0);
  EXPECT_EQ(improved, first_of_pair.size());
}

TEST(Cle, AbsorbsHighBiasesKeepingTheOutput) {
  auto original = model_with_spread_ranges("resnet8");
  {
    // Channels of one pair's first conv that sit far above zero.
    torch::NoGradGuard no_grad;
    original->initializer("layer1.0.0.bn.bias").slice(0, 0, 8).fill_(4.0);
    original->initializer("layer1.0.0.bn.weight").slice(0, 0, 8).fill_(0.2);
  }
  auto absorbed = testing::clone(*original);
  const CleResult result = equalize_cross_layer(*absorbed);
  EXPECT_GE(result.biases_absorbed, 1);
  auto kept = testing::clone(*original);
  CleOptions no_absorption;
  no_absorption.absorb_high_bias = false;
  equalize_cross_layer(*kept, no_absorption);
  const std::string bias = absorbed->graph().nodes[absorbed->graph().node_index("layer1.0.0.conv")].inputs.at(2);
  EXPECT_LT(absorbed->initializer(bias).max().item<double>(), kept->initializer(bias).max().item<double>() * 0.5);
  const Tensor x = torch::cat(images(batches(data::Split::kTest, 0, 128)));
  const double sqnr = sqnr_db(logits(*original, x), logits(*absorbed, x));
  std::cout << "logits SQNR after absorption: " << sqnr << " dB\n";
  EXPECT_GT(sqnr, 30.0);
}

}  // namespace
}  // namespace qat
