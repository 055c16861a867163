// The pipeline stages behind the CLI's subcommands: FP32 training, PTQ
// (quantsim + calibration), QAT, and the end-to-end demo.
#pragma once

#include "qat/data.h"
#include "qat/quantsim.h"
#include "qat/train.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qat::cli {

struct DataArgs {
  std::string data = "fashion-mnist";
  std::string data_dir;
  int64_t batch_size = 128;
  uint64_t seed = 0;
};

struct ModelArgs {
  std::string model = "resnet20";
  std::string onnx;        // an ONNX file instead of a zoo model
  std::string checkpoint;  // FP32 weights to start from
};

struct SimArgs {
  std::string config = "default";  // preset name or AIMET JSON file
  int param_bits = 8;
  int activation_bits = 8;
  int input_bits = 0;  // model input quantizer (0: activation_bits)
  std::string activation_analyzer = "minmax";
  std::string param_analyzer = "minmax";
  std::string batchnorm = "simulate";  // or "fold"
  int64_t calibration_batches = 16;
  std::string layer_bits_file;  // JSON {"layer": weight bits} (qat analyze --mp-out)
  bool cle = false;  // cross-layer equalization of the FP32 model first
  // PTQ passes after calibration (docs/ptq.md), on the first ptq_batches
  // calibration batches.
  int64_t ptq_batches = 4;
  bool seq_mse = false;
  int64_t seq_mse_candidates = 20;
  std::string seq_mse_loss = "mse";
  bool adaround = false;
  int64_t adaround_iterations = 10000;
};

struct ExportArgs {
  std::string out_dir;
  std::string sim_checkpoint;  // a sim saved by `qat ptq --out` or `qat qat --out`; empty: calibrate
  std::string encodings_version = "1.0.0";
  bool save_sim_logits = false;  // sim_test_logits.pb, for bench/deploy_bench.py
};

struct QatArgs {
  TrainOptions train;
  bool range_learning = false;
  int64_t freeze_bn_epoch = -1;  // freeze BN statistics from this epoch on
  std::vector<std::string> layers;  // selective QAT: train only these nodes
  int64_t top_k = 0;                // selective QAT of the k most sensitive layers
  int64_t analysis_batches = 16;    // batches the sensitivity analysis runs
  double dampen_weight = 0.0;       // oscillation dampening's final weight (0: off)
  bool bn_reestimate = false;       // re-estimate BN statistics after QAT
  int64_t bn_reestimate_batches = 100;
};

struct AnalyzeArgs {
  int64_t batches = 16;  // training-split batches after the calibration ones
  std::string json;     // also write the report here
  double mp_budget = 0.0;  // mixed precision: mean weight bits (0: off)
  std::vector<int> mp_candidates{4, 8, 16};
  std::string mp_out;  // the chosen bits, for --layer-bits
};

// --layer-bits files (src/cli/layer_bits.cpp). check_layer_bits throws,
// naming the option, for a layer the sim has no weights for.
std::map<std::string, int> read_layer_bits(const std::string& path);
void write_layer_bits(const std::string& path, const std::map<std::string, int>& bits);
void check_layer_bits(const QuantSim& sim, const SimArgs& args);

data::DataLoader make_loader(const DataArgs& args, data::Split split, bool augment);
std::shared_ptr<GraphModule> load_model(const ModelArgs& model, const data::Dataset& data, uint64_t seed);

// The sim options `args` describe (config file, bitwidths, analyzers, BN mode).
QuantSimOptions sim_options(const SimArgs& args);

// Builds the sim for `model`, calibrates it on the first
// calibration_batches batches of `calibration` and runs the PTQ passes
// `args` asks for.
std::unique_ptr<QuantSim> make_calibrated_sim(std::shared_ptr<GraphModule> model, const SimArgs& args,
                                              const data::DataLoader& calibration);

// The k weighted layers whose quantization costs most accuracy, measured
// on `batches` training batches that follow the calibration batches.
std::vector<std::string> most_sensitive_layers(QuantSim& sim, const SimArgs& args,
                                               const data::DataLoader& calibration, int64_t batches, int64_t k);

// Trains the sim (QAT) and returns the per-epoch history.
std::vector<EpochStats> run_qat(QuantSim& sim, const QatArgs& args, const data::DataLoader& train_loader,
                                const data::DataLoader& test_loader);

int run_train_command(const ModelArgs& model, const DataArgs& data, const TrainOptions& options);
int run_eval_command(const ModelArgs& model, const DataArgs& data);
int run_ptq_command(const ModelArgs& model, const DataArgs& data, const SimArgs& sim, const std::string& out_dir);
int run_analyze_command(const ModelArgs& model, const DataArgs& data, const SimArgs& sim, const AnalyzeArgs& args);
int run_qat_command(const ModelArgs& model, const DataArgs& data, const SimArgs& sim, const QatArgs& qat);
// Writes model_fp32.onnx, model_int8.onnx (QDQ) and encodings.json.
int run_export_command(const ModelArgs& model, const DataArgs& data, const SimArgs& sim, const ExportArgs& args);
// The README's main job; `work_dir` caches the FP32 baseline.
// steps_per_epoch (0: whole epochs) cuts every training epoch short.
int run_demo_command(const std::string& work_dir, int64_t fp32_epochs, int64_t qat_epochs, int64_t steps_per_epoch);

}  // namespace qat::cli
