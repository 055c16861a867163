// The qat command line. Each subcommand is one pipeline stage; `demo` runs
// every stage that exists end to end on Fashion-MNIST.
#include "qat/encoding.h"
#include "qat/fake_quant.h"
#include "qat/onnx_import.h"
#include "qat/threads.h"
#include "qat/train.h"
#include "qat/zoo.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <iostream>
#include <optional>

namespace {

struct DataArgs {
  std::string data = "fashion-mnist";
  std::string data_dir;
  int64_t batch_size = 128;
  uint64_t seed = 0;
};

struct ModelArgs {
  std::string model = "resnet20";
  std::string onnx;
};

void add_data_options(CLI::App* cmd, DataArgs& args) {
  cmd->add_option("--data", args.data, "data set: fashion-mnist or cifar10")->capture_default_str();
  cmd->add_option("--data-dir", args.data_dir, "directory holding the data set files");
  cmd->add_option("--batch-size", args.batch_size, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", args.seed, "seed for initialisation, shuffling and augmentation")->capture_default_str();
}

void add_model_options(CLI::App* cmd, ModelArgs& args) {
  cmd->add_option("--model", args.model, "zoo model name")->capture_default_str();
  cmd->add_option("--onnx", args.onnx, "ONNX file to load instead of a zoo model");
}

qat::data::Dataset load_split(const DataArgs& args, qat::data::Split split) {
  if (args.data == "fashion-mnist") {
    return qat::data::load_fashion_mnist(split, args.data_dir.empty() ? qat::data::kFashionMnistDir : args.data_dir);
  }
  if (args.data == "cifar10") {
    if (args.data_dir.empty()) throw std::invalid_argument("--data cifar10 needs --data-dir");
    return qat::data::load_cifar10(split, args.data_dir);
  }
  throw std::invalid_argument("unknown data set '" + args.data + "' (fashion-mnist, cifar10)");
}

qat::data::DataLoader make_loader(const DataArgs& args, qat::data::Split split) {
  qat::data::Dataset dataset = load_split(args, split);
  qat::data::LoaderOptions options;
  options.batch_size = args.batch_size;
  options.seed = args.seed;
  options.normalization = args.data == "fashion-mnist"
                              ? qat::data::Normalization{{qat::data::kFashionMnistMean}, {qat::data::kFashionMnistStd}}
                              : qat::data::compute_normalization(dataset.images);
  if (split == qat::data::Split::kTrain) {
    options.shuffle = true;
    options.drop_last = true;
    options.augmentation.crop_padding = 2;
    options.augmentation.horizontal_flip = true;
  }
  return qat::data::DataLoader(std::move(dataset), options);
}

std::shared_ptr<qat::GraphModule> load_model(const ModelArgs& model, const qat::data::Dataset& data, uint64_t seed) {
  if (!model.onnx.empty()) return qat::import_onnx(model.onnx);
  qat::ZooOptions options;
  options.in_channels = data.images.size(1);
  options.image_size = data.images.size(2);
  options.num_classes = static_cast<int64_t>(data.class_names.size());
  options.seed = seed;
  return qat::make_model(model.model, options);
}

// The demo grows with the pipeline; stages that do not exist yet are listed.
int run_demo() {
  std::cout << "qat demo: Fashion-MNIST quantization-aware training pipeline\n";
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({64, 16, 28, 28});
  for (int bits : {8, 4}) {
    qat::QuantSpec spec;
    spec.grid = {bits, /*is_signed=*/true, /*narrow_range=*/false};
    spec.symmetric = true;
    const auto enc = qat::encoding_from_range(x.min().item<double>(), x.max().item<double>(), spec);
    const torch::Tensor err = qat::fake_quantize(x, enc) - x;
    const double sqnr = 10.0 * std::log10(x.pow(2).mean().item<double>() / err.pow(2).mean().item<double>());
    std::cout << "  [done] fake-quant core    " << enc.to_string() << "  SQNR " << sqnr << " dB\n";
  }
  for (const char* stage : {"FP32 training (graph IR, Fashion-MNIST loader)", "PTQ calibration",
                            "QAT", "ONNX QDQ export and validation"}) {
    std::cout << "  [todo] " << stage << "\n";
  }
  return 0;
}

int run_train(const ModelArgs& model_args, const DataArgs& data_args, qat::TrainOptions options) {
  const qat::data::DataLoader train_loader = make_loader(data_args, qat::data::Split::kTrain);
  const qat::data::DataLoader test_loader = make_loader(data_args, qat::data::Split::kTest);
  auto model = load_model(model_args, train_loader.dataset(), data_args.seed);
  torch::manual_seed(data_args.seed);
  const auto history = qat::train(*model, train_loader, test_loader, options);
  if (!history.empty()) {
    std::printf("final test accuracy: %.2f%% after %ld epochs\n", 100.0 * history.back().test_accuracy,
                static_cast<long>(history.back().epoch));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qat: quantization-aware training for LibTorch models"};
  app.require_subcommand(1);
  std::optional<int> threads;
  app.add_option("--threads", threads, "intra-op threads (default: $QAT_NUM_THREADS or all cores)");

  auto* demo = app.add_subcommand("demo", "run the end-to-end Fashion-MNIST QAT pipeline");

  auto* train = app.add_subcommand("train", "train a model in FP32");
  ModelArgs model_args;
  DataArgs data_args;
  qat::TrainOptions train_options;
  add_model_options(train, model_args);
  add_data_options(train, data_args);
  train->add_option("--epochs", train_options.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--lr", train_options.lr, "initial learning rate")->capture_default_str();
  train->add_option("--weight-decay", train_options.weight_decay, "weight decay")->capture_default_str();
  train->add_option("--schedule", train_options.schedule, "cosine, step or constant")->capture_default_str();
  train->add_option("--step-epochs", train_options.step_epochs, "epochs between lr steps (step schedule)");
  train->add_option("--out", train_options.out_dir, "run directory for checkpoint.pt")->required();
  train->add_flag("--resume", train_options.resume, "continue from the run directory's checkpoint");
  train->add_flag("!--no-progress", train_options.progress, "no progress bars");

  CLI11_PARSE(app, argc, argv);
  try {
    const int used = qat::configure_threads(threads);
    std::cerr << "qat: " << used << " threads\n";
    if (demo->parsed()) return run_demo();
    if (train->parsed()) return run_train(model_args, data_args, train_options);
  } catch (const std::exception& e) {
    std::cerr << "qat: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
