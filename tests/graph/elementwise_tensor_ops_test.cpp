// Kernels of ops_elementwise.cpp and ops_tensor.cpp, for what the ONNX
// node conformance data leaves out: attribute forms of older opsets, ops
// whose test cases predate opset 11, edge cases of Slice and Pad, and
// gradients.
#include "qat/graph.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

namespace qat {
namespace {

using torch::Tensor;
using Attributes = std::map<std::string, AttributeValue>;

// Runs one `op` node on `inputs`; an undefined tensor is an omitted input.
std::vector<Tensor> run_op(const std::string& op, const std::vector<Tensor>& inputs, Attributes attributes = {},
                           size_t outputs = 1, int64_t opset = 13) {
  Graph g;
  g.opset = opset;
  Node node;
  node.name = "n";
  node.op_type = op;
  node.attributes = std::move(attributes);
  std::vector<Tensor> graph_inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      node.inputs.push_back("");
      continue;
    }
    node.inputs.push_back("in" + std::to_string(i));
    g.inputs.push_back({node.inputs.back(), inputs[i].sizes().vec(), inputs[i].scalar_type()});
    graph_inputs.push_back(inputs[i]);
  }
  for (size_t i = 0; i < outputs; ++i) node.outputs.push_back("out" + std::to_string(i));
  g.outputs = node.outputs;
  g.nodes.push_back(std::move(node));
  GraphModule module(std::move(g));
  return module.run(graph_inputs);
}

Tensor run1(const std::string& op, const std::vector<Tensor>& inputs, Attributes attributes = {}, int64_t opset = 13) {
  return run_op(op, inputs, std::move(attributes), 1, opset)[0];
}

Tensor ints(std::vector<int64_t> values) { return torch::tensor(values, torch::kLong); }

// The message of the error running `op` throws.
std::string error_of(const std::string& op, const std::vector<Tensor>& inputs, Attributes attributes = {}) {
  try {
    run_op(op, inputs, std::move(attributes));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ElementwiseOps, ClipTakesBoundsFromInputsOrOldAttributes) {
  const Tensor x = torch::tensor({-3.0f, -0.5f, 0.5f, 3.0f});
  EXPECT_TRUE(torch::equal(run1("Clip", {x}, {{"min", -1.0}, {"max", 1.0}}, 6), x.clamp(-1, 1)));
  EXPECT_TRUE(torch::equal(run1("Clip", {x, torch::tensor(0.0f)}), x.clamp_min(0)));
  EXPECT_TRUE(torch::equal(run1("Clip", {x, Tensor(), torch::tensor(1.0f)}), x.clamp_max(1)));
  EXPECT_TRUE(torch::equal(run1("Clip", {x}), x));
}

// Clip's own kernel (constant bounds, x needing a gradient) against ATen's
// clamp: values and gradients equal, at the bounds, on NaN and infinities,
// with bounds crossed, in float and double, on a tensor long enough for the
// vector loops and several threads' chunks.
TEST(ElementwiseOps, ClipGradientEqualsAtenClamp) {
  torch::manual_seed(7);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Tensor edges = torch::tensor({nan, -inf, inf, 0.0f, -0.0f, 6.0f, 5.9999995f, -1e-30f, 6.0000005f});
  const Tensor x = torch::cat({edges, torch::randn({200003}) * 4 + 3});
  const Tensor grad_out = torch::randn_like(x);
  grad_out[1] = nan;  // an upstream NaN where x is clipped: ATen's where() drops it
  struct Bounds {
    Tensor lo, hi;
  };
  const std::vector<Bounds> cases = {{torch::tensor(0.0f), torch::tensor(6.0f)},
                                     {torch::tensor(-1.5f), Tensor()},
                                     {Tensor(), torch::tensor(0.25f)},
                                     {torch::tensor(2.0f), torch::tensor(1.0f)}};
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const Bounds& b : cases) {
      const auto cast = [&](const Tensor& t) { return t.defined() ? t.to(dtype) : t; };
      const Tensor xg = x.to(dtype).requires_grad_();
      const Tensor y = run1("Clip", {xg, cast(b.lo), cast(b.hi)});
      const Tensor g = torch::autograd::grad({y}, {xg}, {grad_out.to(dtype)})[0];
      const Tensor xr = x.to(dtype).requires_grad_();
      const auto bound = [&](const Tensor& t) { return t.defined() ? c10::optional<Tensor>(cast(t)) : c10::nullopt; };
      const Tensor r = torch::clamp(xr, bound(b.lo), bound(b.hi));
      const Tensor expected = torch::autograd::grad({r}, {xr}, {grad_out.to(dtype)})[0];
      EXPECT_TRUE(torch::equal(y.isnan(), r.isnan()));
      EXPECT_TRUE(torch::equal(y.nan_to_num(), r.nan_to_num()));
      EXPECT_TRUE(torch::equal(g.nan_to_num(), expected.nan_to_num()));
      EXPECT_TRUE(torch::equal(g.isnan(), expected.isnan()));
    }
  }
}

