#include "qat/sensitivity.h"

#include "ptq/ptq_test_util.h"

#include <gtest/gtest.h>

#include <iostream>
#include <limits>
#include <map>
#include <set>

namespace qat {
namespace {

using testing::batches;
using testing::images;

// Names of weighted layers and of layers with a quantized output, from a
// sim of the same model.
struct LayerNames {
  std::vector<std::string> weighted, activations;
};

LayerNames layer_names(GraphModule& model) {
  QuantSim probe(testing::clone(model), testing::sim_options(8, 8), {1, 1, 28, 28});
  LayerNames names;
  for (const auto& info : probe.quantizers()) (info.is_param ? names.weighted : names.activations).push_back(info.layer);
  return names;
}

// One layer's weights and another layer's output are quantized to 2 bits,
// everything else to 8: the analysis must find both, each in the right part.
TEST(Sensitivity, RanksDeliberatelyBrokenLayersFirst) {
  auto model = testing::trained_resnet8();
  const LayerNames names = layer_names(*model);
  const std::string broken_weights = names.weighted.at(3);
  const std::string broken_output = names.activations.at(5);
  ASSERT_NE(broken_weights, broken_output);
  QuantSimOptions options = testing::sim_options(8, 8);
  options.layer_bits[broken_weights].param_bits = 2;
  options.layer_bits[broken_output].activation_bits = 2;
  const auto calibration = batches(data::Split::kTrain, 0, 256);
  auto sim = testing::calibrated_sim(model, options, images(calibration));

  const SensitivityReport report = analyze_sensitivity(*sim, batches(data::Split::kTrain, 1024, 512));
  EXPECT_GT(report.fp32_accuracy, 0.6) << "the fixture model should have learned something";
  const auto ranking = rank_by_sensitivity(report.layers);
  ASSERT_GE(ranking.size(), 2u);
  const std::set<std::string> top{ranking[0].layer, ranking[1].layer};
  EXPECT_TRUE(top.count(broken_weights)) << "first: " << ranking[0].layer << ", second: " << ranking[1].layer;
  EXPECT_TRUE(top.count(broken_output)) << "first: " << ranking[0].layer << ", second: " << ranking[1].layer;
  // Every other layer is 8-bit: its output SQNR is far above the broken ones'.
  double others = std::numeric_limits<double>::infinity();
  for (const auto& row : report.layers) {
    if (row.layer != broken_weights && row.layer != broken_output) others = std::min(others, row.sqnr_db());
  }
  for (const auto& row : report.layers) {
    if (row.layer == broken_weights) {
      ASSERT_TRUE(row.weights.has_value());
      EXPECT_GT(row.weights->accuracy_drop, 0.05);
      EXPECT_LT(row.weights->sqnr_db, others - 10.0);
    } else if (row.layer == broken_output) {
      ASSERT_TRUE(row.activations.has_value());
      EXPECT_LT(row.activations->sqnr_db, others - 10.0);
      // Its weights (if any) are 8-bit, so the damage is in the output.
      if (row.weights) EXPECT_GT(row.weights->sqnr_db, row.activations->sqnr_db + 10.0);
    }
    std::cout << row.layer << ": " << row.sqnr_db() << " dB, drop " << row.accuracy_drop() << "\n";
  }
  EXPECT_EQ(top_weighted_layers(ranking, 1).at(0), broken_weights);
}

TEST(Sensitivity, LeavesEveryQuantizerEnabled) {
  auto sim = testing::calibrated_sim(testing::trained_resnet8(20), testing::sim_options(8, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  analyze_sensitivity(*sim, batches(data::Split::kTrain, 64, 64));
  for (const auto& info : sim->quantizers()) EXPECT_TRUE(sim->quantizer(info.name).enabled()) << info.name;
}

// Rows follow the model's order (the input first), absorbed ReLUs included.
TEST(Sensitivity, ReportListsLayersInModelOrder) {
  auto model = testing::trained_resnet8(20);
  std::map<std::string, size_t> order{{model->graph().inputs[0].name, 0}};
  for (const Node& node : model->graph().nodes) order.emplace(node.name, order.size());
  auto sim = testing::calibrated_sim(testing::clone(*model), testing::sim_options(8, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  const SensitivityReport report = analyze_sensitivity(*sim, batches(data::Split::kTrain, 64, 64));
  size_t relus = 0, previous = 0;
  for (const auto& row : report.layers) {
    ASSERT_TRUE(order.count(row.layer)) << row.layer;
    EXPECT_GE(order.at(row.layer), previous) << row.layer;
    previous = order.at(row.layer);
    relus += row.layer.rfind("Relu", 0) == 0;
  }
  EXPECT_EQ(relus, 7u);
}

TEST(Sensitivity, TopKOutOfRangeNamesTheOption) {
  LayerSensitivity weighted{"conv", QuantEffect{}, std::nullopt};
  LayerSensitivity activation_only{"relu", std::nullopt, QuantEffect{}};
  const std::vector<LayerSensitivity> ranking{activation_only, weighted};
  EXPECT_EQ(top_weighted_layers(ranking, 1), std::vector<std::string>{"conv"});
  for (int64_t k : {0, 2}) {
    try {
      top_weighted_layers(ranking, k);
      FAIL() << "k = " << k << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--top-k " + std::to_string(k)), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace qat
