#include "qat/data.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat::data {
namespace {

TEST(Normalization, KnownValues) {
  // Channel 0: half 0, half 255 -> mean 0.5, std 0.5. Channel 1: all 51 ->
  // mean 0.2, std 0.
  auto images = torch::zeros({2, 2, 3, 3}, torch::kUInt8);
  images.select(1, 0)[1].fill_(255);
  images.select(1, 1).fill_(51);
  const Normalization stats = compute_normalization(images);
  ASSERT_EQ(stats.mean.size(), 2u);
  ASSERT_EQ(stats.std.size(), 2u);
  EXPECT_DOUBLE_EQ(stats.mean[0], 0.5);
  EXPECT_DOUBLE_EQ(stats.std[0], 0.5);
  EXPECT_DOUBLE_EQ(stats.mean[1], 0.2);
  EXPECT_NEAR(stats.std[1], 0.0, 1e-8);
}

TEST(Normalization, MatchesDoubleArithmetic) {
  const auto generator = at::detail::createCPUGenerator(3);
  const auto images = torch::randint(0, 256, {5000, 3, 4, 4}, generator, torch::kUInt8);
  const auto scaled = images.to(torch::kDouble) / 255.0;
  const Normalization stats = compute_normalization(images);
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(stats.mean[c], scaled.select(1, c).mean().item<double>(), 1e-12);
    EXPECT_NEAR(stats.std[c], scaled.select(1, c).std(/*unbiased=*/false).item<double>(), 1e-12);
  }
}

TEST(Normalization, RejectsEmptyOrNonByteImages) {
  EXPECT_THROW(compute_normalization(torch::zeros({0, 1, 2, 2}, torch::kUInt8)), std::invalid_argument);
  EXPECT_THROW(compute_normalization(torch::zeros({1, 1, 2, 2})), std::invalid_argument);
}

TEST(Normalization, FashionMnistConstantsMatchTrainSplit) {
  const Normalization stats = compute_normalization(load_fashion_mnist(Split::kTrain).images);
  ASSERT_EQ(stats.mean.size(), 1u);
  EXPECT_NEAR(stats.mean[0], kFashionMnistMean, 1e-15);
  EXPECT_NEAR(stats.std[0], kFashionMnistStd, 1e-15);
}

}  // namespace
}  // namespace qat::data
