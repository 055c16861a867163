#include "qat/zoo.h"

#include "qat/builder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

int64_t count_parameters(GraphModule& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) {
    if (p.requires_grad()) n += p.numel();
  }
  return n;
}

// Training a built model moves BN running statistics as torch's BatchNorm2d
// does (momentum 0.1, unbiased batch variance), and normalises alike.
TEST(Builder, BatchNormTrainsLikeTorchBatchNorm2d) {
  GraphBuilder b;
  b.output(b.batch_norm(b.input("x", {-1, 3, 5, 5}), "bn"));
  auto model = b.build();
  torch::nn::BatchNorm2d reference(3);
  model->train();
  reference->train();
  torch::manual_seed(7);
  for (int step = 0; step < 3; ++step) {
    const torch::Tensor x = torch::randn({4, 3, 5, 5}) * 2 + 1;
    EXPECT_TRUE(torch::allclose(model->forward(x), reference->forward(x), 1e-5, 1e-5));
  }
  EXPECT_TRUE(torch::allclose(model->initializer("bn.running_mean"), reference->running_mean, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(model->initializer("bn.running_var"), reference->running_var, 1e-6, 1e-6));
}

TEST(Zoo, EveryModelMapsImagesToLogits) {
  for (const auto& name : zoo_models()) {
    auto model = make_model(name);
    model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = model->forward(torch::randn({2, 1, 28, 28}));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 10})) << name;
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>()) << name;
  }
}

TEST(Zoo, ParameterCountsMatchTheArchitectures) {
  // ResNet-20 for CIFAR has 0.27M parameters (He et al., table 6); with one
  // input channel and 1x1 projection shortcuts it is close to that.
  const int64_t resnet20 = count_parameters(*make_model("resnet20"));
  EXPECT_GT(resnet20, 260000);
  EXPECT_LT(resnet20, 280000);
  // torchvision's resnet18 has 11.69M with a 7x7x3 stem and 1000 classes;
  // a 3x3x1 stem and 10 classes remove 9408 - 576 + 512*990 + 990 weights.
  EXPECT_EQ(count_parameters(*make_model("resnet18")), 11689512 - 9408 + 576 - 512 * 990 - 990);
  // torchvision's mobilenet_v2 has 3,504,872 with 3 input channels and
  // 1000 classes; ours has 1 input channel (-576) and 10 classes.
  EXPECT_EQ(count_parameters(*make_model("mobilenet_v2")), 3504872 - 576 - 1280 * 990 - 990);
}

TEST(Zoo, SeedMakesInitialisationReproducible) {
  ZooOptions options;
  options.seed = 5;
  auto a = make_model("resnet8", options);
  auto b = make_model("resnet8", options);
  options.seed = 6;
  auto c = make_model("resnet8", options);
  EXPECT_TRUE(torch::equal(a->initializer("stem.conv.weight"), b->initializer("stem.conv.weight")));
  EXPECT_FALSE(torch::equal(a->initializer("stem.conv.weight"), c->initializer("stem.conv.weight")));
}

TEST(Zoo, UnknownModelListsKnownOnes) {
  try {
    make_model("vgg16");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("resnet20"), std::string::npos);
  }
}

TEST(Builder, ProducesOnnxStyleNodesAndNamedParameters) {
  GraphBuilder b(1);
  auto x = b.input("image", {-1, 3, 8, 8});
  x = b.relu(b.batch_norm(b.conv(x, "conv1", 4, 3, 2), "bn1"));
  b.output(b.linear(b.flatten(b.global_avg_pool(x)), "fc", 5));
  auto m = b.build();
  std::vector<std::string> ops;
  for (const auto& n : m->graph().nodes) ops.push_back(n.op_type);
  EXPECT_EQ(ops, (std::vector<std::string>{"Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten",
                                           "Gemm"}));
  EXPECT_EQ(m->initializer("conv1.weight").sizes(), (std::vector<int64_t>{4, 3, 3, 3}));
  EXPECT_FALSE(m->is_trainable("bn1.running_mean"));
  EXPECT_TRUE(m->is_trainable("bn1.weight"));
  const auto shapes = m->infer_shapes({{2, 3, 8, 8}});
  EXPECT_EQ(shapes.at("conv1.out"), (std::vector<int64_t>{2, 4, 4, 4}));
  EXPECT_EQ(shapes.at("fc.out"), (std::vector<int64_t>{2, 5}));
}

}  // namespace
}  // namespace qat
