#include "sim/unfold.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

using torch::Tensor;

struct Grads {
  Tensor y, dc, df, db;
};

// Runs op(c, f, b) and its backward against a fixed upstream gradient.
template <typename Op>
Grads run(const Op& op, const Tensor& c_in, const Tensor& f_in, const Tensor& b_in, const Tensor& g) {
  const Tensor c = c_in.clone().requires_grad_(), f = f_in.clone().requires_grad_(),
               b = b_in.clone().requires_grad_();
  const Tensor y = op(c, f, b);
  y.backward(g);
  return {y.detach(), c.grad(), f.grad(), b.grad()};
}

Tensor with_aten(const Tensor& c, const Tensor& f, const Tensor& b) {
  return c / f.reshape({1, -1, 1, 1}) + b.reshape({1, -1, 1, 1});
}

TEST(UnfoldConvOutput, MatchesATenOpsForwardAndBackward) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const auto opts = torch::TensorOptions().dtype(dtype);
    // 13 x 11 per row: runs that are not a multiple of the lane count.
    const Tensor c = torch::randn({5, 6, 13, 11}, opts) * 3;
    const Tensor f = torch::rand({6}, opts) + 0.2;
    const Tensor b = torch::randn({6}, opts);
    const Tensor g = torch::randn({5, 6, 13, 11}, opts);
    const Grads ours = run(unfold_conv_output, c, f, b, g);
    const Grads ref = run(with_aten, c, f, b, g);
    EXPECT_TRUE(torch::equal(ours.y, ref.y)) << dtype;
    EXPECT_TRUE(torch::equal(ours.dc, ref.dc)) << dtype;
    const double tol = dtype == torch::kFloat ? 1e-4 : 1e-10;
    EXPECT_TRUE(torch::allclose(ours.df, ref.df, tol, tol)) << ours.df << ref.df;
    EXPECT_TRUE(torch::allclose(ours.db, ref.db, tol, tol)) << ours.db << ref.db;
  }
}

TEST(UnfoldConvOutput, GradientsDoNotDependOnThreadCount) {
  torch::manual_seed(4);
  const Tensor c = torch::randn({64, 16, 28, 28}), f = torch::rand({16}) + 0.5, b = torch::randn({16});
  const Tensor g = torch::randn({64, 16, 28, 28});
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const Grads one = run(unfold_conv_output, c, f, b, g);
  at::set_num_threads(2);
  const Grads two = run(unfold_conv_output, c, f, b, g);
  at::set_num_threads(before);
  EXPECT_TRUE(torch::equal(one.df, two.df));
  EXPECT_TRUE(torch::equal(one.db, two.db));
}

}  // namespace
}  // namespace qat
