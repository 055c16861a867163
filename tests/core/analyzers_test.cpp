#include "qat/analyzers.h"

#include "qat/fake_quant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace qat {
namespace {

using torch::Tensor;

const std::vector<std::string> kNames = {"minmax", "ema", "percentile", "mse", "sqnr"};
const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

QuantSpec spec_of(int bits, bool is_signed, bool symmetric, std::optional<int64_t> axis = std::nullopt) {
  QuantSpec spec;
  spec.grid = {bits, is_signed, false};
  spec.symmetric = symmetric;
  spec.channel_axis = axis;
  return spec;
}

double lo_of(const Range& r) { return r.min.item<double>(); }
double hi_of(const Range& r) { return r.max.item<double>(); }

// n uniform values in [-1, 1] followed by `count` outliers at -+magnitude.
Tensor uniform_with_outliers(int64_t n, double magnitude, int64_t count) {
  Tensor outliers = torch::full({count}, magnitude, kF64);
  outliers.slice(0, 0, count / 2).neg_();
  return torch::cat({torch::rand({n}, kF64) * 2 - 1, outliers});
}

Tensor laplace(int64_t n) {
  const Tensor sign = torch::randint(0, 2, {n}, kF64) * 2 - 1;
  return torch::empty({n}, kF64).exponential_(1.0) * sign;
}

// The real MSE of fake-quantizing x on the grid that [lo, hi] gives.
double real_mse(const Tensor& x, double lo, double hi, const QuantSpec& spec) {
  return (fake_quantize(x, encoding_from_range(lo, hi, spec)) - x).pow(2).mean().item<double>();
}

TEST(AnalyzerMinMax, SeveralBatchesGiveTheGlobalMinMax) {
  torch::manual_seed(1);
  MinMaxAnalyzer per_tensor;
  MinMaxAnalyzer per_channel(1);
  std::vector<Tensor> batches;
  for (int b = 0; b < 4; ++b) {
    batches.push_back(torch::randn({8, 3, 5}) * (b + 1) + b);
    per_tensor.update(batches.back());
    per_channel.update(batches.back());
  }
  const Tensor all = torch::cat(batches, 0).to(torch::kDouble);
  const Range r = per_tensor.range(QuantSpec{});
  EXPECT_EQ(r.min.dim(), 0);
  EXPECT_EQ(r.min.scalar_type(), torch::kDouble);
  EXPECT_EQ(lo_of(r), all.min().item<double>());
  EXPECT_EQ(hi_of(r), all.max().item<double>());
  const Range rc = per_channel.range(QuantSpec{});
  EXPECT_TRUE(torch::equal(rc.min, all.amin({0, 2})));
  EXPECT_TRUE(torch::equal(rc.max, all.amax({0, 2})));
}

TEST(AnalyzerEma, MatchesTheHandComputedRecursion) {
  const double momentum = 0.1;
  MovingAverageMinMaxAnalyzer ema(std::nullopt, momentum);
  MovingAverageMinMaxAnalyzer ema_default;
  const std::vector<std::pair<double, double>> extremes = {{-1, 2}, {-3, 1}, {-0.5, 5}, {-2, 2}};
  double lo = 0, hi = 0, lo_default = 0, hi_default = 0;
  for (size_t b = 0; b < extremes.size(); ++b) {
    const auto [bmin, bmax] = extremes[b];
    const Tensor x = torch::tensor({bmax, 0.25, bmin, 0.0}, kF64);
    ema.update(x);
    ema_default.update(x);
    if (b == 0) {
      lo = lo_default = bmin;
      hi = hi_default = bmax;
    } else {
      lo += momentum * (bmin - lo);
      hi += momentum * (bmax - hi);
      lo_default += 0.01 * (bmin - lo_default);
      hi_default += 0.01 * (bmax - hi_default);
    }
    if (b == 1) {
      EXPECT_NEAR(lo_of(ema.range(QuantSpec{})), -1.2, 1e-12);
    }
  }
  EXPECT_NEAR(lo_of(ema.range(QuantSpec{})), lo, 1e-12);
  EXPECT_NEAR(hi_of(ema.range(QuantSpec{})), hi, 1e-12);
  EXPECT_NEAR(lo_of(ema_default.range(QuantSpec{})), lo_default, 1e-12);
  EXPECT_NEAR(hi_of(ema_default.range(QuantSpec{})), hi_default, 1e-12);
}

TEST(AnalyzerPercentile, InterpolatesLinearlyInsideABin) {
  // 0..8 in 4 bins of width 2: counts 2, 2, 2, 3 (the maximum joins the last).
  PercentileAnalyzer analyzer(std::nullopt, 75.0, 4);
  analyzer.update(torch::arange(9, kF64));
  EXPECT_TRUE(torch::equal(analyzer.histogram(), torch::tensor({{2.0, 2.0, 2.0, 3.0}}, kF64)));
  const Range r = analyzer.range(QuantSpec{});
  // Mass 9 * 0.25 = 2.25 is 1/8 into bin 1; mass 6.75 is 1/4 into bin 3.
  EXPECT_DOUBLE_EQ(lo_of(r), 2.25);
  EXPECT_DOUBLE_EQ(hi_of(r), 6.5);
}

TEST(AnalyzerPercentile, ClipsRareOutliers) {
  torch::manual_seed(2);
  const Tensor x = uniform_with_outliers(100000, 50.0, 10);
  // Interpolation is exact only up to one bin of the [-50, 50] span.
  PercentileAnalyzer coarse(std::nullopt, 99.9);
  coarse.update(x);
  const double bin = 100.0 / 2048;
  EXPECT_NEAR(lo_of(coarse.range(QuantSpec{})), -1.0, bin);
  EXPECT_NEAR(hi_of(coarse.range(QuantSpec{})), 1.0, bin);
  PercentileAnalyzer fine(std::nullopt, 99.9, 16384);
  fine.update(x);
  EXPECT_NEAR(lo_of(fine.range(QuantSpec{})), -1.0, 0.01);
  EXPECT_NEAR(hi_of(fine.range(QuantSpec{})), 1.0, 0.01);
  PercentileAnalyzer everything(std::nullopt, 100.0);
  everything.update(x);
  EXPECT_DOUBLE_EQ(lo_of(everything.range(QuantSpec{})), -50.0);
  EXPECT_DOUBLE_EQ(hi_of(everything.range(QuantSpec{})), 50.0);
}

TEST(AnalyzerMse, ClipsRareOutliersAtEightBits) {
  torch::manual_seed(3);
  // Symmetric clip a with N uniform values in [-1, 1] and m outliers at
  // +-M: cost(a) = m (M - a)^2 + N s^2 / 12, s = 2a / 255, minimal at
  // a* = m M / (m + N / (3 * 255^2)) as long as a* >= 1. With m = 2, M = 10
  // and N = 1e6 the outliers pull the bound to a* = 2.81.
  MseAnalyzer analyzer;
  analyzer.update(uniform_with_outliers(1000000, 10.0, 2));
  const double pulled = 2 * 9.995 / (2 + 1e6 / (3.0 * 255 * 255));  // outliers at their bin centre
  EXPECT_NEAR(hi_of(analyzer.range(spec_of(8, true, true))), pulled, 0.03);  // candidates step by 10 / 512
  // Three more batches: N = 4e6 gives a* = 0.89 < 1, so the outliers are
  // clipped and the body sets the range.
  for (int b = 0; b < 3; ++b) analyzer.update(torch::rand({1000000}, kF64) * 2 - 1);
  const Range asymmetric = analyzer.range(spec_of(8, false, false));
  EXPECT_NEAR(lo_of(asymmetric), -1.0, 0.11);  // candidates step by 10 / 100
  EXPECT_NEAR(hi_of(asymmetric), 1.0, 0.11);
  const Range symmetric = analyzer.range(spec_of(8, true, true));
  EXPECT_NEAR(hi_of(symmetric), 1.0, 0.03);
  EXPECT_EQ(lo_of(symmetric), -hi_of(symmetric));
}

TEST(AnalyzerMse, GaussianFourBitClipMatchesBruteForce) {
  torch::manual_seed(4);
  const Tensor x = torch::randn({200000});
  const QuantSpec spec = spec_of(4, true, true);
  // Reference: the real MSE of fake_quantize on the sample, clip by clip.
  double best_clip = 0.0, best_mse = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= 500; ++i) {
    const double clip = 1.5 + 0.005 * i;
    const double mse = real_mse(x, -clip, clip, spec);
    if (mse < best_mse) {
      best_mse = mse;
      best_clip = clip;
    }
  }
  const double sigma = x.std().item<double>();
  // About 2.4 sigma: a little below Banner et al.'s 2.55 sigma for 16 levels
  // of width 2a / 16, since this grid's steps are a / 7.
  EXPECT_GT(best_clip / sigma, 2.25);
  EXPECT_LT(best_clip / sigma, 2.55);
  MseAnalyzer analyzer;
  analyzer.update(x);
  const Range r = analyzer.range(spec);
  EXPECT_NEAR(hi_of(r), best_clip, 0.02 * best_clip);
  EXPECT_LT(real_mse(x, lo_of(r), hi_of(r), spec), 1.01 * best_mse);
}

