// `qat export`: the FP32 model, the quantized model (QDQ) and its
// encodings, ready for ONNX Runtime, OpenVINO or AIMET-format consumers.
#include "cli/pipeline.h"

#include "qat/cle.h"
#include "qat/encodings.h"
#include "qat/onnx_export.h"
#include "qat/progress.h"

#include <cstdio>
#include <filesystem>

namespace qat::cli {
namespace {

// A sim with the encodings (and fine-tuned weights) of a saved sim
// checkpoint; its configuration must be the one it was saved with.
std::unique_ptr<QuantSim> load_sim(std::shared_ptr<GraphModule> model, const SimArgs& args,
                                   const std::vector<int64_t>& input_shape, const std::string& checkpoint) {
  // CLE changes the graph (BN folded, ReLU6 -> ReLU); the checkpoint's
  // weights then replace the equalised ones.
  if (args.cle) equalize_cross_layer(*model);
  auto sim = std::make_unique<QuantSim>(std::move(model), sim_options(args), input_shape);
  check_layer_bits(*sim, args);
  load_checkpoint_weights(checkpoint, sim->model());
  return sim;
}

// The sim's logits on `test`, in loader order.
torch::Tensor test_logits(QuantSim& sim, const data::DataLoader& test) {
  torch::NoGradGuard no_grad;
  sim.model().eval();
  std::vector<torch::Tensor> logits;
  ProgressBar bar("sim", test.num_batches());
  for (const auto& batch : test) {
    logits.push_back(sim.model().forward(batch.images));
    bar.update(static_cast<int64_t>(logits.size()));
  }
  bar.finish();
  return torch::cat(logits);
}

double megabytes(const std::string& path) { return static_cast<double>(std::filesystem::file_size(path)) / 1e6; }

}  // namespace

int run_export_command(const ModelArgs& model_args, const DataArgs& data_args, const SimArgs& sim_args,
                       const ExportArgs& args) {
  const EncodingsVersion version = parse_encodings_version(args.encodings_version);
  const data::DataLoader calibration = make_loader(data_args, data::Split::kTrain, false);
  const auto fp32_model = load_model(model_args, calibration.dataset(), data_args.seed);
  // A second copy of the model: the sim rewrites the one it is given.
  auto model = load_model(model_args, calibration.dataset(), data_args.seed);
  auto shape = calibration.dataset().images.sizes().vec();
  shape[0] = 1;
  auto sim = args.sim_checkpoint.empty() ? make_calibrated_sim(model, sim_args, calibration)
                                         : load_sim(model, sim_args, shape, args.sim_checkpoint);
  // Only now that every input has been read and checked: a bad one must
  // not leave a half-replaced export behind.
  std::filesystem::create_directories(args.out_dir);
  const std::string fp32_path = args.out_dir + "/model_fp32.onnx";
  export_onnx_float(*fp32_model, fp32_path);
  const std::string int8_path = args.out_dir + "/model_int8.onnx";
  export_onnx_qdq(*sim, int8_path);
  save_encodings(*sim, args.out_dir + "/encodings.json", version);
  // With its biases on the exported int32 grid the sim computes what the
  // runtimes will: its accuracy is the one to expect from model_int8.onnx.
  round_biases_to_export_grid(*sim);
  const data::DataLoader test = make_loader(data_args, data::Split::kTest, false);
  const torch::Tensor logits = test_logits(*sim, test);
  const double accuracy = logits.argmax(1).eq(test.dataset().labels).to(torch::kDouble).mean().item<double>();
  std::printf("sim (biases on the int32 grid) test accuracy: %.2f%% (%ld images)\n", 100.0 * accuracy,
              static_cast<long>(logits.size(0)));
  if (args.save_sim_logits) save_onnx_tensor(logits, "sim_logits", args.out_dir + "/sim_test_logits.pb");
  std::printf("wrote %s (%.2f MB), %s (%.2f MB, %.2fx smaller), %s/encodings.json (%zu quantized tensors)\n",
              fp32_path.c_str(), megabytes(fp32_path), int8_path.c_str(), megabytes(int8_path),
              megabytes(fp32_path) / megabytes(int8_path), args.out_dir.c_str(), sim->quantizers().size());
  return 0;
}

}  // namespace qat::cli
