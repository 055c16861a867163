#include "qat/fake_quant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>

namespace qat {
namespace {

using torch::Tensor;

QuantSpec spec_of(int bits, bool is_signed, bool symmetric = false) {
  QuantSpec spec;
  spec.grid = {bits, is_signed, false};
  spec.symmetric = symmetric;
  return spec;
}

// Random values spanning the grid and beyond, plus exact ties: with a
// power-of-two scale, (k + 0.5) * s is exactly halfway between two codes.
Tensor test_input(std::vector<int64_t> shape, double scale, int64_t levels) {
  const double span = scale * static_cast<double>(levels);
  Tensor x = torch::randn(shape) * span;
  Tensor flat = x.view({-1});
  const int64_t n = flat.numel();
  const auto ties = (torch::randint(-levels, levels, {n / 4}).to(torch::kFloat) + 0.5) * scale;
  flat.slice(0, 0, n / 4).copy_(ties);
  // Far out of range, but within int64 after division: beyond that ATen's
  // float-to-int64 cast is undefined (SaturatesBeyondInt64 covers ours).
  flat.slice(0, n / 4, n / 4 + 8).copy_(torch::tensor({1e6f, -1e6f, 3e12f, -3e12f, 0.0f, -0.0f, 0.5f, -0.5f}));
  return x;
}

struct GridCase {
  int bits;
  bool is_signed;
};

class FakeQuantVsATen : public ::testing::TestWithParam<GridCase> {};

TEST_P(FakeQuantVsATen, PerTensorBitExact) {
  const auto [bits, is_signed] = GetParam();
  torch::manual_seed(bits * 2 + is_signed);
  const QuantSpec spec = spec_of(bits, is_signed);
  const int64_t qmin = spec.grid.qmin(), qmax = spec.grid.qmax();
  for (double scale : {0.0625, 0.013, 1.7}) {
    for (int64_t zero_point : {qmin, (qmin + qmax) / 2 + 1, qmax}) {
      const Tensor x = test_input({3, 5, 7, 11}, scale, qmax - qmin);
      Encoding enc{spec, torch::tensor(static_cast<float>(scale)),
                   torch::tensor(static_cast<float>(zero_point))};
      const Tensor ours = fake_quantize(x, enc);
      const Tensor ref = at::fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax);
      ASSERT_TRUE(torch::equal(ours, ref)) << "bits " << bits << " scale " << scale << " zp " << zero_point;
      const Tensor codes = quantize(x, enc);
      ASSERT_TRUE(torch::equal(dequantize(codes, enc), ref));
      ASSERT_TRUE(torch::equal(codes, codes.round()));
      ASSERT_LE(codes.max().item<float>(), qmax);
      ASSERT_GE(codes.min().item<float>(), qmin);
    }
  }
}

TEST_P(FakeQuantVsATen, PerChannelBitExactOnEveryAxis) {
  const auto [bits, is_signed] = GetParam();
  torch::manual_seed(100 + bits * 2 + is_signed);
  QuantSpec spec = spec_of(bits, is_signed);
  const int64_t qmin = spec.grid.qmin(), qmax = spec.grid.qmax();
  const std::vector<int64_t> shape{4, 6, 5, 3};
  for (int64_t axis = 0; axis < 4; ++axis) {
    const int64_t channels = shape[axis];
    const Tensor x = test_input(shape, 0.05, qmax - qmin);
    const Tensor scale = torch::rand({channels}) * 0.1 + 0.001;
    const Tensor zero_point = torch::randint(qmin, qmax + 1, {channels});
    spec.channel_axis = axis;
    Encoding enc{spec, scale, zero_point.to(torch::kFloat)};
    const Tensor ours = fake_quantize(x, enc);
    const Tensor ref = at::fake_quantize_per_channel_affine(x, scale, zero_point.to(torch::kInt), axis, qmin, qmax);
    ASSERT_TRUE(torch::equal(ours, ref)) << "axis " << axis;
    // A negative axis names the same dimension.
    spec.channel_axis = axis - 4;
    ASSERT_TRUE(torch::equal(fake_quantize(x, Encoding{spec, scale, zero_point.to(torch::kFloat)}), ref));
  }
}

// The STE mask our forward saves must pass exactly the elements ATen's
// does (ties and far out-of-range values included); quantize()'s gradient
// is the same mask times 1/s.
TEST_P(FakeQuantVsATen, SteGradientsBitExactPerTensorAndPerChannel) {
  const auto [bits, is_signed] = GetParam();
  torch::manual_seed(200 + bits * 2 + is_signed);
  QuantSpec spec = spec_of(bits, is_signed);
  const int64_t qmin = spec.grid.qmin(), qmax = spec.grid.qmax();
  const Tensor x = test_input({4, 6, 5, 3}, 0.0625, qmax - qmin).requires_grad_();
  const Tensor g = torch::randn({4, 6, 5, 3});
  const auto grad_of = [&](const Tensor& y) {
    x.mutable_grad() = Tensor();
    y.backward(g);
    return x.grad().clone();
  };
  const int64_t zero_point = (qmin + qmax) / 2 + 1;
  const Encoding enc{spec, torch::tensor(0.0625f), torch::tensor(static_cast<float>(zero_point))};
  const Tensor ref = grad_of(at::fake_quantize_per_tensor_affine(x, 0.0625, zero_point, qmin, qmax));
  ASSERT_TRUE(torch::equal(grad_of(fake_quantize(x, enc)), ref));
  ASSERT_TRUE(torch::equal(grad_of(quantize(x, enc)), ref / 0.0625));

  spec.channel_axis = 1;
  const Tensor scale = torch::rand({6}) * 0.1 + 0.001;
  const Tensor zero_points = torch::randint(qmin, qmax + 1, {6});
  const Tensor ref_pc =
      grad_of(at::fake_quantize_per_channel_affine(x, scale, zero_points.to(torch::kInt), 1, qmin, qmax));
  ASSERT_TRUE(torch::equal(grad_of(fake_quantize(x, Encoding{spec, scale, zero_points.to(torch::kFloat)})), ref_pc));
}

INSTANTIATE_TEST_SUITE_P(Grids, FakeQuantVsATen,
                         ::testing::Values(GridCase{2, true}, GridCase{2, false}, GridCase{4, true},
                                           GridCase{4, false}, GridCase{8, true}, GridCase{8, false},
                                           GridCase{16, true}, GridCase{16, false}));

TEST(FakeQuant, NonContiguousInputAndNaN) {
  const Tensor x = torch::randn({8, 16}).t();
  Encoding enc{spec_of(8, true), torch::tensor(0.02f), torch::tensor(0.0f)};
  EXPECT_TRUE(torch::equal(fake_quantize(x, enc), at::fake_quantize_per_tensor_affine(x, 0.02, 0, -128, 127)));
  const Tensor with_nan = torch::tensor({1.0f, std::nanf(""), -1.0f});
  EXPECT_TRUE(std::isnan(fake_quantize(with_nan, enc)[1].item<float>()));
}

TEST(FakeQuant, SaturatesBeyondInt64) {
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = torch::tensor({3e30f, -3e30f, inf, -inf});
  Encoding enc{spec_of(8, false), torch::tensor(0.01f), torch::tensor(10.0f)};
  const Tensor expected = torch::tensor({2.45f, -0.1f, 2.45f, -0.1f});
  EXPECT_TRUE(torch::allclose(fake_quantize(x, enc), expected)) << fake_quantize(x, enc);
  EXPECT_TRUE(torch::equal(quantize(x, enc), torch::tensor({255.0f, 0.0f, 255.0f, 0.0f})));
}

TEST(FakeQuant, RejectsBadScalesAndShapes) {
  const Tensor x = torch::randn({4, 3});
  EXPECT_THROW(fake_quantize(x, Encoding{spec_of(8, true), torch::tensor(0.0f), torch::tensor(0.0f)}),
               std::invalid_argument);
  QuantSpec per_channel = spec_of(8, true);
  per_channel.channel_axis = 1;
  EXPECT_THROW(fake_quantize(x, Encoding{per_channel, torch::ones({4}), torch::zeros({4})}),
               std::invalid_argument);
  per_channel.channel_axis = 2;
  EXPECT_THROW(fake_quantize(x, Encoding{per_channel, torch::ones({3}), torch::zeros({3})}),
               std::invalid_argument);
  EXPECT_THROW(fake_quantize(x.to(torch::kInt), Encoding{spec_of(8, true), torch::tensor(1.0f), torch::tensor(0.0f)}),
               std::invalid_argument);
}

// ---- gradients -------------------------------------------------------------

// The function whose derivative the straight-through estimator defines.
// At the base point u0 = x/s0, rounding residual r = round(u0) - u0 and
// which elements clamp (and to which bound) are frozen; then
//   f = s * (x/s + r)        for elements on the grid,
//   f = s * (bound - z)      for clamped ones,
// is smooth in x, s and z, so central differences apply everywhere.
struct Surrogate {
  Tensor residual, inside, bound;
  Surrogate(const Tensor& x, const Tensor& s, const Tensor& z, double qmin, double qmax) {
    const Tensor u = x / s;
    residual = u.round() - u;
    const Tensor code = u.round() + z;
    inside = (code >= qmin).logical_and(code <= qmax);
    bound = torch::where(code < qmin, torch::full_like(code, qmin), torch::full_like(code, qmax));
  }
  Tensor operator()(const Tensor& x, const Tensor& s, const Tensor& z) const {
    return torch::where(inside, s * (x / s + residual), s * (bound - z));
  }
};

double central_difference(const std::function<double(double)>& f, double h) {
  return (f(h) - f(-h)) / (2 * h);
}

TEST(FakeQuantGrad, SteInputGradientMatchesFiniteDifferences) {
  torch::manual_seed(11);
  QuantSpec spec = spec_of(4, false);
  spec.channel_axis = 1;
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor x = (torch::randn({2, 3, 5}, opts) * 0.6).requires_grad_();
  const Tensor scale = torch::tensor({0.05, 0.1, 0.07}, opts);
  const Tensor zero_point = torch::tensor({3.0, 8.0, 12.0}, opts);
  Encoding enc{spec, scale, zero_point};
  const Tensor weights = torch::randn({2, 3, 5}, opts);
  (fake_quantize(x, enc) * weights).sum().backward();

  const Tensor s_b = broadcast_along(scale, 3, 1), z_b = broadcast_along(zero_point, 3, 1);
  const Surrogate surrogate(x.detach(), s_b, z_b, 0, 15);
  const Tensor fd = torch::empty_like(x);
  for (int64_t i = 0; i < x.numel(); ++i) {
    fd.view({-1})[i] = central_difference(
        [&](double h) {
          Tensor xp = x.detach().clone();
          xp.view({-1})[i] += h;
          return (surrogate(xp, s_b, z_b) * weights).sum().item<double>();
        },
        1e-7);
  }
  EXPECT_TRUE(torch::allclose(x.grad(), fd, 1e-6, 1e-8)) << x.grad() << fd;
  // Some elements fall outside the grid, so the mask is exercised.
  EXPECT_TRUE((x.grad() == 0).any().item<bool>());

  // quantize's STE gradient is the same mask divided by the scale.
  const Tensor x2 = x.detach().clone().requires_grad_();
  (quantize(x2, enc) * weights).sum().backward();
  EXPECT_TRUE(torch::allclose(x2.grad(), x.grad() / s_b, 1e-12, 1e-12));
}

// Gradients of sum(fake_quant(x) * w) with respect to scale and zero point,
// by central differences on the surrogate.
std::pair<Tensor, Tensor> range_gradients_fd(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                                             const Tensor& weights, std::optional<int64_t> axis, double qmin,
                                             double qmax) {
  const int64_t dim = x.dim();
  const Surrogate surrogate(x, broadcast_along(scale, dim, axis), broadcast_along(zero_point, dim, axis), qmin,
                            qmax);
  auto loss = [&](const Tensor& s, const Tensor& z) {
    return (surrogate(x, broadcast_along(s, dim, axis), broadcast_along(z, dim, axis)) * weights)
        .sum()
        .item<double>();
  };
  Tensor ds = torch::empty_like(scale), dz = torch::empty_like(zero_point);
  for (int64_t c = 0; c < scale.numel(); ++c) {
    ds.view({-1})[c] = central_difference(
        [&](double h) {
          Tensor s = scale.clone();
          s.view({-1})[c] += h;
          return loss(s, zero_point);
        },
        1e-9);
    dz.view({-1})[c] = central_difference(
        [&](double h) {
          Tensor z = zero_point.clone();
          z.view({-1})[c] += h;
          return loss(scale, z);
        },
        1e-7);
  }
  return {ds, dz};
}

TEST(FakeQuantGrad, LsqRangeGradientsMatchFiniteDifferencesPerTensor) {
  torch::manual_seed(12);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const QuantSpec spec = spec_of(3, true);
  const Tensor x = torch::randn({64}, opts);
  const Tensor weights = torch::randn({64}, opts);
  const Tensor scale = torch::tensor(0.3, opts).requires_grad_();
  const Tensor zero_point = torch::tensor(1.0, opts).requires_grad_();
  (fake_quantize_learnable(x, scale, zero_point, spec) * weights).sum().backward();
  const auto [ds, dz] = range_gradients_fd(x, scale.detach(), zero_point.detach(), weights, std::nullopt, -4, 3);
  EXPECT_NEAR(scale.grad().item<double>(), ds.item<double>(), 1e-5);
  EXPECT_NEAR(zero_point.grad().item<double>(), dz.item<double>(), 1e-5);
  EXPECT_NE(zero_point.grad().item<double>(), 0.0);  // some values clamp
}

TEST(FakeQuantGrad, LsqRangeGradientsMatchFiniteDifferencesPerChannel) {
  torch::manual_seed(13);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  QuantSpec spec = spec_of(4, false);
  spec.channel_axis = 0;
  const Tensor x = torch::randn({5, 3, 4}, opts);
  const Tensor weights = torch::randn({5, 3, 4}, opts);
  const Tensor scale = (torch::rand({5}, opts) * 0.2 + 0.05).requires_grad_();
  const Tensor zero_point = torch::tensor({2.0, 5.0, 8.0, 10.0, 13.0}, opts).requires_grad_();
  const double factor = 0.37;
  (fake_quantize_learnable(x, scale, zero_point, spec, factor) * weights).sum().backward();
  const auto [ds, dz] = range_gradients_fd(x, scale.detach(), zero_point.detach(), weights, 0, 0, 15);
  EXPECT_TRUE(torch::allclose(scale.grad(), ds * factor, 1e-5, 1e-7)) << scale.grad() << ds * factor;
  EXPECT_TRUE(torch::allclose(zero_point.grad(), dz * factor, 1e-5, 1e-7)) << zero_point.grad() << dz * factor;
}

TEST(FakeQuantGrad, LsqMatchesATenLearnablePerTensor) {
  torch::manual_seed(14);
  for (int bits : {4, 8}) {
    const QuantSpec spec = spec_of(bits, false);
    const int64_t qmax = spec.grid.qmax();
    const Tensor x = (torch::randn({8, 16, 12, 12}) * 2).requires_grad_();
    const Tensor g = torch::randn({8, 16, 12, 12});
    const double factor = lsq_grad_factor(x, spec);
    const Tensor scale = torch::tensor({4.0f / qmax}).requires_grad_();
    const Tensor zero_point = torch::tensor({static_cast<float>(qmax / 2)}).requires_grad_();
    const Tensor ours = fake_quantize_learnable(x, scale, zero_point, spec, factor);
    ours.backward(g);

    const Tensor x_ref = x.detach().clone().requires_grad_();
    const Tensor scale_ref = scale.detach().clone().requires_grad_();
    const Tensor zp_ref = zero_point.detach().clone().requires_grad_();
    const Tensor ref = at::_fake_quantize_learnable_per_tensor_affine(x_ref, scale_ref, zp_ref, 0, qmax, factor);
    ref.backward(g);
    ASSERT_TRUE(torch::equal(ours, ref));
    EXPECT_TRUE(torch::equal(x.grad(), x_ref.grad()));
    EXPECT_TRUE(torch::allclose(scale.grad(), scale_ref.grad(), 1e-4, 1e-6)) << scale.grad() << scale_ref.grad();
    EXPECT_TRUE(torch::allclose(zero_point.grad(), zp_ref.grad(), 1e-4, 1e-6)) << zero_point.grad() << zp_ref.grad();
  }
}

TEST(FakeQuantGrad, LsqMatchesATenLearnablePerChannel) {
  torch::manual_seed(15);
  QuantSpec spec = spec_of(8, true);
  spec.channel_axis = 1;
  const Tensor x = (torch::randn({8, 16, 10, 10}) * 3).requires_grad_();
  const Tensor g = torch::randn({8, 16, 10, 10});
  const Tensor scale = (torch::rand({16}) * 0.03 + 0.005).requires_grad_();
  const Tensor zero_point = torch::randint(-20, 20, {16}).to(torch::kFloat).requires_grad_();
  const Tensor ours = fake_quantize_learnable(x, scale, zero_point, spec, 1.0);
  ours.backward(g);

  const Tensor x_ref = x.detach().clone().requires_grad_();
  const Tensor scale_ref = scale.detach().clone().requires_grad_();
  const Tensor zp_ref = zero_point.detach().clone().requires_grad_();
  const Tensor ref = at::_fake_quantize_learnable_per_channel_affine(x_ref, scale_ref, zp_ref, 1, -128, 127, 1.0);
  ref.backward(g);
  ASSERT_TRUE(torch::equal(ours, ref));
  EXPECT_TRUE(torch::equal(x.grad(), x_ref.grad()));
  EXPECT_TRUE(torch::allclose(scale.grad(), scale_ref.grad(), 1e-4, 1e-4)) << scale.grad() << scale_ref.grad();
  EXPECT_TRUE(torch::allclose(zero_point.grad(), zp_ref.grad(), 1e-4, 1e-4)) << zero_point.grad() << zp_ref.grad();
}

TEST(FakeQuantGrad, LsqGradientsDoNotDependOnThreadCount) {
  torch::manual_seed(16);
  QuantSpec spec = spec_of(8, false);
  const Tensor x = torch::randn({300000});
  const Tensor g = torch::randn({300000});
  auto run = [&](int threads) {
    at::set_num_threads(threads);
    const Tensor scale = torch::tensor(0.01f).requires_grad_();
    const Tensor zero_point = torch::tensor(128.0f).requires_grad_();
    fake_quantize_learnable(x, scale, zero_point, spec).backward(g);
    return std::make_pair(scale.grad().item<float>(), zero_point.grad().item<float>());
  };
  const int before = at::get_num_threads();
  const auto one = run(1);
  const auto two = run(2);
  at::set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(FakeQuantGrad, MinMaxGradientsMatchFiniteDifferences) {
  torch::manual_seed(17);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  for (bool symmetric : {false, true}) {
    const QuantSpec spec = spec_of(4, true, symmetric);
    const Tensor x = torch::randn({200}, opts) * 1.5;
    const Tensor weights = torch::randn({200}, opts);
    const Tensor lo = torch::tensor(-2.2, opts).requires_grad_();
    const Tensor hi = torch::tensor(1.9, opts).requires_grad_();
    (fake_quantize_min_max(x, lo, hi, spec) * weights).sum().backward();
    // Reference: the same surrogate, with s and z written as functions of
    // the bounds and the zero point's rounding frozen.
    const double qmin = spec.grid.qmin(), qmax = spec.grid.qmax();
    const double z_residual = std::nearbyint(-2.2 / ((1.9 + 2.2) / 15)) - (-2.2 / ((1.9 + 2.2) / 15));
    auto params = [&](double l, double h) {
      if (symmetric) return std::make_pair(std::max(-l, h) / qmax, 0.0);
      const double s = (h - l) / (qmax - qmin);
      return std::make_pair(s, qmin - (l / s + z_residual));
    };
    const auto [s0, z0] = params(-2.2, 1.9);
    const Surrogate surrogate(x, torch::tensor(s0, opts), torch::tensor(z0, opts), qmin, qmax);
    auto loss = [&](double l, double h) {
      const auto [s, z] = params(l, h);
      return (surrogate(x, torch::tensor(s, opts), torch::tensor(z, opts)) * weights)
          .sum()
          .item<double>();
    };
    const double d_lo = central_difference([&](double e) { return loss(-2.2 + e, 1.9); }, 1e-8);
    const double d_hi = central_difference([&](double e) { return loss(-2.2, 1.9 + e); }, 1e-8);
    EXPECT_NEAR(lo.grad().item<double>(), d_lo, 1e-5) << "symmetric " << symmetric;
    EXPECT_NEAR(hi.grad().item<double>(), d_hi, 1e-5) << "symmetric " << symmetric;
  }
}

// A fused activation against the activation run on its own: ATen's relu or
// clamp, then ATen's fake-quant (values and STE gradient), or then the
// unfused LSQ op (values and every gradient). Inputs sit on and next to the
// activation's bounds, on signed zeros, denormals and infinities, and at
// random around the grid.
struct ActivationCase {
  const char* name;
  FusedActivation activation;
  std::function<Tensor(const Tensor&)> reference;
};

// Infinities only where the reference is ours: ATen's fake-quant casts
// x / s to int64 first, undefined for infinities (SaturatesBeyondInt64).
Tensor activation_test_input(double lo, double hi, int64_t n, bool infinities) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special{0.0f, -0.0f, 1e-45f, -1e-45f};
  if (infinities) special.insert(special.end(), {inf, -inf});
  for (double bound : {lo, hi}) {
    const float b = static_cast<float>(bound);
    special.insert(special.end(), {b, std::nextafter(b, inf), std::nextafter(b, -inf)});
  }
  Tensor x = torch::randn({n}) * 3;
  x.slice(0, 0, static_cast<int64_t>(special.size())).copy_(torch::tensor(special));
  return x;
}

std::vector<ActivationCase> activation_cases() {
  return {{"relu", FusedActivation::relu(), [](const Tensor& x) { return torch::relu(x); }},
          {"relu6", FusedActivation::clip(0.0, 6.0), [](const Tensor& x) { return torch::clamp(x, 0.0, 6.0); }},
          {"clip", FusedActivation::clip(-1.3, 0.7), [](const Tensor& x) { return torch::clamp(x, -1.3, 0.7); }}};
}

TEST(FusedActivation, FakeQuantAndSteGradientEqualTheActivationThenATen) {
  torch::manual_seed(18);
  for (const auto& c : activation_cases()) {
    for (int bits : {4, 8}) {
      const QuantSpec spec = spec_of(bits, false);
      const int64_t qmin = spec.grid.qmin(), qmax = spec.grid.qmax();
      const Tensor x = activation_test_input(c.activation.lo, c.activation.hi, 4096, false).reshape({4, 8, 128});
      const Tensor g = torch::randn({4, 8, 128});
      const double scale = 4.0 / static_cast<double>(qmax);
      const int64_t zero_point = bits == 4 ? 3 : 20;
      const Encoding enc{spec, torch::tensor(static_cast<float>(scale)), torch::tensor(static_cast<float>(zero_point))};
      const Tensor x_ours = x.clone().requires_grad_(), x_ref = x.clone().requires_grad_();
      const Tensor ours = fake_quantize(x_ours, enc, c.activation);
      const Tensor ref = at::fake_quantize_per_tensor_affine(c.reference(x_ref), scale, zero_point, qmin, qmax);
      ASSERT_TRUE(torch::equal(ours, ref)) << c.name << " bits " << bits;
      ours.backward(g);
      ref.backward(g);
      ASSERT_TRUE(torch::equal(x_ours.grad(), x_ref.grad())) << c.name << " bits " << bits;
      // Without a gradient to compute, the same values through the maskless loop.
      torch::NoGradGuard no_grad;
      ASSERT_TRUE(torch::equal(fake_quantize(x, enc, c.activation), ref)) << c.name;
    }
    // Per channel, along axis 1.
    QuantSpec spec = spec_of(8, true);
    spec.channel_axis = 1;
    const Tensor x = activation_test_input(c.activation.lo, c.activation.hi, 4096, false).reshape({4, 8, 128});
    const Tensor scale = torch::rand({8}) * 0.05 + 0.01;
    const Tensor zero_point = torch::randint(-5, 5, {8});
    const Tensor ours = fake_quantize(x, Encoding{spec, scale, zero_point.to(torch::kFloat)}, c.activation);
    const Tensor ref =
        at::fake_quantize_per_channel_affine(c.reference(x), scale, zero_point.to(torch::kInt), 1, -128, 127);
    ASSERT_TRUE(torch::equal(ours, ref)) << c.name << " per channel";
  }
}

TEST(FusedActivation, LsqGradientsEqualTheActivationThenLsq) {
  torch::manual_seed(19);
  for (const auto& c : activation_cases()) {
    QuantSpec spec = spec_of(4, false);
    const Tensor x = activation_test_input(c.activation.lo, c.activation.hi, 6000, true).reshape({2, 3, 1000});
    const Tensor g = torch::randn({2, 3, 1000});
    const auto run = [&](bool fused) {
      const Tensor xs = x.clone().requires_grad_();
      const Tensor scale = torch::tensor({0.3f}).requires_grad_();
      const Tensor zero_point = torch::tensor({4.0f}).requires_grad_();
      const Tensor y = fused ? fake_quantize_learnable(xs, scale, zero_point, spec, 0.1, c.activation)
                             : fake_quantize_learnable(c.reference(xs), scale, zero_point, spec, 0.1);
      y.backward(g);
      return std::vector<Tensor>{y.detach(), xs.grad(), scale.grad(), zero_point.grad()};
    };
    const auto ours = run(true), ref = run(false);
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_TRUE(torch::equal(ours[i], ref[i])) << c.name << " output " << i;
    }
  }
}