TEST(AnalyzerMse, SqnrClipsLessThanMseOnLaplace) {
  torch::manual_seed(5);
  const Tensor x = laplace(200000);
  MseAnalyzer mse;
  const auto sqnr = MseAnalyzer::sqnr();
  mse.update(x);
  sqnr->update(x);
  for (const QuantSpec& spec : {spec_of(4, true, true), spec_of(8, false, false)}) {
    const Range by_mse = mse.range(spec);
    const Range by_sqnr = sqnr->range(spec);
    EXPECT_GT(hi_of(by_sqnr), 1.05 * hi_of(by_mse)) << spec.grid.bitwidth;
    EXPECT_LE(lo_of(by_sqnr), lo_of(by_mse)) << spec.grid.bitwidth;
    // And the MSE preset does estimate the MSE: its choice is the better one.
    EXPECT_LT(real_mse(x, lo_of(by_mse), hi_of(by_mse), spec),
              real_mse(x, lo_of(by_sqnr), hi_of(by_sqnr), spec));
  }
}

class AnalyzerPerChannel : public ::testing::TestWithParam<std::tuple<std::string, int64_t>> {};

TEST_P(AnalyzerPerChannel, MatchesPerTensorOnEachSlice) {
  const auto [name, axis] = GetParam();
  torch::manual_seed(6);
  const std::vector<int64_t> shape = {4, 5, 6};
  const int64_t channels = shape[static_cast<size_t>(normalize_axis(axis, 3))];
  auto per_channel = make_analyzer(name, axis);
  std::vector<std::unique_ptr<EncodingAnalyzer>> slices;
  for (int64_t c = 0; c < channels; ++c) slices.push_back(make_analyzer(name, std::nullopt));
  for (int b = 0; b < 3; ++b) {
    // Later batches are wider and shifted, so histograms are re-binned.
    const Tensor x = torch::randn(shape) * (1 + 2 * b) + 0.3 * b;
    per_channel->update(x);
    for (int64_t c = 0; c < channels; ++c) slices[static_cast<size_t>(c)]->update(x.select(axis, c));
  }
  for (const QuantSpec& spec : {spec_of(8, false, false), spec_of(8, true, true), spec_of(4, true, true),
                                spec_of(8, false, true)}) {
    QuantSpec channel_spec = spec;
    channel_spec.channel_axis = axis;
    const Range r = per_channel->range(channel_spec);
    ASSERT_EQ(r.min.sizes(), torch::IntArrayRef({channels}));
    for (int64_t c = 0; c < channels; ++c) {
      const Range slice = slices[static_cast<size_t>(c)]->range(spec);
      EXPECT_NEAR(r.min[c].item<double>(), lo_of(slice), 1e-12) << c;
      EXPECT_NEAR(r.max[c].item<double>(), hi_of(slice), 1e-12) << c;
    }
    const Encoding enc = per_channel->compute_encoding(channel_spec);
    EXPECT_EQ(enc.num_channels(), channels);
  }
  if (const auto* hist = dynamic_cast<const HistogramAnalyzer*>(per_channel.get())) {
    for (int64_t c = 0; c < channels; ++c) {
      const auto* slice = dynamic_cast<const HistogramAnalyzer*>(slices[static_cast<size_t>(c)].get());
      EXPECT_TRUE(torch::allclose(hist->histogram()[c], slice->histogram()[0], 0.0, 1e-9)) << c;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Analyzers, AnalyzerPerChannel,
                         ::testing::Combine(::testing::ValuesIn(kNames), ::testing::Values(0, 1, -1)),
                         [](const auto& info) {
                           const int64_t axis = std::get<1>(info.param);
                           return std::get<0>(info.param) + "_axis" + (axis < 0 ? "m" : "") +
                                  std::to_string(std::abs(axis));
                         });

TEST(AnalyzerHistogram, AccumulationIsExactWhenTheFirstBatchCoversTheRange) {
  torch::manual_seed(7);
  const Tensor first = torch::randn({5000}, kF64);
  const Tensor second = torch::randn({5000}, kF64) * 0.5;
  const Tensor inside = second.clamp(first.min().item<double>(), first.max().item<double>());
  PercentileAnalyzer batched(std::nullopt, 99.0, 256);
  PercentileAnalyzer together(std::nullopt, 99.0, 256);
  batched.update(first);
  batched.update(inside);
  together.update(torch::cat({first, inside}));
  EXPECT_TRUE(torch::equal(batched.histogram(), together.histogram()));
  EXPECT_TRUE(torch::equal(batched.histogram_min(), together.histogram_min()));
  EXPECT_TRUE(torch::equal(batched.histogram_max(), together.histogram_max()));
}

TEST(AnalyzerHistogram, RebinningSpreadsEachOldBinUniformly) {
  // 0..4 in 4 bins of width 1: counts 1, 1, 1, 2. Adding -1 widens the span
  // to [-1, 4], edges -1, 0.25, 1.5, 2.75, 4, where the old piecewise-linear
  // CDF is 0, 0.25, 1.5, 2.75, 5; the -1 itself joins bin 0.
  PercentileAnalyzer analyzer(std::nullopt, 100.0, 4);
  analyzer.update(torch::arange(5, kF64));
  analyzer.update(torch::tensor({-1.0}, kF64));
  EXPECT_TRUE(torch::equal(analyzer.histogram(), torch::tensor({{1.25, 1.25, 1.25, 2.25}}, kF64)))
      << analyzer.histogram();
}

TEST(AnalyzerHistogram, RebinningStaysCloseToTheConcatenation) {
  torch::manual_seed(8);
  const Tensor first = torch::randn({20000}, kF64);
  const Tensor second = torch::randn({20000}, kF64) * 3;  // widens both ends
  PercentileAnalyzer batched(std::nullopt, 99.0, 512);
  PercentileAnalyzer together(std::nullopt, 99.0, 512);
  batched.update(first);
  batched.update(second);
  together.update(torch::cat({first, second}));
  EXPECT_TRUE(torch::equal(batched.histogram_min(), together.histogram_min()));
  EXPECT_TRUE(torch::equal(batched.histogram_max(), together.histogram_max()));
  EXPECT_NEAR(batched.histogram().sum().item<double>(), 40000.0, 1e-8);
  EXPECT_GE(batched.histogram().min().item<double>(), 0.0);
  // Re-binning moves mass by less than one bin, so the CDFs differ by at most
  // the mass of the two bins around an edge.
  const Tensor cdf_gap = batched.histogram().cumsum(1) - together.histogram().cumsum(1);
  EXPECT_LE(cdf_gap.abs().max().item<double>(), 2.0 * together.histogram().max().item<double>());
  const double bin = (together.histogram_max() - together.histogram_min()).item<double>() / 512;
  EXPECT_NEAR(lo_of(batched.range(QuantSpec{})), lo_of(together.range(QuantSpec{})), bin);
  EXPECT_NEAR(hi_of(batched.range(QuantSpec{})), hi_of(together.range(QuantSpec{})), bin);
}

TEST(AnalyzerHistogram, ConstantHistogramIsRebinnedAsAPointMass) {
  // The constant 5 must land where binning it directly would put it.
  const std::vector<std::pair<std::vector<double>, int64_t>> cases = {
      {{-3.0}, 7},        // span [-3, 5]: 5 is the maximum, last bin
      {{9.0}, 0},         // span [5, 9]: 5 is the minimum, first bin
      {{-3.0, 13.0}, 4},  // span [-3, 13], width 2: 5 starts bin 4
  };
  for (const auto& [widening, bin] : cases) {
    PercentileAnalyzer analyzer(std::nullopt, 100.0, 8);
    analyzer.update(torch::full({10}, 5.0, kF64));
    analyzer.update(torch::tensor(widening, kF64));
    PercentileAnalyzer direct(std::nullopt, 100.0, 8);
    direct.update(torch::cat({torch::full({10}, 5.0, kF64), torch::tensor(widening, kF64)}));
    EXPECT_TRUE(torch::equal(analyzer.histogram(), direct.histogram())) << analyzer.histogram();
    EXPECT_EQ(analyzer.histogram()[0][bin].item<double>(), 10.0);
  }
}

TEST(AnalyzerDegenerate, ZeroAndConstantTensorsGiveFiniteEncodings) {
  for (const auto& name : kNames) {
    for (double value : {0.0, 3.0, -2.0}) {
      for (const QuantSpec& spec :
           {spec_of(8, false, false), spec_of(8, true, true), spec_of(8, false, true)}) {
        auto analyzer = make_analyzer(name, std::nullopt);
        analyzer->update(torch::full({64}, value));
        analyzer->update(torch::full({2, 16}, value));
        const Range r = analyzer->range(spec);
        ASSERT_TRUE(std::isfinite(lo_of(r)) && std::isfinite(hi_of(r))) << name << " " << value;
        const Encoding enc = analyzer->compute_encoding(spec);
        const float s = enc.scale.item<float>();
        EXPECT_TRUE(std::isfinite(s) && s > 0.0f) << name << " " << value;
        EXPECT_TRUE(std::isfinite(enc.zero_point.item<float>())) << name << " " << value;
        // The value itself is represented, unless an unsigned symmetric grid
        // (non-negative by assumption) meets a negative value.
        if (!(spec.symmetric && !spec.grid.is_signed && value < 0)) {
          const float q = fake_quantize(torch::full({1}, static_cast<float>(value)), enc).item<float>();
          EXPECT_NEAR(q, value, s) << name << " " << value << " " << enc.to_string();
        }
      }
    }
  }
}

TEST(AnalyzerDegenerate, NonFiniteValuesAreIgnored) {
  torch::manual_seed(9);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor clean64 = torch::randn({1000}, kF64);
  const Tensor dirty64 = torch::cat({torch::tensor({nan, inf}, kF64), clean64, torch::tensor({-inf, nan}, kF64)});
  // float32 batches are reduced in float32, float64 ones in float64.
  for (const auto& [clean, dirty] : {std::make_pair(clean64, dirty64),
                                     std::make_pair(clean64.to(torch::kFloat), dirty64.to(torch::kFloat))})
  for (const auto& name : kNames) {
    auto reference = make_analyzer(name, std::nullopt);
    auto analyzer = make_analyzer(name, std::nullopt);
    reference->update(clean);
    analyzer->update(dirty);
    // An all-NaN batch changes nothing either.
    analyzer->update(torch::full({8}, nan, kF64));
    for (const QuantSpec& spec : {spec_of(8, false, false), spec_of(4, true, true)}) {
      EXPECT_EQ(lo_of(analyzer->range(spec)), lo_of(reference->range(spec))) << name;
      EXPECT_EQ(hi_of(analyzer->range(spec)), hi_of(reference->range(spec))) << name;
    }
    auto only_nan = make_analyzer(name, std::nullopt);
    only_nan->update(torch::full({8}, nan, kF64));
    EXPECT_EQ(lo_of(only_nan->range(QuantSpec{})), 0.0) << name;
    EXPECT_EQ(hi_of(only_nan->range(QuantSpec{})), 0.0) << name;
    EXPECT_GT(only_nan->compute_encoding(QuantSpec{}).scale.item<float>(), 0.0f) << name;
  }
}

TEST(AnalyzerDegenerate, RangeBeforeUpdateThrows) {
  for (const auto& name : kNames) {
    auto analyzer = make_analyzer(name, std::nullopt);
    EXPECT_THROW(analyzer->range(QuantSpec{}), std::logic_error) << name;
    EXPECT_THROW(analyzer->compute_encoding(QuantSpec{}), std::logic_error) << name;
  }
}

TEST(AnalyzerChannels, ChangedChannelCountThrowsWithBothCounts) {
  for (const auto& name : kNames) {
    auto analyzer = make_analyzer(name, 1);
    analyzer->update(torch::randn({2, 3}));
    try {
      analyzer->update(torch::randn({2, 7}));
      ADD_FAILURE() << name << " accepted 7 channels after 3";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find('7'), std::string::npos) << message;
      EXPECT_NE(message.find('3'), std::string::npos) << message;
    }
    EXPECT_THROW(analyzer->update(torch::randn({4})), std::invalid_argument) << name;  // axis 1 of rank 1
  }
}

TEST(AnalyzerChannels, ComputeEncodingChecksTheAxis) {
  torch::manual_seed(10);
  MinMaxAnalyzer analyzer(-1);
  analyzer.update(torch::randn({5, 3}));
  const Encoding enc = analyzer.compute_encoding(spec_of(8, false, false, 1));  // -1 is 1 here
  const Range r = analyzer.range(QuantSpec{});
  const Encoding expected = encoding_from_range(r.min, r.max, spec_of(8, false, false, 1));
  EXPECT_TRUE(torch::equal(enc.scale, expected.scale));
  EXPECT_TRUE(torch::equal(enc.zero_point, expected.zero_point));
  EXPECT_THROW(analyzer.compute_encoding(spec_of(8, false, false, 0)), std::invalid_argument);
  EXPECT_THROW(analyzer.compute_encoding(spec_of(8, false, false)), std::invalid_argument);
  MinMaxAnalyzer per_tensor;
  per_tensor.update(torch::randn({5, 3}));
  EXPECT_THROW(per_tensor.compute_encoding(spec_of(8, false, false, 0)), std::invalid_argument);
}

TEST(AnalyzerFactory, MakesEachKnownAnalyzer) {
  EXPECT_NE(dynamic_cast<MinMaxAnalyzer*>(make_analyzer("minmax", std::nullopt).get()), nullptr);
  EXPECT_NE(dynamic_cast<MovingAverageMinMaxAnalyzer*>(make_analyzer("ema", std::nullopt).get()), nullptr);
  EXPECT_NE(dynamic_cast<PercentileAnalyzer*>(make_analyzer("percentile", std::nullopt).get()), nullptr);
  EXPECT_NE(dynamic_cast<MseAnalyzer*>(make_analyzer("mse", std::nullopt).get()), nullptr);
  EXPECT_NE(dynamic_cast<MseAnalyzer*>(make_analyzer("sqnr", std::nullopt).get()), nullptr);
  EXPECT_EQ(make_analyzer("mse", 2)->channel_axis(), std::optional<int64_t>(2));
}

TEST(AnalyzerFactory, UnknownNameThrowsNamingIt) {
  try {
    make_analyzer("kl_divergence", std::nullopt);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'kl_divergence'"), std::string::npos) << e.what();
  }
}

TEST(AnalyzerFactory, RejectsInvalidParameters) {
  EXPECT_THROW(PercentileAnalyzer(std::nullopt, 49.9), std::invalid_argument);
  EXPECT_THROW(PercentileAnalyzer(std::nullopt, 100.1), std::invalid_argument);
  EXPECT_THROW(MseAnalyzer(std::nullopt, 0.0), std::invalid_argument);
  EXPECT_THROW(MseAnalyzer(std::nullopt, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(MovingAverageMinMaxAnalyzer(std::nullopt, 0.0), std::invalid_argument);
  EXPECT_THROW(MovingAverageMinMaxAnalyzer(std::nullopt, 1.5), std::invalid_argument);
}

}  // namespace
}  // namespace qat
