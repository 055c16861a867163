#include "qat/mixed_precision.h"

#include "ptq/ptq_test_util.h"
#include "ptq/weight_error.h"

#include <gtest/gtest.h>

#include <iostream>
#include <random>

namespace qat {
namespace {

using testing::batches;
using testing::images;

// Hand-worked: from all-16, the cheapest noise per saved bit goes first
// (C 16->8, B 16->8, C 8->4: mean 5.6 <= 6); A, the sensitive one, stays.
TEST(MixedPrecision, GreedyKeepsTheSensitiveLayerWide) {
  const std::vector<LayerNoise> layers{{"A", 100, {{4, 1e-1}, {8, 1e-3}, {16, 1e-6}}},
                                       {"B", 100, {{4, 1e-3}, {8, 1e-5}, {16, 1e-8}}},
                                       {"C", 800, {{4, 1e-4}, {8, 1e-6}, {16, 1e-9}}}};
  MixedPrecisionOptions options;
  options.mean_weight_bits = 6.0;
  const auto bits = greedy_weight_bits(layers, options);
  EXPECT_EQ(bits, (std::map<std::string, int>{{"A", 16}, {"B", 8}, {"C", 4}}));
  EXPECT_DOUBLE_EQ(mean_weight_bits(layers, bits), 5.6);
  options.mean_weight_bits = 4.0;
  EXPECT_DOUBLE_EQ(mean_weight_bits(layers, greedy_weight_bits(layers, options)), 4.0);
}

TEST(MixedPrecision, BudgetOutsideTheCandidatesNamesTheOption) {
  const std::vector<LayerNoise> layers{{"A", 1, {{4, 1.0}, {8, 0.1}, {16, 0.01}}}};
  for (double budget : {3.0, 17.0}) {
    MixedPrecisionOptions options;
    options.mean_weight_bits = budget;
    try {
      greedy_weight_bits(layers, options);
      FAIL() << budget << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--mp-budget " + std::to_string(static_cast<int>(budget))),
                std::string::npos)
          << e.what();
    }
  }
}

// On a trained ResNet-8 the chosen bits beat random choices of the same or
// larger size, and uniform 4-bit weights.
TEST(MixedPrecision, ChoiceBeatsRandomAssignmentsOfTheSameSize) {
  auto model = testing::trained_resnet8();
  const auto calibration = batches(data::Split::kTrain, 0, 256);
  auto sim = testing::calibrated_sim(model, testing::sim_options(8, 8), images(calibration));
  MixedPrecisionOptions options;
  options.mean_weight_bits = 6.0;
  const MixedPrecisionResult result = choose_weight_bits(*sim, calibration, options);
  EXPECT_LE(result.mean_bits, 6.0);
  EXPECT_GT(result.mean_bits, 5.0);
  for (const auto& info : sim->quantizers()) {
    if (info.is_param) EXPECT_EQ(sim->quantizer(info.name).spec().grid.bitwidth, result.bits.at(info.layer));
  }
  const torch::Tensor x = torch::cat(images(batches(data::Split::kTrain, 4096, 256)));
  const double chosen = testing::weights_only_sqnr(*sim, *sim, x);

  std::mt19937 rng(11);
  const int choices[] = {4, 8, 16};
  int tried = 0;
  for (int draw = 0; draw < 5000 && tried < 5; ++draw) {
    std::map<std::string, int> bits;
    for (const auto& layer : result.layers) bits[layer.layer] = choices[rng() % 3];
    const double mean = mean_weight_bits(result.layers, bits);
    if (mean < result.mean_bits || mean > 6.0) continue;
    for (const auto& [layer, b] : bits) set_weight_bits(*sim, layer, b);
    const double random = testing::weights_only_sqnr(*sim, *sim, x);
    std::cout << "random choice, mean " << mean << " bits: " << random << " dB (chosen: " << chosen << " dB)\n";
    EXPECT_GT(chosen, random);
    ++tried;
  }
  EXPECT_EQ(tried, 5);
  for (const auto& layer : result.layers) set_weight_bits(*sim, layer.layer, 4);
  EXPECT_GT(chosen, testing::weights_only_sqnr(*sim, *sim, x) + 3.0) << "uniform 4-bit";
  EXPECT_THROW(set_weight_bits(*sim, "no_such_layer", 8), std::invalid_argument);
}

}  // namespace
}  // namespace qat