// The one-pass value and backward equal the op's forward and backward,
// per tensor and per channel (runs split at channel and chunk edges).
TEST(FakeQuantGrad, LearnablePassEqualsForwardThenBackward) {
  torch::manual_seed(20);
  for (bool per_channel : {false, true}) {
    QuantSpec spec = spec_of(4, false);
    if (per_channel) spec.channel_axis = 1;
    const int64_t channels = per_channel ? 5 : 1;
    const Tensor x = torch::randn({3, 5, 7001}) * 2;  // runs of 7001: not a multiple of the chunk
    const Tensor grad = torch::randn({3, 5, 7001});
    const Tensor scale = (torch::rand({channels}) * 0.2 + 0.1).requires_grad_();
    const Tensor zero_point = torch::randint(0, 15, {channels}).to(torch::kFloat).requires_grad_();
    const FusedActivation relu6 = FusedActivation::clip(0.0, 6.0);
    const Tensor xs = x.clone().requires_grad_();
    const Tensor y = fake_quantize_learnable(xs, scale, zero_point, spec, 0.3, relu6);
    y.backward(grad);
    const LearnableFakeQuantPass pass = fake_quantize_learnable_pass(x, grad, scale, zero_point, spec, 0.3, relu6);
    EXPECT_TRUE(torch::equal(pass.value, y.detach())) << per_channel;
    EXPECT_TRUE(torch::equal(pass.grad_x, xs.grad())) << per_channel;
    EXPECT_TRUE(torch::equal(pass.grad_scale, scale.grad())) << per_channel;
    EXPECT_TRUE(torch::equal(pass.grad_zero_point, zero_point.grad())) << per_channel;
  }
}

TEST(FusedActivation, NanStaysNanWithoutGradient) {
  const Encoding enc{spec_of(8, false), torch::tensor(0.05f), torch::tensor(10.0f)};
  for (const auto& c : activation_cases()) {
    const Tensor x = torch::tensor({std::nanf(""), 0.5f}).requires_grad_();
    const Tensor y = fake_quantize(x, enc, c.activation);
    EXPECT_TRUE(std::isnan(y[0].item<float>())) << c.name;
    y.sum().backward();
    EXPECT_EQ(x.grad()[0].item<float>(), 0.0f) << c.name;
    EXPECT_EQ(x.grad()[1].item<float>(), 1.0f) << c.name;
  }
}

}  // namespace
}  // namespace qat
