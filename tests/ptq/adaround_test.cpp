#include "qat/adaround.h"

#include "ptq/ptq_test_util.h"
#include "ptq/weight_error.h"
#include "qat/fake_quant.h"

#include <gtest/gtest.h>

#include <iostream>

namespace qat {
namespace {

using testing::batches;
using testing::images;
using testing::layer_errors;
using testing::weights_only_sqnr;

TEST(AdaRound, LowersLayerOutputErrorVersusNearestRounding) {
  auto model = testing::trained_resnet8();
  const auto calibration = images(batches(data::Split::kTrain, 0, 256));
  const auto held_out = images(batches(data::Split::kTrain, 2048, 256));
  auto nearest = testing::calibrated_sim(testing::clone(*model), testing::sim_options(4, 8), calibration);
  auto rounded = testing::calibrated_sim(testing::clone(*model), testing::sim_options(4, 8), calibration);
  AdaRoundOptions options;
  options.iterations = 1000;  // AIMET's 10000 is for the CLI; this is enough to show the effect
  apply_adaround(*rounded, calibration, options);

  // The learned rounding is stored in the weights, on the unchanged grid:
  // nearest rounding by the quantizer reproduces them.
  for (const auto& layer : ptq::weighted_layers(*rounded)) {
    const torch::Tensor w = layer.weight();
    EXPECT_TRUE(torch::allclose(fake_quantize(w, layer.quantizer().encoding()), w, 1e-5, 1e-6)) << layer.name();
  }
  const auto before = layer_errors(*nearest, *nearest, held_out);
  const auto after = layer_errors(*rounded, *nearest, held_out);
  ASSERT_EQ(before.size(), after.size());
  double total_before = 0.0, total_after = 0.0;
  size_t improved = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    total_before += before[i];
    total_after += after[i];
    improved += after[i] < before[i];
  }
  std::cout << "summed layer output error: nearest " << total_before << ", adaround " << total_after << "\n";
  EXPECT_LT(total_after, 0.8 * total_before);
  EXPECT_GE(improved, before.size() - 1) << "layers whose held-out output error went down";
  const double sqnr_nearest = weights_only_sqnr(*nearest, *nearest, held_out[0]);
  const double sqnr_rounded = weights_only_sqnr(*rounded, *nearest, held_out[0]);
  std::cout << "logits SQNR, W4 only: nearest " << sqnr_nearest << " dB, adaround " << sqnr_rounded << " dB\n";
  EXPECT_GT(sqnr_rounded, sqnr_nearest + 1.0);
  for (const auto& info : rounded->quantizers()) EXPECT_TRUE(rounded->quantizer(info.name).enabled());
}

TEST(AdaRound, LeavesModelGradientsUntouched) {
  auto sim = testing::calibrated_sim(testing::trained_resnet8(5), testing::sim_options(4, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  for (auto& p : sim->model().parameters()) p.mutable_grad() = torch::Tensor();  // training left some
  AdaRoundOptions options;
  options.iterations = 20;
  apply_adaround(*sim, images(batches(data::Split::kTrain, 0, 64)), options);
  for (const auto& p : sim->model().parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(AdaRound, RejectsBadOptions) {
  auto sim = testing::calibrated_sim(testing::trained_resnet8(5), testing::sim_options(4, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  AdaRoundOptions options;
  options.iterations = 0;
  EXPECT_THROW(apply_adaround(*sim, images(batches(data::Split::kTrain, 0, 64)), options), std::invalid_argument);
}

}  // namespace
}  // namespace qat
