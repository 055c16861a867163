#include "qat/bn_reestimation.h"

#include "ptq/ptq_test_util.h"
#include "ptq/weighted_layer.h"
#include "qat/fake_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

namespace qat {
namespace {

using torch::Tensor;
using testing::batches;
using testing::images;

double sqnr_db(const Tensor& ref, const Tensor& out) {
  return 10.0 * std::log10(ref.pow(2).sum().item<double>() / (ref - out).pow(2).sum().item<double>());
}

Tensor forward(GraphModule& m, const Tensor& x, bool training) {
  torch::NoGradGuard no_grad;
  m.train(training);
  Tensor out = m.forward(x);
  m.eval();
  return out;
}

// Running statistics that describe nothing, as after QAT moved the weights.
void corrupt_statistics(GraphModule& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  for (const auto& name : m.initializer_names()) {
    Tensor t = m.initializer(name);
    if (name.find("running_mean") != std::string::npos) t.add_(torch::randn_like(t));
    if (name.find("running_var") != std::string::npos) t.mul_(torch::rand_like(t) * 4.0 + 0.25);
  }
}

// Integer codes of every weighted layer's weight.
std::vector<Tensor> weight_codes(QuantSim& sim) {
  std::vector<Tensor> codes;
  for (const auto& layer : ptq::weighted_layers(sim)) {
    codes.push_back(quantize(layer.weight().detach(), layer.quantizer().encoding()));
  }
  return codes;
}

// Re-estimated on batch x, the eval-mode model normalises x as training
// mode does (with x's own statistics): the statistics are x's.
TEST(BnReestimation, RestoresStatisticsAndKeepsIntegerWeights) {
  const auto calibration = images(batches(data::Split::kTrain, 0, 256));
  auto sim = testing::calibrated_sim(testing::trained_resnet8(), testing::sim_options(8, 8), calibration);
  GraphModule& m = sim->model();
  const Tensor x = torch::cat(images(batches(data::Split::kTrain, 4096, 256)));
  corrupt_statistics(m);
  // The reference is the training-mode output of the corrupted model: its
  // weight codes (quantized after folding with the running variance) are
  // the ones re-estimation must keep. The forward pass's own statistics
  // update is undone.
  std::map<std::string, Tensor> statistics;
  for (const auto& name : m.initializer_names()) {
    if (name.find("running_") != std::string::npos) statistics[name] = m.initializer(name).clone();
  }
  const Tensor batch_normalised = forward(m, x, /*training=*/true);
  for (const auto& [name, value] : statistics) m.initializer(name).copy_(value);
  const double corrupted = sqnr_db(batch_normalised, forward(m, x, false));
  const auto codes_before = weight_codes(*sim);

  const auto layers = reestimate_batchnorm(*sim, {x});
  EXPECT_EQ(layers.size(), 9u) << "every conv of ResNet-8 (stem, 3 blocks of 2, 2 projections) has its BN";
  const double restored = sqnr_db(batch_normalised, forward(m, x, false));
  std::cout << "eval vs batch-normalised logits: corrupted " << corrupted << " dB, re-estimated " << restored << " dB\n";
  EXPECT_LT(corrupted, 10.0);
  EXPECT_GT(restored, 35.0);
  const auto codes_after = weight_codes(*sim);
  ASSERT_EQ(codes_before.size(), codes_after.size());
  // W * f / s and W * f' / (s * f' / f) are one number, computed with
  // different roundings: a code at a .5 boundary may move one step.
  for (size_t i = 0; i < codes_before.size(); ++i) {
    const Tensor moved = (codes_before[i] - codes_after[i]).abs();
    EXPECT_LE(moved.max().item<float>(), 1.0f) << "layer " << i;
    EXPECT_LE(moved.gt(0).sum().item<int64_t>() * 1000, codes_before[i].numel()) << "layer " << i;
  }
}

// Several batches: the running mean is the plain average of their means.
TEST(BnReestimation, AveragesBatchesEqually) {
  const auto calibration = images(batches(data::Split::kTrain, 0, 128));
  auto sim = testing::calibrated_sim(testing::trained_resnet8(20), testing::sim_options(8, 8), calibration);
  GraphModule& m = sim->model();
  const std::string stem_mean = m.graph().nodes[m.graph().node_index("stem.conv")].inputs.at(5);
  std::vector<Tensor> means;
  for (const auto& x : calibration) {
    reestimate_batchnorm(*sim, {x});
    means.push_back(m.initializer(stem_mean).clone());
  }
  reestimate_batchnorm(*sim, calibration);
  EXPECT_TRUE(torch::allclose(m.initializer(stem_mean), (means[0] + means[1]) / 2, 1e-4, 1e-5));
  EXPECT_FALSE(torch::allclose(means[0], means[1], 1e-3, 1e-4)) << "the two batches should differ";
}

TEST(BnReestimation, NeedsBatches) {
  auto sim = testing::calibrated_sim(testing::trained_resnet8(5), testing::sim_options(8, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  EXPECT_THROW(reestimate_batchnorm(*sim, {}), std::invalid_argument);
}

}  // namespace
}  // namespace qat
