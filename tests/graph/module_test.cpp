#include "qat/graph.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

using torch::Tensor;

// Test-only ops, so that executor tests do not depend on the ONNX kernels.
void register_test_ops() {
  register_op("TestScale", [](const OpContext& ctx, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0] * ctx.node.attr_float("factor")};
  });
  register_op("TestAffine", [](const OpContext&, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0] * in[1] + (in[2].defined() ? in[2] : torch::zeros({}))};
  });
  register_op("TestMode", [](const OpContext& ctx, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0] + (ctx.training ? 1.0 : 0.0)};
  });
}

Node node(std::string name, std::string op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

std::shared_ptr<GraphModule> affine_chain() {
  register_test_ops();
  Graph g;
  g.inputs = {{"x", {-1, 3}, torch::kFloat}};
  g.outputs = {"y"};
  g.nodes.push_back(node("affine", "TestAffine", {"x", "layer.weight", "layer.bias"}, {"h"}));
  g.nodes.push_back(node("scale", "TestScale", {"h"}, {"y"}));
  g.nodes.back().attributes["factor"] = 2.0;
  auto m = std::make_shared<GraphModule>(std::move(g));
  m->add_initializer("layer.weight", torch::tensor({1.0f, 2.0f, 3.0f}), true);
  m->add_initializer("layer.bias", torch::tensor({0.5f, 0.5f, 0.5f}), true);
  return m;
}

TEST(GraphModule, RunsNodesInOrderWithInitializers) {
  auto m = affine_chain();
  const Tensor y = m->forward(torch::ones({2, 3}));
  EXPECT_TRUE(torch::allclose(y, torch::tensor({{3.0f, 5.0f, 7.0f}, {3.0f, 5.0f, 7.0f}})));
}

TEST(GraphModule, AutogradReachesInitializersAndOptimizerUpdatesThem) {
  auto m = affine_chain();
  torch::optim::SGD sgd(m->parameters(), 0.1);
  const Tensor loss = m->forward(torch::ones({1, 3})).sum();
  loss.backward();
  EXPECT_TRUE(torch::allclose(m->initializer("layer.weight").grad(), torch::full({3}, 2.0f)));
  sgd.step();
  EXPECT_TRUE(torch::allclose(m->initializer("layer.weight"), torch::tensor({0.8f, 1.8f, 2.8f})));
  // The executor reads the updated tensors (bias too: 0.5 - 0.1 * 2) on the next run.
  EXPECT_TRUE(torch::allclose(m->forward(torch::ones({1, 3})), torch::tensor({{2.2f, 4.2f, 6.2f}})));
}

TEST(GraphModule, NonTrainableInitializersGetNoGradient) {
  auto m = affine_chain();
  m->remove_initializer("layer.bias");
  m->add_initializer("layer.bias", torch::ones({3}), false);
  EXPECT_FALSE(m->is_trainable("layer.bias"));
  EXPECT_FALSE(m->initializer("layer.bias").requires_grad());
  EXPECT_TRUE(m->is_trainable("layer.weight"));
  m->set_initializer("layer.weight", torch::zeros({3}));
  EXPECT_TRUE(torch::allclose(m->forward(torch::ones({1, 3})), torch::full({1, 3}, 2.0f)));
  EXPECT_TRUE(m->initializer("layer.weight").requires_grad());
}

TEST(GraphModule, InitializerNamesWithDotsStayDistinct) {
  GraphModule m;
  m.add_initializer("a.b", torch::ones({1}), true);
  m.add_initializer("a_b", torch::zeros({1}), true);
  EXPECT_EQ(m.initializer("a.b").item<float>(), 1.0f);
  EXPECT_EQ(m.initializer("a_b").item<float>(), 0.0f);
  EXPECT_EQ(m.parameters().size(), 2u);
  EXPECT_THROW(m.add_initializer("a.b", torch::ones({1}), true), std::invalid_argument);
  EXPECT_THROW(m.initializer("missing"), std::out_of_range);
}

TEST(GraphModule, ReleasesIntermediatesAfterLastReader) {
  register_test_ops();
  c10::weak_intrusive_ptr<c10::TensorImpl> first_output{c10::intrusive_ptr<c10::TensorImpl>()};
  bool checked = false;
  register_op("TestRemember", [&](const OpContext&, const std::vector<Tensor>& in) {
    const Tensor out = in[0] * 3;
    first_output = c10::weak_intrusive_ptr<c10::TensorImpl>(out.getIntrusivePtr());
    return std::vector<Tensor>{out};
  });
  register_op("TestCheck", [&](const OpContext&, const std::vector<Tensor>& in) {
    checked = true;
    EXPECT_TRUE(first_output.expired()) << "'a' should be released after its only reader";
    return std::vector<Tensor>{in[0] + 1};
  });
  Graph g;
  g.inputs = {{"x", {2}, torch::kFloat}};
  g.outputs = {"c"};
  g.nodes.push_back(node("remember", "TestRemember", {"x"}, {"a"}));
  g.nodes.push_back(node("scale", "TestScale", {"a"}, {"b"}));
  g.nodes.back().attributes["factor"] = 2.0;
  g.nodes.push_back(node("check", "TestCheck", {"b"}, {"c"}));
  GraphModule m(std::move(g));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(m.forward(torch::ones({2})), torch::full({2}, 7.0f)));
  EXPECT_TRUE(checked);
}

