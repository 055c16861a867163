// The qat command line: argument parsing only; the stages live in
// pipeline.cpp.
#include "cli/pipeline.h"
#include "qat/cpu_memory.h"
#include "qat/progress.h"
#include "qat/threads.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace {

using qat::cli::DataArgs;
using qat::cli::ExportArgs;
using qat::cli::ModelArgs;
using qat::cli::QatArgs;
using qat::cli::SimArgs;

// CLI11's PositiveNumber / NonNegativeNumber messages spell out the
// largest double (and NonNegativeNumber lets NaN through); these say what
// is wrong in words. A value that is no number at all is left to the
// option's own conversion error. `type` names the value in the help.
CLI::Validator lower_bound(int64_t bound, bool inclusive, const std::string& type) {
  return CLI::Validator(
      [bound, inclusive](std::string& value) {
        try {
          const double number = std::stod(value);
          if (inclusive ? number >= static_cast<double>(bound) : number > static_cast<double>(bound)) {
            return std::string();
          }
        } catch (const std::exception&) {
          return std::string();
        }
        return inclusive ? "must be " + std::to_string(bound) + " or more"
                         : "must be more than " + std::to_string(bound);
      },
      type + (inclusive ? ">=" : ">") + std::to_string(bound));
}

CLI::Validator at_least(int64_t least, const std::string& type = "INT") { return lower_bound(least, true, type); }

CLI::Validator more_than(int64_t bound, const std::string& type = "FLOAT") { return lower_bound(bound, false, type); }

void add_data_options(CLI::App* cmd, DataArgs& args) {
  cmd->add_option("--data", args.data, "data set: fashion-mnist or cifar10")->capture_default_str();
  cmd->add_option("--data-dir", args.data_dir, "directory holding the data set files");
  cmd->add_option("--batch-size", args.batch_size, "batch size")->capture_default_str()->check(at_least(1));
  cmd->add_option("--seed", args.seed, "seed for initialisation, shuffling and augmentation")->capture_default_str();
}

void add_model_options(CLI::App* cmd, ModelArgs& args) {
  cmd->add_option("--model", args.model, "zoo model name")->capture_default_str();
  cmd->add_option("--onnx", args.onnx, "ONNX file to load instead of a zoo model");
  cmd->add_option("--checkpoint", args.checkpoint, "checkpoint.pt with the FP32 weights to start from");
}

void add_sim_options(CLI::App* cmd, SimArgs& args) {
  cmd->add_option("--config", args.config, "quantsim config: default, performance, openvino or an AIMET JSON file")
      ->capture_default_str();
  cmd->add_option("--w-bits", args.param_bits, "weight bitwidth (2-16)")->capture_default_str()->check(CLI::Range(2, 16));
  cmd->add_option("--a-bits", args.activation_bits, "activation bitwidth (2-16)")
      ->capture_default_str()
      ->check(CLI::Range(2, 16));
  cmd->add_option("--input-bits", args.input_bits, "model input bitwidth (2-16; default: --a-bits)")
      ->check(CLI::Range(2, 16));
  cmd->add_option("--act-analyzer", args.activation_analyzer, "minmax, ema, percentile, mse or sqnr")
      ->capture_default_str();
  cmd->add_option("--param-analyzer", args.param_analyzer, "minmax, percentile, mse or sqnr")->capture_default_str();
  cmd->add_option("--bn", args.batchnorm, "BatchNorm: simulate (fold simulated while training) or fold")
      ->capture_default_str();
  cmd->add_option("--calib-batches", args.calibration_batches, "calibration batches")->capture_default_str();
  cmd->add_option("--ptq-batches", args.ptq_batches, "calibration batches the PTQ weight searches run")
      ->capture_default_str();
  cmd->add_option("--layer-bits", args.layer_bits_file, "JSON {\"layer\": weight bits}, e.g. from analyze --mp-out");
  cmd->add_flag("--cle", args.cle, "cross-layer equalization (folds BN, ReLU6 -> ReLU, absorbs high biases) first");
  cmd->add_flag("--seq-mse", args.seq_mse, "Sequential MSE: search per-channel weight ranges layer by layer");
  cmd->add_option("--seq-mse-candidates", args.seq_mse_candidates, "Sequential MSE: candidate ranges per channel")
      ->capture_default_str();
  cmd->add_option("--seq-mse-loss", args.seq_mse_loss, "Sequential MSE: mse or l1")->capture_default_str();
  cmd->add_flag("--adaround", args.adaround, "AdaRound: learn each weight's rounding direction layer by layer");
  cmd->add_option("--adaround-iters", args.adaround_iterations, "AdaRound: optimisation steps per layer")
      ->capture_default_str();
}

