// Real models: torchvision classifiers exported to ONNX, run by qat and
// compared with ONNX Runtime. The fixtures (model.onnx, input_0.pb,
// output_0.pb per model) come from tests/fixtures/make_torchvision_models.py
// and ort_reference.py, which CTest runs as the "torchvision" fixture and
// whose directory it passes in QAT_FIXTURES_DIR.
#include "qat/onnx_import.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace qat {
namespace {

using torch::Tensor;

// Must match MODELS in make_torchvision_models.py.
const std::vector<std::string> kModels = {
    "resnet18",           "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_small_opset17",
    "shufflenet_v2_x0_5", "squeezenet1_1", "efficientnet_b0",   "mnasnet0_5",
    "regnet_x_400mf",     "googlenet",
};

// Differences are judged against the size of the logits: randomly
// initialised models give logits anywhere from 1e-2 to 1e1.
constexpr double kRelativeTolerance = 1e-4;

std::string model_dir(const std::string& name) {
  const char* dir = std::getenv("QAT_FIXTURES_DIR");
  return dir ? std::string(dir) + "/" + name : "";
}

class TorchvisionModel : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (model_dir(GetParam()).empty()) {
      GTEST_SKIP() << "QAT_FIXTURES_DIR is not set; run through ctest, which generates the fixtures";
    }
  }
};

TEST_P(TorchvisionModel, MatchesOnnxRuntime) {
  const std::string dir = model_dir(GetParam());
  auto module = import_onnx(dir + "/model.onnx");
  module->eval();
  torch::NoGradGuard no_grad;
  const Tensor input = load_onnx_tensor(dir + "/input_0.pb");
  const Tensor expected = load_onnx_tensor(dir + "/output_0.pb");
  const Tensor actual = module->forward(input);
  ASSERT_EQ(actual.sizes(), expected.sizes());
  const double diff = (actual - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  std::cout << GetParam() << ": max |qat - onnxruntime| = " << diff << " (max |logit| " << scale << ")\n";
  RecordProperty("max_abs_diff", std::to_string(diff));
  EXPECT_LE(diff, kRelativeTolerance * scale);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchvisionModel, ::testing::ValuesIn(kModels));

// Import keeps PyTorch's parameter names, so that encodings and checkpoints
// can refer to them, and training reaches the weights but not the
// BatchNorm statistics.
TEST(TorchvisionImport, Resnet18KeepsNamesAndTrains) {
  const std::string dir = model_dir("resnet18");
  if (dir.empty()) GTEST_SKIP() << "QAT_FIXTURES_DIR is not set";
  auto module = import_onnx(dir + "/model.onnx");
  for (const char* weight : {"conv1.weight", "bn1.weight", "bn1.bias", "layer4.1.conv2.weight", "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(module->is_trainable(weight)) << weight;
  }
  for (const char* state : {"bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_var"}) {
    EXPECT_FALSE(module->is_trainable(state)) << state;
  }
  module->train();
  const Tensor loss = module->forward(torch::randn({2, 3, 64, 64})).logsumexp(1).mean();
  loss.backward();
  EXPECT_GT(module->initializer("conv1.weight").grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(module->initializer("fc.bias").grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(module->initializer("bn1.running_mean").grad().defined());
}

}  // namespace
}  // namespace qat