TEST(GraphModule, TrainAndEvalModeReachKernels) {
  register_test_ops();
  Graph g;
  g.inputs = {{"x", {1}, torch::kFloat}};
  g.outputs = {"y"};
  g.nodes.push_back(node("mode", "TestMode", {"x"}, {"y"}));
  GraphModule m(std::move(g));
  m.train();
  EXPECT_EQ(m.forward(torch::zeros({1})).item<float>(), 1.0f);
  m.eval();
  EXPECT_EQ(m.forward(torch::zeros({1})).item<float>(), 0.0f);
}

TEST(GraphModule, ErrorsNameTheNode) {
  register_test_ops();
  Graph g;
  g.inputs = {{"x", {1}, torch::kFloat}};
  g.outputs = {"y"};
  g.nodes.push_back(node("mystery", "NoSuchOp", {"x"}, {"y"}));
  GraphModule unknown(g);
  try {
    unknown.forward(torch::zeros({1}));
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("NoSuchOp"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("mystery"), std::string::npos);
  }
  g.nodes[0] = node("dangling", "TestScale", {"nowhere"}, {"y"});
  GraphModule dangling(g);
  EXPECT_THROW(dangling.forward(torch::zeros({1})), std::invalid_argument);
  g.nodes[0] = node("noattr", "TestScale", {"x"}, {"y"});
  GraphModule missing_attr(g);
  try {
    missing_attr.forward(torch::zeros({1}));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("TestScale node 'noattr'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'factor'"), std::string::npos) << e.what();
  }
}

TEST(GraphModule, InferShapesRunsOnceWithoutChangingMode) {
  auto m = affine_chain();
  m->train();
  const auto shapes = m->infer_shapes({{5, 3}});
  EXPECT_EQ(shapes.at("h"), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(shapes.at("y"), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(shapes.at("layer.weight"), (std::vector<int64_t>{3}));
  EXPECT_TRUE(m->is_training());
}

TEST(GraphModule, ObserverSeesEveryNode) {
  auto m = affine_chain();
  std::vector<std::string> seen;
  m->set_observer([&](const Node& n, const std::vector<Tensor>&) { seen.push_back(n.name); });
  m->forward(torch::ones({1, 3}));
  EXPECT_EQ(seen, (std::vector<std::string>{"affine", "scale"}));
}

TEST(GraphModule, SaveAndLoadRoundTripsInitializers) {
  auto m = affine_chain();
  const std::string path = ::testing::TempDir() + "/graph_module.pt";
  torch::save(m, path);
  auto other = affine_chain();
  other->set_initializer("layer.weight", torch::zeros({3}));
  torch::load(other, path);
  EXPECT_TRUE(torch::equal(other->initializer("layer.weight"), m->initializer("layer.weight")));
}

}  // namespace
}  // namespace qat