void add_train_options(CLI::App* cmd, qat::TrainOptions& options) {
  cmd->add_option("--epochs", options.epochs, "epochs")->capture_default_str()->check(at_least(1));
  cmd->add_option("--lr", options.lr, "initial learning rate")->capture_default_str()->check(more_than(0));
  cmd->add_option("--weight-decay", options.weight_decay, "weight decay")
      ->capture_default_str()
      ->check(at_least(0, "FLOAT"));
  cmd->add_option("--schedule", options.schedule, "cosine, step or constant")->capture_default_str();
  cmd->add_option("--step-epochs", options.step_epochs, "epochs between lr steps (step schedule: lr / 10)")
      ->capture_default_str();
  cmd->add_option("--steps-per-epoch", options.steps_per_epoch, "training batches per epoch (0: all)")
      ->capture_default_str()
      ->check(at_least(0));
  cmd->add_option("--grad-clip", options.grad_clip_norm, "clip gradient norm (0: off)")
      ->capture_default_str()
      ->check(at_least(0, "FLOAT"));
  const std::map<std::string, qat::NonFinitePolicy> policies{{"stop", qat::NonFinitePolicy::kStop},
                                                              {"skip", qat::NonFinitePolicy::kSkip}};
  cmd->add_option("--on-nonfinite", options.on_nonfinite, "NaN/Inf loss or gradient: stop the run, or skip the step")
      ->transform(CLI::CheckedTransformer(policies))
      ->default_str("stop");
  cmd->add_option("--out", options.out_dir, "run directory for checkpoint.pt");
  cmd->add_flag("--resume", options.resume, "continue from the run directory's checkpoint");
  cmd->add_flag("!--no-progress", options.progress, "no progress bars");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qat: quantization-aware training for LibTorch models"};
  app.require_subcommand(1);
  std::optional<int> threads;
  app.add_option("--threads", threads, "intra-op threads (default: $QAT_NUM_THREADS or all cores)");

  std::string demo_dir = "runs/demo";
  int64_t demo_fp32_epochs = 4, demo_qat_epochs = 1, demo_steps = 0;
  auto* demo = app.add_subcommand("demo", "run the end-to-end Fashion-MNIST pipeline: FP32 -> PTQ -> QAT");
  demo->add_option("--dir", demo_dir, "work directory (caches the FP32 baseline)")->capture_default_str();
  demo->add_option("--fp32-epochs", demo_fp32_epochs, "FP32 training epochs")->capture_default_str();
  demo->add_option("--qat-epochs", demo_qat_epochs, "QAT epochs")->capture_default_str();
  demo->add_option("--steps-per-epoch", demo_steps, "training batches per epoch (0: all; a quick check)")
      ->capture_default_str()
      ->check(at_least(0));

  ModelArgs model_args;
  DataArgs data_args;
  SimArgs sim_args;
  qat::TrainOptions train_options;
  QatArgs qat_args;
  qat_args.train.epochs = 2;
  qat_args.train.lr = 1e-3;
  qat_args.train.schedule = "step";

  auto* train = app.add_subcommand("train", "train a model in FP32");
  add_model_options(train, model_args);
  add_data_options(train, data_args);
  add_train_options(train, train_options);

  auto* eval = app.add_subcommand("eval", "evaluate an FP32 model's top-1 accuracy");
  add_model_options(eval, model_args);
  add_data_options(eval, data_args);
  // train and qat take --no-progress with their training options.
  bool progress = true;
  for (auto* cmd : {demo, eval}) cmd->add_flag("!--no-progress", progress, "no progress bars");

  std::string ptq_out;
  auto* ptq = app.add_subcommand("ptq", "post-training quantization: quantsim + calibration, then evaluate");
  add_model_options(ptq, model_args);
  add_data_options(ptq, data_args);
  add_sim_options(ptq, sim_args);
  ptq->add_option("--out", ptq_out, "directory to save the calibrated sim's checkpoint.pt");
  ptq->add_flag("!--no-progress", progress, "no progress bars");

  auto* qat_cmd = app.add_subcommand("qat", "quantization-aware training from a PTQ start");
  add_model_options(qat_cmd, model_args);
  add_data_options(qat_cmd, data_args);
  add_sim_options(qat_cmd, sim_args);
  add_train_options(qat_cmd, qat_args.train);
  qat_cmd->add_option("--encoding-lr", qat_args.train.encoding_lr, "learning rate of encodings (0: --lr)")
      ->check(at_least(0, "FLOAT"));
  qat_cmd->add_flag("--range-learning", qat_args.range_learning, "train activation encodings too");
  qat_cmd->add_option("--distill-weight", qat_args.train.distill_weight,
                      "knowledge distillation from the FP32 model: weight of its loss (0: off)")
      ->check(at_least(0, "FLOAT"));
  qat_cmd->add_option("--distill-temperature", qat_args.train.distill_temperature, "distillation temperature")
      ->capture_default_str()
      ->check(more_than(0));
  qat_cmd->add_option("--dampen", qat_args.dampen_weight,
                      "oscillation dampening: final weight of the loss pulling weights to their bin centres (0: off)")
      ->capture_default_str()
      ->check(at_least(0, "FLOAT"));
  qat_cmd->add_option("--freeze-bn-epoch", qat_args.freeze_bn_epoch, "freeze BN statistics from this epoch (0-based)");
  qat_cmd->add_option("--layers", qat_args.layers, "selective QAT: train only these nodes")->delimiter(',');
  qat_cmd->add_option("--top-k", qat_args.top_k, "selective QAT: train only the k most sensitive layers (qat analyze)");
  qat_cmd->add_option("--analysis-batches", qat_args.analysis_batches, "batches the --top-k analysis runs")
      ->capture_default_str();
  qat_cmd->add_flag("--bn-reestimate", qat_args.bn_reestimate,
                    "after QAT, re-estimate BN statistics and fold them into the weight scales");
  qat_cmd->add_option("--bn-reestimate-batches", qat_args.bn_reestimate_batches, "batches BN re-estimation averages")
      ->capture_default_str();

  qat::cli::AnalyzeArgs analyze_args;
  auto* analyze = app.add_subcommand(
      "analyze", "sensitivity: quantize one layer at a time (weights, activations) and rank the layers");
  add_model_options(analyze, model_args);
  add_data_options(analyze, data_args);
  add_sim_options(analyze, sim_args);
  analyze->add_option("--analysis-batches", analyze_args.batches, "training batches after the calibration ones")
      ->capture_default_str();
  analyze->add_option("--json", analyze_args.json, "also write the table and ranking as JSON");
  analyze->add_option("--mp-budget", analyze_args.mp_budget,
                      "mixed precision: choose per-layer weight bits for this mean (e.g. 6)");
  analyze->add_option("--mp-candidates", analyze_args.mp_candidates, "mixed precision: candidate weight bitwidths")
      ->delimiter(',');
  analyze->add_option("--mp-out", analyze_args.mp_out, "mixed precision: write the chosen bits (for --layer-bits)");

  ExportArgs export_args;
  auto* export_cmd = app.add_subcommand("export", "write model_fp32.onnx, model_int8.onnx (QDQ) and encodings.json");
  add_model_options(export_cmd, model_args);
  add_data_options(export_cmd, data_args);
  add_sim_options(export_cmd, sim_args);
  export_cmd->add_option("--sim-checkpoint", export_args.sim_checkpoint,
                         "checkpoint.pt of a sim saved by `qat ptq --out` or `qat qat --out` (default: calibrate)");
  export_cmd->add_option("--encodings-version", export_args.encodings_version, "AIMET format: 1.0.0 or 0.6.1")
      ->capture_default_str();
  export_cmd->add_option("--out", export_args.out_dir, "output directory")->required();
  export_cmd->add_flag("!--no-progress", progress, "no progress bars");
  export_cmd->add_flag("--sim-logits", export_args.save_sim_logits,
                       "also write the sim's test-set logits (sim_test_logits.pb) for bench/deploy_bench.py");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a ParseError too, with exit code 0; real errors get the
    // same "qat: error:" prefix as every other bad input.
    if (e.get_exit_code() != 0) std::cerr << "qat: error: ";
    return app.exit(e);
  }
  try {
    const int used = qat::configure_threads(threads);
    std::cerr << "qat: " << used << " threads\n";
    qat::install_caching_cpu_allocator();  // QAT's peak RSS near its tensors' peak (qat/cpu_memory.h)
    qat::set_progress_bars_enabled(progress && train_options.progress && qat_args.train.progress);
    if (demo->parsed()) return qat::cli::run_demo_command(demo_dir, demo_fp32_epochs, demo_qat_epochs, demo_steps);
    if (train->parsed()) {
      if (train_options.out_dir.empty()) throw std::invalid_argument("train needs --out DIR");
      return qat::cli::run_train_command(model_args, data_args, train_options);
    }
    if (eval->parsed()) return qat::cli::run_eval_command(model_args, data_args);
    if (ptq->parsed()) return qat::cli::run_ptq_command(model_args, data_args, sim_args, ptq_out);
    if (analyze->parsed()) return qat::cli::run_analyze_command(model_args, data_args, sim_args, analyze_args);
    if (qat_cmd->parsed()) return qat::cli::run_qat_command(model_args, data_args, sim_args, qat_args);
    if (export_cmd->parsed()) return qat::cli::run_export_command(model_args, data_args, sim_args, export_args);
  } catch (const std::exception& e) {
    std::cerr << "qat: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
