#include "qat/train.h"

#include "qat/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

namespace qat {
namespace {

// The first `n` images of a split: enough to learn something in seconds.
data::Dataset subset(data::Split split, int64_t n) {
  data::Dataset d = data::load_fashion_mnist(split);
  d.images = d.images.slice(0, 0, n);
  d.labels = d.labels.slice(0, 0, n);
  return d;
}

data::DataLoader loader(data::Split split, int64_t n, bool shuffle) {
  data::LoaderOptions o;
  o.batch_size = 64;
  o.shuffle = shuffle;
  o.seed = 3;
  o.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  return data::DataLoader(subset(split, n), o);
}

std::string temp_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/qat_trainer_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TrainOptions quick_options() {
  TrainOptions o;
  o.epochs = 2;
  o.lr = 0.05;
  o.progress = false;
  return o;
}

TEST(Trainer, LearnsFashionMnistSubset) {
  auto model = make_model("resnet8");
  const auto train_loader = loader(data::Split::kTrain, 4096, true);
  const auto test_loader = loader(data::Split::kTest, 1000, false);
  const double before = evaluate(*model, test_loader, "before", false).accuracy;
  TrainOptions options = quick_options();
  options.epochs = 3;
  const auto history = train(*model, train_loader, test_loader, options);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_LT(history[2].train_loss, history[0].train_loss);
  // Ten classes: chance is 10%; three epochs on 4k images reach well above
  // (BatchNorm's running statistics need the steps to settle).
  EXPECT_GT(history[2].test_accuracy, 0.6) << "before training: " << before;
}

TEST(Trainer, ResumeReproducesUninterruptedRunBitForBit) {
  const auto train_loader = loader(data::Split::kTrain, 512, true);
  const auto test_loader = loader(data::Split::kTest, 128, false);
  TrainOptions o = quick_options();

  auto straight = make_model("resnet8");
  o.out_dir = temp_dir("straight");
  train(*straight, train_loader, test_loader, o);

  auto interrupted = make_model("resnet8");
  o.out_dir = temp_dir("interrupted");
  o.epochs = 1;
  train(*interrupted, train_loader, test_loader, o);
  // A fresh process would start from a fresh model; so do we.
  auto resumed = make_model("resnet8");
  torch::manual_seed(1234);  // a different global RNG state must not matter
  o.epochs = 2;
  o.resume = true;
  const auto history = train(*resumed, train_loader, test_loader, o);
  ASSERT_EQ(history.size(), 2u);
  for (const auto& name : straight->initializer_names()) {
    EXPECT_TRUE(torch::equal(straight->initializer(name), resumed->initializer(name))) << name;
  }
}

// An epoch cut to k steps trains on exactly the first k batches: the same
// weights as a full epoch over a split holding only those batches.
TEST(Trainer, StepsPerEpochStopsAfterThatManyBatches) {
  const auto test_loader = loader(data::Split::kTest, 64, false);
  TrainOptions o = quick_options();
  o.epochs = 1;
  auto cut = make_model("resnet8");
  o.steps_per_epoch = 2;
  train(*cut, loader(data::Split::kTrain, 512, false), test_loader, o);
  auto full = make_model("resnet8");
  o.steps_per_epoch = 0;
  train(*full, loader(data::Split::kTrain, 128, false), test_loader, o);
  auto untouched = make_model("resnet8");
  for (const auto& name : cut->initializer_names()) {
    EXPECT_TRUE(torch::equal(cut->initializer(name), full->initializer(name))) << name;
  }
  EXPECT_FALSE(torch::equal(cut->initializer(cut->initializer_names()[0]),
                            untouched->initializer(untouched->initializer_names()[0])));
}

// The regularizer joins every step's loss (and the reported train loss),
// called with the fraction of training done: 2 epochs of 2 steps.
TEST(Trainer, RegularizerJoinsEveryStepWithTheTrainingProgress) {
  const auto test_loader = loader(data::Split::kTest, 64, false);
  TrainOptions o = quick_options();
  o.lr = 0.0;  // the same weights every step: the two runs' losses differ only by the term
  const auto run = [&](bool regularized) {
    std::vector<double> progress;
    o.regularizer = nullptr;
    if (regularized) {
      o.regularizer = [&](double t) {
        progress.push_back(t);
        return torch::tensor(10.0);
      };
    }
    auto model = make_model("resnet8");
    return std::make_pair(train(*model, loader(data::Split::kTrain, 128, false), test_loader, o), progress);
  };
  const auto [plain, none] = run(false);
  const auto [with_term, progress] = run(true);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(progress, (std::vector<double>{0.0, 0.25, 0.5, 0.75}));
  for (size_t e = 0; e < plain.size(); ++e) EXPECT_NEAR(with_term[e].train_loss, plain[e].train_loss + 10.0, 1e-6);
}

TEST(Checkpoint, CorruptTruncatedAndForeignFilesAreRejectedByName) {
  auto model = make_model("resnet8");
  torch::optim::SGD sgd(model->parameters(), 0.1);
  const std::string dir = temp_dir("corrupt");
  const std::string good = dir + "/good.pt";
  save_checkpoint(good, *model, sgd, TrainState{1, {}});
  EXPECT_FALSE(std::filesystem::exists(good + ".tmp"));

  const auto bytes = std::filesystem::file_size(good);
  const std::string truncated = dir + "/truncated.pt";
  std::filesystem::copy_file(good, truncated);
  std::filesystem::resize_file(truncated, bytes / 2);
  const std::string garbage = dir + "/garbage.pt";
  std::ofstream(garbage) << "definitely not a checkpoint";
  for (const auto& path : {truncated, garbage, dir + "/missing.pt"}) {
    try {
      load_checkpoint(path, *model, sgd);
      ADD_FAILURE() << path << " loaded";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  // A checkpoint of another architecture names the offending tensor.
  auto other = make_model("resnet20");
  torch::optim::SGD other_sgd(other->parameters(), 0.1);
  try {
    load_checkpoint(good, *other, other_sgd);
    ADD_FAILURE() << "resnet8 checkpoint loaded into resnet20";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(good), std::string::npos) << e.what();
  }
  EXPECT_EQ(load_checkpoint(good, *model, sgd).epochs_done, 1);
}

// The trainable initializers, copied (BatchNorm statistics move in every
// forward pass, so they are left out).
std::map<std::string, torch::Tensor> parameters_of(GraphModule& model) {
  std::map<std::string, torch::Tensor> copies;
  for (const auto& name : model.initializer_names()) {
    if (model.is_trainable(name)) copies[name] = model.initializer(name).detach().clone();
  }
  return copies;
}

std::string train_error(GraphModule& model, const data::DataLoader& data, const TrainOptions& options) {
  try {
    train(model, data, data, options);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(NonFinite, NanLossStopsNamingTheStepAndKeepsTheWeights) {
  auto model = make_model("resnet8");
  const auto data = loader(data::Split::kTrain, 256, true);
  TrainOptions o = quick_options();
  // Finite for the first epoch, then a NaN bias in the head.
  std::map<std::string, torch::Tensor> after_first_epoch;
  o.on_epoch_start = [&](int64_t epoch) {
    if (epoch != 1) return;
    after_first_epoch = parameters_of(*model);
    model->initializer("fc.bias").detach().fill_(std::nanf(""));
  };
  const std::string error = train_error(*model, data, o);
  EXPECT_NE(error.find("loss is nan at epoch 2, batch 0 (step 4)"), std::string::npos) << error;
  ASSERT_FALSE(after_first_epoch.empty());
  for (const auto& [name, value] : parameters_of(*model)) {
    if (name != "fc.bias") EXPECT_TRUE(torch::equal(value, after_first_epoch.at(name))) << name;
  }
}

// logits = sqrt(x * w) with w = 0: a finite loss (all logits 0) whose
// gradient for w is x / (2 sqrt(0)), infinite.
std::shared_ptr<GraphModule> sqrt_model() {
  Graph g;
  g.inputs = {{"x", {-1, 1, 28, 28}, torch::kFloat}};
  g.outputs = {"logits"};
  g.nodes.push_back(Node{"scale", "Mul", {"x", "w"}, {"scaled"}, {}});
  g.nodes.push_back(Node{"root", "Sqrt", {"scaled"}, {"root"}, {}});
  g.nodes.push_back(Node{"flatten", "Flatten", {"root"}, {"logits"}, {}});
  auto model = std::make_shared<GraphModule>(g);
  model->add_initializer("w", torch::zeros({1}), true);
  return model;
}

TEST(NonFinite, InfiniteGradientStopsNamingTheParameter) {
  auto model = sqrt_model();
  const auto data = loader(data::Split::kTrain, 128, false);
  TrainOptions o = quick_options();
  const std::string error = train_error(*model, data, o);
  EXPECT_NE(error.find("gradient of 'w' is not finite at epoch 1, batch 0 (step 0)"), std::string::npos) << error;
  EXPECT_EQ(model->initializer("w").item<float>(), 0.0f);
}

TEST(NonFinite, SkipPolicyDropsOnlyTheBadSteps) {
  auto model = make_model("resnet8");
  const auto data = loader(data::Split::kTrain, 256, true);
  TrainOptions o = quick_options();
  o.epochs = 1;
  o.on_nonfinite = NonFinitePolicy::kSkip;
  // Every step of the epoch sees a NaN loss: none may move a weight.
  const auto before = parameters_of(*model);
  const float saved = model->initializer("fc.bias")[0].item<float>();
  model->initializer("fc.bias").detach()[0] = std::nanf("");
  train(*model, data, data, o);
  model->initializer("fc.bias").detach()[0] = saved;
  for (const auto& [name, value] : parameters_of(*model)) EXPECT_TRUE(torch::equal(value, before.at(name))) << name;

  // Infinite gradients are skipped the same way, and the run finishes.
  auto sqrt = sqrt_model();
  const auto history = train(*sqrt, data, data, o);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(sqrt->initializer("w").item<float>(), 0.0f);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// One flipped byte inside a tensor's data would otherwise load silently
// as a wrong weight, and damaged TorchScript sources in the archive can
// crash LibTorch's parser (fuzz/checkpoint_fuzzer): the CRC check must
// refuse both, naming the file.
TEST(Checkpoint, FlippedBytesInDataOrCodeAreNamedErrors) {
  auto model = make_model("resnet8");
  torch::optim::SGD sgd(model->parameters(), 0.1);
  const std::string dir = temp_dir("flipped");
  const std::string good = dir + "/good.pt";
  save_checkpoint(good, *model, sgd, TrainState{1, {}});
  const std::string bytes = read_bytes(good);
  // The stem conv weight's first value, and the class line of the code
  // (its debug copy, which is stored uncompressed).
  const float first = model->initializer("stem.conv.weight").flatten()[0].item<float>();
  const size_t weight_at = bytes.find(std::string(reinterpret_cast<const char*>(&first), sizeof first));
  const size_t code_at = bytes.find("class Module(Module):");
  ASSERT_NE(weight_at, std::string::npos);
  ASSERT_NE(code_at, std::string::npos);
  for (const size_t at : {weight_at + 3, code_at + 8}) {
    std::string damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x40);
    const std::string path = dir + "/flipped_" + std::to_string(at) + ".pt";
    std::ofstream(path, std::ios::binary) << damaged;
    try {
      load_checkpoint(path, *model, sgd);
      ADD_FAILURE() << "a checkpoint with byte " << at << " flipped loaded";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(path + ": corrupt or truncated checkpoint", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("CRC-32"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(load_checkpoint(good, *model, sgd).epochs_done, 1);
}

TEST(Trainer, StepScheduleDividesByGamma) {
  TrainOptions o;
  o.lr = 0.1;
  o.schedule = "step";
  o.step_epochs = 2;
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 1), 0.1);
  EXPECT_NEAR(scheduled_lr(o, 2), 0.01, 1e-15);
  EXPECT_NEAR(scheduled_lr(o, 5), 0.001, 1e-15);
  o.schedule = "bogus";
  EXPECT_THROW(scheduled_lr(o, 0), std::invalid_argument);
}

// Against the closed forms: KL(p || q) with p, q the softened teacher and
// student distributions, times T^2; its gradient (q - p) * T / batch.
TEST(Distillation, LossIsTheScaledKlDivergenceOfSoftenedLogits) {
  torch::manual_seed(2);
  const torch::Tensor student = (torch::randn({5, 10}, torch::kDouble) * 3).requires_grad_();
  const torch::Tensor teacher = (torch::randn({5, 10}, torch::kDouble) * 3).requires_grad_();
  for (double t : {1.0, 4.0}) {
    const torch::Tensor p = torch::softmax(teacher.detach() / t, 1), q = torch::softmax(student.detach() / t, 1);
    const double expected = (p * (p.log() - q.log())).sum().item<double>() / 5 * t * t;
    const torch::Tensor loss = distillation_loss(student, teacher, t);
    EXPECT_NEAR(loss.item<double>(), expected, 1e-12) << "T = " << t;
    student.mutable_grad() = torch::Tensor();
    loss.backward();
    EXPECT_TRUE(torch::allclose(student.grad(), (q - p) * t / 5, 1e-12, 1e-14)) << "T = " << t;
    EXPECT_FALSE(teacher.grad().defined()) << "the teacher must not learn";
  }
  EXPECT_NEAR(distillation_loss(teacher, teacher, 2.0).item<double>(), 0.0, 1e-12);
}

// A teacher trained on shifted labels (class c taught as c + 1): with a
// strong distillation weight the student follows the teacher; with
// cross-entropy alone it learns the true labels and ends far from it.
TEST(Distillation, TrainingPullsTheStudentTowardTheTeacher) {
  const auto train_loader = loader(data::Split::kTrain, 512, false);
  const auto test_loader = loader(data::Split::kTest, 128, false);
  data::Dataset shifted = subset(data::Split::kTrain, 512);
  shifted.labels = (shifted.labels + 1) % 10;
  data::LoaderOptions shifted_options;
  shifted_options.batch_size = 64;
  shifted_options.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  ZooOptions teacher_options;
  teacher_options.seed = 11;
  auto teacher = make_model("resnet8", teacher_options);
  TrainOptions teach = quick_options();
  train(*teacher, data::DataLoader(shifted, shifted_options), test_loader, teach);
  const auto distance_after = [&](double weight) {
    auto student = make_model("resnet8");
    TrainOptions o = quick_options();
    o.epochs = 1;
    o.teacher = teacher;
    o.distill_weight = weight;
    o.distill_temperature = 2.0;
    train(*student, train_loader, test_loader, o);
    student->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor images = train_loader.batch(0, 0).images;
    return distillation_loss(student->forward(images), teacher->forward(images), 2.0).item<double>();
  };
  EXPECT_LT(distance_after(10.0), 0.5 * distance_after(0.0));
  TrainOptions bad = quick_options();
  bad.distill_temperature = 0.0;
  auto model = make_model("resnet8");
  EXPECT_THROW(train(*model, train_loader, test_loader, bad), std::invalid_argument);
  bad = quick_options();
  bad.distill_weight = 1.0;  // and no teacher
  EXPECT_THROW(train(*model, train_loader, test_loader, bad), std::invalid_argument);
}

}  // namespace
}  // namespace qat
