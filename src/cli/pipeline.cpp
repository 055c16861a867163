#include "cli/pipeline.h"

#include "qat/adaround.h"
#include "qat/bn_reestimation.h"
#include "qat/cle.h"
#include "qat/dampening.h"
#include "qat/onnx_import.h"
#include "qat/progress.h"
#include "qat/seq_mse.h"
#include "qat/zoo.h"

#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace qat::cli {
namespace {

data::Dataset load_split(const DataArgs& args, data::Split split) {
  if (args.data == "fashion-mnist") {
    return data::load_fashion_mnist(split, args.data_dir.empty() ? data::kFashionMnistDir : args.data_dir);
  }
  if (args.data == "cifar10") {
    if (args.data_dir.empty()) throw std::invalid_argument("--data cifar10 needs --data-dir");
    return data::load_cifar10(split, args.data_dir);
  }
  throw std::invalid_argument("unknown data set '" + args.data + "' (fashion-mnist, cifar10)");
}

BatchNormMode batchnorm_mode(const std::string& name) {
  if (name == "simulate") return BatchNormMode::kSimulate;
  if (name == "fold") return BatchNormMode::kFold;
  throw std::invalid_argument("unknown --bn mode '" + name + "' (simulate, fold)");
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Selective QAT: only the named layers' weights and weight encodings train.
void restrict_training(QuantSim& sim, const std::vector<std::string>& layers) {
  const std::set<std::string> chosen(layers.begin(), layers.end());
  std::set<std::string> kept;
  for (const Node& node : sim.model().graph().nodes) {
    if (!chosen.count(node.name)) continue;
    for (const auto& in : node.inputs) kept.insert(in);
  }
  for (const auto& name : layers) {
    bool found = false;
    for (const Node& node : sim.model().graph().nodes) found = found || node.name == name;
    if (!found) throw std::invalid_argument("--layers: no node named '" + name + "'");
  }
  for (const auto& name : sim.model().initializer_names()) {
    if (!kept.count(name)) sim.model().initializer(name).set_requires_grad(false);
  }
  for (const auto& info : sim.quantizers()) {
    if (!chosen.count(info.layer)) sim.quantizer(info.name).set_trainable(false);
  }
}

// The images of the first `count` batches of an epoch-0 pass (fewer when
// the loader has fewer).
std::vector<torch::Tensor> first_batches(const data::DataLoader& loader, int64_t count) {
  std::vector<torch::Tensor> batches;
  for (int64_t i = 0; i < std::min(count, loader.num_batches()); ++i) batches.push_back(loader.batch(0, i).images);
  return batches;
}

// The weight searches after calibration, each on the first ptq_batches
// calibration batches. With both, AdaRound rounds on Sequential MSE's grid.
void run_ptq_passes(QuantSim& sim, const SimArgs& args, const data::DataLoader& calibration) {
  if (!args.seq_mse && !args.adaround) return;
  if (args.ptq_batches < 1) {
    throw std::invalid_argument("--ptq-batches " + std::to_string(args.ptq_batches) + ": must be >= 1");
  }
  const std::vector<torch::Tensor> batches = first_batches(calibration, args.ptq_batches);
  if (args.seq_mse) {
    const auto start = std::chrono::steady_clock::now();
    apply_seq_mse(sim, batches, {args.seq_mse_candidates, args.seq_mse_loss});
    std::printf("seq-mse: %ld candidates, %zu batches, %.1f s\n", static_cast<long>(args.seq_mse_candidates),
                batches.size(), seconds_since(start));
  }
  if (args.adaround) {
    const auto start = std::chrono::steady_clock::now();
    AdaRoundOptions options;
    options.iterations = args.adaround_iterations;
    apply_adaround(sim, batches, options);
    std::printf("adaround: %ld iterations per layer, %zu batches, %.1f s\n", static_cast<long>(options.iterations),
                batches.size(), seconds_since(start));
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + (shape[i] < 0 ? "?" : std::to_string(shape[i]));
  return text + "]";
}

// An imported model must take the data set's images: caught here, the
// mismatch is named in terms of the file and the data instead of surfacing
// as a kernel error deep inside the first layer.
void check_input_matches(const Graph& graph, const data::Dataset& data, const std::string& path) {
  if (graph.inputs.size() != 1) {
    throw std::invalid_argument(path + ": the model has " + std::to_string(graph.inputs.size()) +
                                " inputs; qat feeds it one batch of images");
  }
  const ValueInfo& input = graph.inputs[0];
  std::vector<int64_t> images = data.images.sizes().vec();
  images[0] = -1;
  bool fits = input.shape.empty() || input.shape.size() == images.size();
  for (size_t d = 1; fits && d < input.shape.size(); ++d) fits = input.shape[d] < 0 || input.shape[d] == images[d];
  if (!fits) {
    throw std::invalid_argument(path + ": input '" + input.name + "' has shape " + shape_text(input.shape) +
                                ", but the data set's images are " + shape_text(images));
  }
}

// Saves a sim (or FP32 model) with no training history, for `qat eval`.
void save_model(const std::string& dir, GraphModule& model, const std::string& tag) {
  std::filesystem::create_directories(dir);
  torch::optim::SGD unused(model.parameters(), 0.0);
  TrainState state;
  state.tag = tag;
  save_checkpoint(dir + "/checkpoint.pt", model, unused, state);
}

// BN re-estimation after QAT on the first batches of the (unaugmented)
// training split; the result is saved beside the QAT checkpoint.
void reestimate_and_report(QuantSim& sim, const QatArgs& args, const data::DataLoader& data,
                           const data::DataLoader& test_loader) {
  const std::vector<torch::Tensor> batches = first_batches(data, args.bn_reestimate_batches);
  const auto layers = reestimate_batchnorm(sim, batches);
  const double accuracy = evaluate(sim.model(), test_loader, "bn re-estimated").accuracy;
  std::printf("BN re-estimation (%zu layers, %zu batches): %s\n", layers.size(), batches.size(),
              percent(accuracy).c_str());
  if (!args.train.out_dir.empty()) save_model(args.train.out_dir + "/bn_reestimated", sim.model(), sim.describe());
}

// "W4A4", or "W4A4 (input 8-bit)" when the model input has its own bitwidth.
std::string bits_label(const SimArgs& args) {
  std::string label = "W" + std::to_string(args.param_bits) + "A" + std::to_string(args.activation_bits);
  if (args.input_bits != 0) label += " (input " + std::to_string(args.input_bits) + "-bit)";
  return label;
}

}  // namespace

data::DataLoader make_loader(const DataArgs& args, data::Split split, bool augment) {
  data::Dataset dataset = load_split(args, split);
  data::LoaderOptions options;
  options.batch_size = args.batch_size;
  options.seed = args.seed;
  options.normalization = args.data == "fashion-mnist"
                              ? data::Normalization{{data::kFashionMnistMean}, {data::kFashionMnistStd}}
                              : data::compute_normalization(dataset.images);
  if (augment) {
    options.shuffle = true;
    options.drop_last = true;
    options.augmentation.crop_padding = 2;
    options.augmentation.horizontal_flip = true;
  }
  return data::DataLoader(std::move(dataset), options);
}

std::shared_ptr<GraphModule> load_model(const ModelArgs& args, const data::Dataset& data, uint64_t seed) {
  std::shared_ptr<GraphModule> model;
  if (!args.onnx.empty()) {
    model = import_onnx(args.onnx);
    check_input_matches(model->graph(), data, args.onnx);
  } else {
    ZooOptions options;
    options.in_channels = data.images.size(1);
    options.image_size = data.images.size(2);
    options.num_classes = static_cast<int64_t>(data.class_names.size());
    options.seed = seed;
    model = make_model(args.model, options);
  }
  if (!args.checkpoint.empty()) load_checkpoint_weights(args.checkpoint, *model);
  return model;
}

QuantSimOptions sim_options(const SimArgs& args) {
  QuantSimOptions options;
  options.config = load_sim_config(args.config);
  options.config.param_bitwidth = args.param_bits;
  options.config.activation_bitwidth = args.activation_bits;
  if (args.input_bits != 0) options.model_input_bits = args.input_bits;
  options.activation_analyzer = args.activation_analyzer;
  options.param_analyzer = args.param_analyzer;
  options.batchnorm = batchnorm_mode(args.batchnorm);
  if (!args.layer_bits_file.empty()) {
    for (const auto& [layer, bits] : read_layer_bits(args.layer_bits_file)) options.layer_bits[layer].param_bits = bits;
  }
  return options;
}

std::unique_ptr<QuantSim> make_calibrated_sim(std::shared_ptr<GraphModule> model, const SimArgs& args,
                                              const data::DataLoader& calibration) {
  if (args.cle) {
    const CleResult cle = equalize_cross_layer(*model);
    std::printf("cle: %zu layer pairs equalised, %ld ReLU6 replaced by ReLU, %ld high biases absorbed\n",
                cle.pairs.size(), static_cast<long>(cle.relu6_replaced), static_cast<long>(cle.biases_absorbed));
  }
  auto shape = calibration.dataset().images.sizes().vec();
  shape[0] = 1;
  auto sim = std::make_unique<QuantSim>(std::move(model), sim_options(args), shape);
  check_layer_bits(*sim, args);
  const int64_t batches = std::min(args.calibration_batches, calibration.num_batches());
  sim->compute_encodings([&](GraphModule& m) {
    ProgressBar bar("calibrate", batches);
    for (int64_t i = 0; i < batches; ++i) {
      m.forward(calibration.batch(0, i).images);
      bar.update(i + 1);
    }
    bar.finish();
  });
  run_ptq_passes(*sim, args, calibration);
  return sim;
}

std::vector<EpochStats> run_qat(QuantSim& sim, const QatArgs& args, const data::DataLoader& train_loader,
                                const data::DataLoader& test_loader) {
  sim.set_range_learning(/*weights=*/true, /*activations=*/args.range_learning);
  if (!args.layers.empty()) restrict_training(sim, args.layers);
  TrainOptions options = args.train;
  options.encoding_parameters = sim.encoding_parameters();
  options.checkpoint_tag = sim.describe();
  options.on_epoch_start = [&](int64_t epoch) {
    sim.freeze_batchnorm_stats(args.freeze_bn_epoch >= 0 && epoch >= args.freeze_bn_epoch);
  };
  if (args.dampen_weight > 0) {
    options.regularizer = [&](double progress) {
      return dampening_weight(args.dampen_weight, progress) * oscillation_dampening_loss(sim);
    };
  }
  return train(sim.model(), train_loader, test_loader, options);
}

int run_train_command(const ModelArgs& model_args, const DataArgs& data_args, const TrainOptions& options) {
  const data::DataLoader train_loader = make_loader(data_args, data::Split::kTrain, true);
  const data::DataLoader test_loader = make_loader(data_args, data::Split::kTest, false);
  auto model = load_model(model_args, train_loader.dataset(), data_args.seed);
  const auto history = train(*model, train_loader, test_loader, options);
  if (!history.empty()) {
    std::printf("final test accuracy: %s after %ld epochs\n", percent(history.back().test_accuracy).c_str(),
                static_cast<long>(history.back().epoch));
  }
  return 0;
}

int run_eval_command(const ModelArgs& model_args, const DataArgs& data_args) {
  const data::DataLoader test_loader = make_loader(data_args, data::Split::kTest, false);
  auto model = load_model(model_args, test_loader.dataset(), data_args.seed);
  const EvalResult result = evaluate(*model, test_loader, "eval");
  std::printf("test accuracy: %s  loss %.4f  (%ld images)\n", percent(result.accuracy).c_str(), result.loss,
              static_cast<long>(result.samples));
  return 0;
}

namespace {

// What `qat ptq` and `qat qat` start with: the FP32 model's accuracy, then
// its sim, calibrated, and the sim's accuracy.
struct PtqStart {
  PtqStart(data::DataLoader calibration_split, data::DataLoader test_split)
      : calibration(std::move(calibration_split)), test(std::move(test_split)) {}
  data::DataLoader calibration, test;
  double fp32 = 0.0, ptq = 0.0;
  std::unique_ptr<QuantSim> sim;
};

PtqStart start_with_ptq(const ModelArgs& model_args, const DataArgs& data_args, const SimArgs& sim_args) {
  sim_options(sim_args);  // a bad config fails now, not after the FP32 evaluation
  PtqStart start(make_loader(data_args, data::Split::kTrain, false), make_loader(data_args, data::Split::kTest, false));
  auto model = load_model(model_args, start.test.dataset(), data_args.seed);
  start.fp32 = evaluate(*model, start.test, "fp32").accuracy;
  start.sim = make_calibrated_sim(model, sim_args, start.calibration);
  start.ptq = evaluate(start.sim->model(), start.test, "ptq").accuracy;
  return start;
}

}  // namespace

int run_ptq_command(const ModelArgs& model_args, const DataArgs& data_args, const SimArgs& sim_args,
                    const std::string& out_dir) {
  const PtqStart start = start_with_ptq(model_args, data_args, sim_args);
  QuantSim& sim = *start.sim;
  auto report = sim.sqnr_report(start.calibration.batch(0, 0).images);
  std::sort(report.begin(), report.end(), [](const auto& a, const auto& b) { return a.sqnr_db < b.sqnr_db; });
  std::printf("least accurate layers (SQNR, float vs quantized outputs):\n");
  for (size_t i = 0; i < std::min<size_t>(5, report.size()); ++i) {
    std::printf("  %-32s %-18s %6.1f dB\n", report[i].node.c_str(), report[i].op_type.c_str(), report[i].sqnr_db);
  }
  std::printf("FP32 %s  ->  PTQ %s %s\n", percent(start.fp32).c_str(), bits_label(sim_args).c_str(),
              percent(start.ptq).c_str());
  if (!out_dir.empty()) save_model(out_dir, sim.model(), sim.describe());
  return 0;
}

int run_qat_command(const ModelArgs& model_args, const DataArgs& data_args, const SimArgs& sim_args,
                    const QatArgs& qat_args) {
  if (qat_args.top_k != 0 && !qat_args.layers.empty()) {
    throw std::invalid_argument("--top-k and --layers both choose the layers: give one");
  }
  if (qat_args.bn_reestimate && batchnorm_mode(sim_args.batchnorm) != BatchNormMode::kSimulate) {
    throw std::invalid_argument("--bn-reestimate needs --bn simulate (with --bn fold no BN is left to re-estimate)");
  }
  if (qat_args.bn_reestimate && qat_args.bn_reestimate_batches < 1) {
    throw std::invalid_argument("--bn-reestimate-batches " + std::to_string(qat_args.bn_reestimate_batches) +
                                ": must be >= 1");
  }
  const PtqStart start = start_with_ptq(model_args, data_args, sim_args);
  QuantSim& sim = *start.sim;
  const data::DataLoader train_loader = make_loader(data_args, data::Split::kTrain, true);
  QatArgs args = qat_args;
  // The teacher: the FP32 model loaded once more (the sim rebuilt the first).
  if (args.train.distill_weight > 0) args.train.teacher = load_model(model_args, start.test.dataset(), data_args.seed);
  if (args.top_k != 0) {
    args.layers = most_sensitive_layers(sim, sim_args, start.calibration, args.analysis_batches, args.top_k);
    std::printf("selective QAT of the %ld most sensitive layers:", static_cast<long>(args.top_k));
    for (const auto& layer : args.layers) std::printf(" %s", layer.c_str());
    std::printf("\n");
  }
  const auto history = run_qat(sim, args, train_loader, start.test);
  std::printf("FP32 %s  ->  PTQ %s %s  ->  QAT %s (%s range learning)\n", percent(start.fp32).c_str(),
              bits_label(sim_args).c_str(), percent(start.ptq).c_str(),
              history.empty() ? "-" : percent(history.back().test_accuracy).c_str(),
              qat_args.range_learning ? "with" : "without");
  if (qat_args.bn_reestimate) reestimate_and_report(sim, qat_args, start.calibration, start.test);
  return 0;
}

int run_demo_command(const std::string& work_dir, int64_t fp32_epochs, int64_t qat_epochs, int64_t steps_per_epoch) {
  const auto start = std::chrono::steady_clock::now();
  DataArgs data_args;
  ModelArgs model_args;
  model_args.model = "resnet20";
  const data::DataLoader train_loader = make_loader(data_args, data::Split::kTrain, true);
  const data::DataLoader calibration = make_loader(data_args, data::Split::kTrain, false);
  const data::DataLoader test_loader = make_loader(data_args, data::Split::kTest, false);

  std::printf("== 1. FP32 baseline: %s on Fashion-MNIST, %ld epochs (cached in %s/fp32)\n", model_args.model.c_str(),
              static_cast<long>(fp32_epochs), work_dir.c_str());
  TrainOptions fp32_options;
  fp32_options.epochs = fp32_epochs;
  fp32_options.lr = 0.1;
  fp32_options.out_dir = work_dir + "/fp32";
  fp32_options.resume = true;  // a finished run is reused, an interrupted one continues
  fp32_options.steps_per_epoch = steps_per_epoch;
  auto fp32_model = load_model(model_args, train_loader.dataset(), 0);
  train(*fp32_model, train_loader, test_loader, fp32_options);
  model_args.checkpoint = work_dir + "/fp32/checkpoint.pt";
  const double fp32 = evaluate(*fp32_model, test_loader, "fp32").accuracy;

  struct Row {
    std::string stage, bits;
    double accuracy;
  };
  std::vector<Row> rows{{"FP32", "-", fp32}};
  for (const auto& [w, a] : {std::pair{8, 8}, {4, 8}, {4, 4}}) {
    SimArgs sim_args;
    sim_args.param_bits = w;
    sim_args.activation_bits = a;
    const std::string bits = bits_label(sim_args);
    std::printf("== 2. PTQ %s (min-max calibration, 16 batches)\n", bits.c_str());
    auto sim = make_calibrated_sim(load_model(model_args, train_loader.dataset(), 0), sim_args, calibration);
    rows.push_back({"PTQ", bits, evaluate(sim->model(), test_loader, "ptq " + bits).accuracy});
    if (w == 4 && a == 8) continue;  // QAT for the two ends of the range
    std::printf("== 3. QAT %s with range learning, %ld epoch(s)\n", bits.c_str(), static_cast<long>(qat_epochs));
    QatArgs qat_args;
    qat_args.range_learning = true;
    qat_args.train.epochs = qat_epochs;
    qat_args.train.lr = w == 8 ? 1e-3 : 1e-2;
    qat_args.train.encoding_lr = 1e-3;
    qat_args.train.schedule = "cosine";
    qat_args.train.steps_per_epoch = steps_per_epoch;
    qat_args.train.out_dir = work_dir + "/qat_w" + std::to_string(w) + "a" + std::to_string(a);
    const auto history = run_qat(*sim, qat_args, train_loader, test_loader);
    rows.push_back({"QAT", bits, history.back().test_accuracy});
  }
  std::printf("== 4. Export the W8A8 QAT model: ONNX QDQ with int8 weights, AIMET encodings\n");
  SimArgs int8_args;
  ExportArgs export_args;
  export_args.out_dir = work_dir + "/export_" + model_args.model;
  export_args.sim_checkpoint = work_dir + "/qat_w8a8/checkpoint.pt";
  export_args.save_sim_logits = true;  // scripts/demo.sh compares ONNX Runtime and OpenVINO with them
  run_export_command(model_args, data_args, int8_args, export_args);
  std::ostringstream table;
  table << "| stage | bits | top-1 | vs FP32 |\n|---|---|---|---|\n";
  for (const Row& row : rows) {
    char delta[32];
    std::snprintf(delta, sizeof delta, "%+.2f pp", 100.0 * (row.accuracy - fp32));
    table << "| " << row.stage << " | " << row.bits << " | " << percent(row.accuracy) << " | "
          << (row.stage == "FP32" ? "" : delta) << " |\n";
  }
  std::printf("\n%s\ntotal time %s\n", table.str().c_str(), format_duration(seconds_since(start)).c_str());
  std::ofstream(work_dir + "/report.md") << table.str();
  return 0;
}

}  // namespace qat::cli
