#include "qat/encoding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace qat {
namespace {

QuantSpec spec_of(int bits, bool is_signed, bool symmetric, bool narrow = false) {
  QuantSpec spec;
  spec.grid = {bits, is_signed, narrow};
  spec.symmetric = symmetric;
  return spec;
}

TEST(QuantGrid, Bounds) {
  EXPECT_EQ((QuantGrid{8, true, false}.qmin()), -128);
  EXPECT_EQ((QuantGrid{8, true, false}.qmax()), 127);
  EXPECT_EQ((QuantGrid{8, true, true}.qmin()), -127);
  EXPECT_EQ((QuantGrid{8, false, false}.qmax()), 255);
  EXPECT_EQ((QuantGrid{8, false, true}.qmin()), 1);
  EXPECT_EQ((QuantGrid{2, true, false}.qmin()), -2);
  EXPECT_EQ((QuantGrid{2, true, false}.qmax()), 1);
  EXPECT_EQ((QuantGrid{16, false, false}.qmax()), 65535);
  EXPECT_EQ((QuantGrid{16, true, false}.qmin()), -32768);
}

TEST(QuantGrid, RejectsOutOfRangeBitwidths) {
  for (int bits : {0, 1, 17, 32, 33, -8}) {
    EXPECT_THROW((QuantGrid{bits, true, false}.validate()), std::invalid_argument) << bits;
  }
  EXPECT_THROW(encoding_from_range(-1.0, 1.0, spec_of(1, true, true)), std::invalid_argument);
}

TEST(EncodingFromRange, AsymmetricUint8) {
  const auto enc = encoding_from_range(-1.0, 3.0, spec_of(8, false, false));
  EXPECT_FLOAT_EQ(enc.scale.item<float>(), static_cast<float>(4.0 / 255.0));
  EXPECT_EQ(enc.zero_point.item<float>(), std::nearbyint(255.0 / 4.0));  // 64
  // Zero is on the grid and the grid spans the range up to half a step.
  const float s = enc.scale.item<float>();
  EXPECT_NEAR(enc.min().item<float>(), -1.0, s / 2 + 1e-6);
  EXPECT_NEAR(enc.max().item<float>(), 3.0, s / 2 + 1e-6);
}

TEST(EncodingFromRange, AsymmetricSignedGridUsesShiftedZeroPoint) {
  const auto enc = encoding_from_range(0.0, 2.55, spec_of(8, true, false));
  EXPECT_EQ(enc.zero_point.item<float>(), -128.0f);
  EXPECT_NEAR(enc.min().item<float>(), 0.0f, 0.0f);
}

TEST(EncodingFromRange, SymmetricSigned) {
  const auto enc = encoding_from_range(-0.5, 2.54, spec_of(8, true, true));
  EXPECT_FLOAT_EQ(enc.scale.item<float>(), static_cast<float>(2.54 / 127.0));
  EXPECT_EQ(enc.zero_point.item<float>(), 0.0f);
  const auto narrow = encoding_from_range(-3.0, 1.0, spec_of(4, true, true, true));
  EXPECT_FLOAT_EQ(narrow.scale.item<float>(), static_cast<float>(3.0 / 7.0));
}

TEST(EncodingFromRange, UnsignedSymmetricPutsZeroAtQmin) {
  const auto enc = encoding_from_range(0.0, 6.0, spec_of(8, false, true));
  EXPECT_FLOAT_EQ(enc.scale.item<float>(), static_cast<float>(6.0 / 255.0));
  EXPECT_EQ(enc.zero_point.item<float>(), 0.0f);
}

TEST(EncodingFromRange, RangeIsWidenedToContainZero) {
  const auto positive = encoding_from_range(2.0, 4.0, spec_of(8, false, false));
  EXPECT_EQ(positive.zero_point.item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(positive.scale.item<float>(), static_cast<float>(4.0 / 255.0));
  const auto negative = encoding_from_range(-4.0, -2.0, spec_of(8, false, false));
  EXPECT_EQ(negative.zero_point.item<float>(), 255.0f);
}

TEST(EncodingFromRange, ZeroIsExactlyRepresentableForRandomRanges) {
  torch::manual_seed(7);
  for (int bits : {2, 3, 4, 8, 12, 16}) {
    for (bool is_signed : {false, true}) {
      const auto lo = -torch::rand({64}, torch::kDouble) * 10;
      const auto hi = torch::rand({64}, torch::kDouble) * 10;
      QuantSpec spec = spec_of(bits, is_signed, false);
      spec.channel_axis = 0;
      const auto enc = encoding_from_range(lo, hi, spec);
      // q for x = 0 is z itself, which must lie on the grid.
      EXPECT_TRUE((enc.zero_point >= spec.grid.qmin()).all().item<bool>());
      EXPECT_TRUE((enc.zero_point <= spec.grid.qmax()).all().item<bool>());
      EXPECT_TRUE(torch::equal(enc.zero_point, enc.zero_point.round()));
      EXPECT_TRUE((enc.scale > 0).all().item<bool>());
    }
  }
}

TEST(EncodingFromRange, DegenerateRangesGiveMinimumScale) {
  for (bool symmetric : {false, true}) {
    for (bool is_signed : {false, true}) {
      const auto zeros = encoding_from_range(0.0, 0.0, spec_of(8, is_signed, symmetric));
      EXPECT_EQ(zeros.scale.item<float>(), static_cast<float>(kMinScale));
      EXPECT_TRUE(std::isfinite(zeros.zero_point.item<float>()));
      const auto tiny = encoding_from_range(1e-12, 1e-12, spec_of(8, is_signed, symmetric));
      EXPECT_EQ(tiny.scale.item<float>(), static_cast<float>(kMinScale));
    }
  }
  // min == max away from zero: the range [0, 5] is used.
  const auto constant = encoding_from_range(5.0, 5.0, spec_of(8, false, false));
  EXPECT_FLOAT_EQ(constant.scale.item<float>(), static_cast<float>(5.0 / 255.0));
}

TEST(EncodingFromRange, InfiniteBoundsAreClampedToFiniteScale) {
  const double inf = std::numeric_limits<double>::infinity();
  for (bool symmetric : {false, true}) {
    const auto enc = encoding_from_range(-inf, inf, spec_of(8, true, symmetric));
    const float s = enc.scale.item<float>();
    EXPECT_TRUE(std::isfinite(s));
    EXPECT_GT(s, 0.0f);
    EXPECT_TRUE(std::isfinite(enc.min().item<float>()));
    EXPECT_TRUE(std::isfinite(enc.max().item<float>()));
  }
}

TEST(EncodingFromRange, RejectsNanAndInvertedRanges) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(encoding_from_range(nan, 1.0, spec_of(8, true, false)), std::invalid_argument);
  EXPECT_THROW(encoding_from_range(2.0, 1.0, spec_of(8, true, false)), std::invalid_argument);
}

TEST(EncodingFromRange, PerChannelMatchesPerTensorPerSlice) {
  torch::manual_seed(3);
  const auto lo = -torch::rand({16});
  const auto hi = torch::rand({16}) * 4;
  QuantSpec spec = spec_of(4, true, false);
  spec.channel_axis = 1;
  const auto per_channel = encoding_from_range(lo, hi, spec);
  spec.channel_axis.reset();
  for (int64_t c = 0; c < 16; ++c) {
    const auto one = encoding_from_range(lo[c], hi[c], spec);
    EXPECT_EQ(one.scale.item<float>(), per_channel.scale[c].item<float>());
    EXPECT_EQ(one.zero_point.item<float>(), per_channel.zero_point[c].item<float>());
  }
}

TEST(EncodingFromRange, MinMaxRoundTrip) {
  // A range that already lies on a grid converts back to itself.
  const double s = 0.03125;
  const auto enc = encoding_from_range(-37 * s, (255 - 37) * s, spec_of(8, false, false));
  EXPECT_EQ(enc.scale.item<float>(), static_cast<float>(s));
  EXPECT_EQ(enc.zero_point.item<float>(), 37.0f);
  EXPECT_EQ(enc.min().item<float>(), static_cast<float>(-37 * s));
  EXPECT_EQ(enc.max().item<float>(), static_cast<float>((255 - 37) * s));
  const auto again = encoding_from_range(enc.min(), enc.max(), enc.spec);
  EXPECT_TRUE(torch::equal(again.scale, enc.scale));
  EXPECT_TRUE(torch::equal(again.zero_point, enc.zero_point));
}

}  // namespace
}  // namespace qat