TEST(ElementwiseOps, HardSigmoidAndHardSwish) {
  const Tensor x = torch::linspace(-5, 5, 41);
  EXPECT_TRUE(torch::allclose(run1("HardSigmoid", {x}), (x * 0.2 + 0.5).clamp(0, 1)));
  EXPECT_TRUE(torch::allclose(run1("HardSigmoid", {x}, {{"alpha", 1.0 / 6}}), torch::hardsigmoid(x)));
  EXPECT_TRUE(torch::allclose(run1("HardSwish", {x}), torch::hardswish(x)));
}

TEST(ElementwiseOps, IntegerDivisionTruncatesTowardZero) {
  EXPECT_TRUE(torch::equal(run1("Div", {ints({-7, 7, -6}), ints({2, -2, 4})}), ints({-3, -3, -1})));
  EXPECT_TRUE(torch::equal(run1("Div", {torch::tensor({-7.0f}), torch::tensor({2.0f})}), torch::tensor({-3.5f})));
}

TEST(ElementwiseOps, PowHasTheBaseType) {
  const Tensor y = run1("Pow", {torch::tensor({2, 3}, torch::kInt), torch::tensor({0.5f, 2.0f})});
  EXPECT_TRUE(torch::equal(y, torch::tensor({1, 9}, torch::kInt)));
}

TEST(ElementwiseOps, ConstantScalarAndListForms) {
  const Tensor f = run1("Constant", {}, {{"value_float", 0.25}});
  EXPECT_EQ(f.dim(), 0);
  EXPECT_EQ(f.scalar_type(), torch::kFloat);
  EXPECT_EQ(f.item<float>(), 0.25f);
  EXPECT_TRUE(torch::equal(run1("Constant", {}, {{"value_ints", std::vector<int64_t>{1, -1}}}), ints({1, -1})));
  EXPECT_TRUE(torch::equal(run1("Constant", {}, {{"value_int", int64_t{7}}}), torch::tensor(7, torch::kLong)));
  EXPECT_TRUE(torch::equal(run1("Constant", {}, {{"value_floats", std::vector<double>{1.5, 2}}}),
                           torch::tensor({1.5f, 2.0f})));
  EXPECT_NE(error_of("Constant", {}).find("Constant node 'n'"), std::string::npos);
}

TEST(ElementwiseOps, LogicalOps) {
  const Tensor a = torch::tensor({true, true, false, false}), b = torch::tensor({true, false, true, false});
  EXPECT_TRUE(torch::equal(run1("And", {a, b}), torch::tensor({true, false, false, false})));
  EXPECT_TRUE(torch::equal(run1("Or", {a, b}), torch::tensor({true, true, true, false})));
  EXPECT_TRUE(torch::equal(run1("Xor", {a, b}), torch::tensor({false, true, true, false})));
  EXPECT_TRUE(torch::equal(run1("Not", {a}), torch::tensor({false, false, true, true})));
}

TEST(TensorOps, ConstantOfShape) {
  const Tensor zeros = run1("ConstantOfShape", {ints({2, 3})});
  EXPECT_TRUE(torch::equal(zeros, torch::zeros({2, 3})));
  const Tensor sevens = run1("ConstantOfShape", {ints({4})}, {{"value", torch::tensor({7}, torch::kInt)}});
  EXPECT_TRUE(torch::equal(sevens, torch::full({4}, 7, torch::kInt)));
}

