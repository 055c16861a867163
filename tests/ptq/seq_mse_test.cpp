#include "qat/seq_mse.h"

#include "ptq/ptq_test_util.h"
#include "ptq/weight_error.h"

#include <gtest/gtest.h>

#include <iostream>

namespace qat {
namespace {

using testing::batches;
using testing::layer_errors;
using testing::weights_only_sqnr;
using testing::images;

TEST(SeqMse, LowersLayerOutputErrorVersusMinMaxAt4Bits) {
  auto model = testing::trained_resnet8();
  const auto calibration = images(batches(data::Split::kTrain, 0, 256));
  const auto held_out = images(batches(data::Split::kTrain, 2048, 256));
  for (const BatchNormMode bn : {BatchNormMode::kSimulate, BatchNormMode::kFold}) {
    auto minmax = testing::calibrated_sim(testing::clone(*model), testing::sim_options(4, 8, bn), calibration);
    auto searched = testing::calibrated_sim(testing::clone(*model), testing::sim_options(4, 8, bn), calibration);
    apply_seq_mse(*searched, calibration);
    for (const auto& info : searched->quantizers()) EXPECT_TRUE(searched->quantizer(info.name).enabled());

    const auto before = layer_errors(*minmax, *minmax, held_out);
    const auto after = layer_errors(*searched, *minmax, held_out);
    ASSERT_EQ(before.size(), after.size());
    ASSERT_GE(before.size(), 10u) << "every conv and the fc";
    double total_before = 0.0, total_after = 0.0;
    size_t improved = 0;
    for (size_t i = 0; i < before.size(); ++i) {
      total_before += before[i];
      total_after += after[i];
      improved += after[i] < before[i];
    }
    std::cout << "summed layer output error: min-max " << total_before << ", seq-mse " << total_after << "\n";
    EXPECT_LT(total_after, 0.8 * total_before) << "summed layer output error";
    EXPECT_GE(improved, before.size() - 1) << "layers whose held-out output error went down";
    const double sqnr_minmax = weights_only_sqnr(*minmax, *minmax, held_out[0]);
    const double sqnr_searched = weights_only_sqnr(*searched, *minmax, held_out[0]);
    std::cout << "logits SQNR, W4 only: min-max " << sqnr_minmax << " dB, seq-mse " << sqnr_searched << " dB\n";
    EXPECT_GT(sqnr_searched, sqnr_minmax + 1.0) << "logits SQNR, weights quantized";
  }
}

TEST(SeqMse, RejectsBadOptions) {
  auto sim = testing::calibrated_sim(testing::trained_resnet8(5), testing::sim_options(4, 8),
                                     images(batches(data::Split::kTrain, 0, 64)));
  SeqMseOptions bad_loss;
  bad_loss.loss = "sqnr2";
  try {
    apply_seq_mse(*sim, images(batches(data::Split::kTrain, 0, 64)), bad_loss);
    FAIL() << "loss 'sqnr2' accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--seq-mse-loss 'sqnr2'"), std::string::npos) << e.what();
  }
  SeqMseOptions no_candidates;
  no_candidates.candidates = 0;
  EXPECT_THROW(apply_seq_mse(*sim, images(batches(data::Split::kTrain, 0, 64)), no_candidates), std::invalid_argument);
}

}  // namespace
}  // namespace qat
