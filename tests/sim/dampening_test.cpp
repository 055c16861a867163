#include "qat/dampening.h"

#include "qat/builder.h"
#include "sim/batchnorm.h"
#include "sim_options.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

using torch::Tensor;

// L_d and its gradient for one per-channel 4-bit weight, against ATen's
// fake-quant and the grid's range written out.
TEST(Dampening, LossAndGradientOfAGemmWeight) {
  GraphBuilder b(2);
  b.output(b.linear(b.flatten(b.input("x", {-1, 6, 1, 1})), "fc", 4));
  QuantSim sim(b.build(), sim_options(4, 8), {1, 6, 1, 1});
  sim.compute_encodings([](GraphModule& m) { m.forward(torch::randn({8, 6, 1, 1})); });
  const Tensor w = sim.model().initializer("fc.weight");
  Quantizer& q = sim.quantizer("fc.weight_quantizer");
  const Encoding enc = q.encoding();
  ASSERT_TRUE(enc.spec.channel_axis.has_value());
  // Move the weights off their calibration range, so that some clamp.
  {
    torch::NoGradGuard no_grad;
    w.mul_(1.3);
  }
  const Tensor s = enc.scale.reshape({-1, 1}), zero = torch::zeros({4}, torch::kInt);
  const Tensor target = at::fake_quantize_per_channel_affine(w.detach(), enc.scale, zero, 0, -8, 7);
  const Tensor clamped = torch::min(torch::max(w.detach(), -8 * s), 7 * s);
  const double want = (target - clamped).pow(2).sum().item<double>();
  ASSERT_GT(want, 0.0);
  sim.set_range_learning(true, true);
  const Tensor loss = oscillation_dampening_loss(sim);
  EXPECT_NEAR(loss.item<double>(), want, 1e-6 * want);
  loss.backward();
  const Tensor inside = (w.detach() >= -8 * s) & (w.detach() <= 7 * s);
  ASSERT_FALSE(inside.all().item<bool>());
  EXPECT_TRUE(torch::allclose(w.grad(), 2 * (clamped - target) * inside, 1e-5, 1e-7));
  ASSERT_FALSE(q.encoding_parameters().empty());
  EXPECT_FALSE(q.encoding_parameters()[0].grad().defined()) << "the loss must not move the encodings";
}

// A conv with simulated BN: the quantizer sees the folded weight, and the
// gradient reaches the conv weight and the BN scale.
TEST(Dampening, SeesTheFoldedWeightOfAConvBn) {
  GraphBuilder b(3);
  b.output(b.batch_norm(b.conv(b.input("x", {-1, 2, 5, 5}), "conv", 3, 3), "bn"));
  QuantSim sim(b.build(), sim_options(4, 8), {1, 2, 5, 5});
  GraphModule& m = sim.model();
  {
    torch::NoGradGuard no_grad;
    m.initializer("bn.weight").copy_(torch::tensor({0.5f, 2.0f, -1.5f}));
    m.initializer("bn.running_var").copy_(torch::tensor({0.3f, 4.0f, 1.0f}));
  }
  sim.compute_encodings([](GraphModule& g) { g.forward(torch::randn({4, 2, 5, 5})); });
  const Tensor w = m.initializer("conv.weight");
  const Tensor folded = fold_conv_bn(w, torch::zeros({3}), m.initializer("bn.weight"), m.initializer("bn.bias"),
                                     m.initializer("bn.running_mean"), m.initializer("bn.running_var"), 1e-5)
                            .weight.detach();
  const Tensor target = sim.quantizer("conv.weight_quantizer").forward(folded);
  // Calibrated on the folded weight itself: nothing clamps.
  const double want = (target - folded).pow(2).sum().item<double>();
  const Tensor loss = oscillation_dampening_loss(sim);
  EXPECT_NEAR(loss.item<double>(), want, 1e-6 * want);
  loss.backward();
  EXPECT_GT(w.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(m.initializer("bn.weight").grad().abs().sum().item<double>(), 0.0);
}

TEST(Dampening, WeightRisesOnACosineFromZero) {
  EXPECT_EQ(dampening_weight(0.1, 0.0), 0.0);
  EXPECT_NEAR(dampening_weight(0.1, 0.5), 0.05, 1e-12);
  EXPECT_NEAR(dampening_weight(0.1, 1.0), 0.1, 1e-12);
  EXPECT_LT(dampening_weight(0.1, 0.25), 0.025);  // slow start
}

}  // namespace
}  // namespace qat