TEST(TensorOps, SplitSizesFromInputAttributeOrEqualParts) {
  const Tensor x = torch::arange(6);
  auto parts = run_op("Split", {x}, {{"split", std::vector<int64_t>{1, 5}}}, 2, 11);
  EXPECT_TRUE(torch::equal(parts[1], torch::arange(1, 6)));
  parts = run_op("Split", {x, ints({4, 2})}, {}, 2);
  EXPECT_TRUE(torch::equal(parts[0], torch::arange(4)));
  parts = run_op("Split", {x}, {}, 3);
  EXPECT_TRUE(torch::equal(parts[2], torch::arange(4, 6)));
  EXPECT_THROW(run_op("Split", {x}, {}, 4), std::runtime_error);
}

TEST(TensorOps, SqueezeAndUnsqueezeAxesAsAttribute) {
  const Tensor x = torch::zeros({1, 3, 1});
  EXPECT_EQ(run1("Squeeze", {x}, {{"axes", std::vector<int64_t>{-1}}}, 11).sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(run1("Squeeze", {x}, {}, 11).sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(run1("Unsqueeze", {x}, {{"axes", std::vector<int64_t>{0, -1}}}, 11).sizes(),
            (std::vector<int64_t>{1, 1, 3, 1, 1}));
  const std::string error = error_of("Squeeze", {x, ints({1})});
  EXPECT_NE(error.find("Squeeze node 'n'"), std::string::npos) << error;
  EXPECT_NE(error.find("size 3"), std::string::npos) << error;
}

TEST(TensorOps, SliceClampsLikeOnnx) {
  const Tensor x = torch::arange(10);
  const int64_t max = std::numeric_limits<int64_t>::max(), min = std::numeric_limits<int64_t>::min();
  auto slice = [&](int64_t start, int64_t end, int64_t step) {
    return run1("Slice", {x, ints({start}), ints({end}), ints({0}), ints({step})});
  };
  EXPECT_TRUE(torch::equal(slice(-1, min, -1), x.flip(0)));
  EXPECT_TRUE(torch::equal(slice(100, -100, -3), ints({9, 6, 3, 0})));
  EXPECT_TRUE(torch::equal(slice(7, 2, -2), ints({7, 5, 3})));
  EXPECT_TRUE(torch::equal(slice(2, max, 3), ints({2, 5, 8})));
  EXPECT_EQ(slice(2, 7, -1).numel(), 0);
  EXPECT_EQ(slice(7, 2, 1).numel(), 0);
}

TEST(TensorOps, PadModesMatchNumpy) {
  const Tensor x = torch::arange(1, 4, torch::kFloat);  // [1, 2, 3]
  auto pad = [&](const std::string& mode, std::vector<int64_t> pads) {
    return run1("Pad", {x, ints(std::move(pads))}, {{"mode", mode}});
  };
  // numpy.pad([1, 2, 3], (3, 2), mode) and cropping by negative pads.
  EXPECT_TRUE(torch::equal(pad("reflect", {3, 2}), torch::tensor({2.0f, 3.0f, 2.0f, 1.0f, 2.0f, 3.0f, 2.0f, 1.0f})));
  EXPECT_TRUE(torch::equal(pad("edge", {2, 1}), torch::tensor({1.0f, 1.0f, 1.0f, 2.0f, 3.0f, 3.0f})));
  EXPECT_TRUE(torch::equal(pad("edge", {-1, 1}), torch::tensor({2.0f, 3.0f, 3.0f})));
  EXPECT_TRUE(torch::equal(pad("constant", {1, -1}), torch::tensor({0.0f, 1.0f, 2.0f})));
  const Tensor filled = run1("Pad", {x, ints({1, 0}), torch::tensor(9.0f)});
  EXPECT_TRUE(torch::equal(filled, torch::tensor({9.0f, 1.0f, 2.0f, 3.0f})));
  // All axes of a 3-D tensor, which torch's reflection_pad cannot do.
  const Tensor cube = torch::randn({2, 3, 4});
  const Tensor padded = run1("Pad", {cube, ints({1, 1, 2, 1, 1, 1})}, {{"mode", std::string("reflect")}});
  const Tensor rows = torch::reflection_pad1d(cube.permute({1, 2, 0}), {1, 1}).permute({2, 0, 1});
  EXPECT_TRUE(torch::equal(padded, torch::reflection_pad2d(rows, {2, 1, 1, 1})));
}

TEST(TensorOps, ReduceMeanAxesKeepdimsAndEmptyAxes) {
  const Tensor x = torch::randn({2, 3, 4});
  EXPECT_TRUE(torch::allclose(run1("ReduceMean", {x}, {{"axes", std::vector<int64_t>{-1, 0}}, {"keepdims", int64_t{0}}}),
                              x.mean(std::vector<int64_t>{0, 2})));
  EXPECT_TRUE(torch::allclose(run1("ReduceMean", {x}), x.mean({0, 1, 2}, true)));
  EXPECT_TRUE(torch::equal(run1("ReduceMean", {x}, {{"noop_with_empty_axes", int64_t{1}}}), x));
  EXPECT_TRUE(torch::equal(run1("ReduceMean", {ints({1, 2, 4})}), ints({2})));
}

TEST(TensorOps, GradientsFlowThroughLayoutOps) {
  // Seeded: with unlucky values every element clips and the gradient is 0.
  torch::manual_seed(4);
  const Tensor x = torch::randn({3, 4}, torch::requires_grad());
  Tensor y = run1("Slice", {x, ints({-1}), ints({-100}), ints({1}), ints({-2})});  // columns 3, 1
  y = run1("Pad", {y, ints({1, 0, 0, 1})}, {{"mode", std::string("reflect")}});
  y = run1("Gather", {y, ints({-1, 0})}, {{"axis", int64_t{0}}});
  y = run1("Clip", {y, torch::tensor(-0.5f), torch::tensor(0.5f)});
  const Tensor grad = torch::autograd::grad({(y * y).sum()}, {x})[0];

  const Tensor xr = x.detach().requires_grad_();
  Tensor r = xr.index_select(1, ints({3, 1}));
  r = torch::cat({r.slice(0, 1, 2), r}).index_select(1, ints({0, 1, 0}));
  r = r.index_select(0, ints({3, 0})).clamp(-0.5, 0.5);
  const Tensor expected = torch::autograd::grad({(r * r).sum()}, {xr})[0];
  EXPECT_TRUE(torch::allclose(grad, expected));
  EXPECT_GT(grad.abs().sum().item<float>(), 0.0f);
}

TEST(TensorOps, ReshapeErrorNamesTheNode) {
  const std::string error = error_of("Reshape", {torch::zeros({6}), ints({2, 0})});
  EXPECT_NE(error.find("Reshape node 'n'"), std::string::npos) << error;
  EXPECT_NE(error.find("beyond the input's rank"), std::string::npos) << error;
}

// Found by fuzz/onnx_import_fuzzer: pads of 1e9 made Conv allocate ~15 GB.
TEST(WindowOps, PadsBeyondTheWindowAreNamedErrors) {
  const Tensor x = torch::zeros({1, 1, 4, 4}), w = torch::zeros({1, 1, 3, 3});
  const std::vector<int64_t> huge{0, 1000000000, 0, 0}, negative{0, -1, 0, 0}, widest{3, 3, 3, 3};
  for (const auto& pads : {huge, negative}) {
    const std::string conv = error_of("Conv", {x, w}, {{"pads", pads}});
    EXPECT_NE(conv.find("Conv node 'n'"), std::string::npos) << conv;
    EXPECT_NE(conv.find("attribute 'pads' has " + std::to_string(pads[1])), std::string::npos) << conv;
    const std::string pool = error_of("MaxPool", {x}, {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"pads", pads}});
    EXPECT_NE(pool.find("the window's extent 2"), std::string::npos) << pool;
  }
  // Up to the window's extent is legal (if useless): outputs of padding only.
  EXPECT_EQ(run1("Conv", {x, w}, {{"pads", widest}}).sizes(), (std::vector<int64_t>{1, 1, 8, 8}));
}

}  // namespace
}  // namespace qat
