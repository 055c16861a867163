// QuantSim: the pass that turns an FP32 GraphModule into a quantization
// simulation, and the handle to calibrate, train and inspect it.
//
// Placement (docs/quantsim.md): a quantizer on every quantized weight
// (per-channel along the output-channel axis when the config says so), on
// the model input, and on the output of every op whose config says
// is_output_quantized -- except inside supergroups (Conv+BN+ReLU etc.),
// where only the last op's output is quantized, and after
// quantization-agnostic ops (MaxPool, Reshape, Flatten, ...), whose output
// keeps its input's grid. Inputs of a Concat share one quantizer.
#pragma once

#include "qat/graph.h"
#include "qat/quantizer.h"
#include "qat/sim_config.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qat {

// Op type of the nodes the sim inserts to quantize activations; attribute
// "quantizer" names their Quantizer among the module's attachments.
inline constexpr const char* kFakeQuantOp = "QatFakeQuant";

// What happens to BatchNormalization nodes that follow a Conv.
enum class BatchNormMode {
  kFold,      // folded into the conv once, before quantizers are inserted
  kSimulate,  // torch.ao-style simulated folding: the folded weight is
              // quantized, BN still normalises with batch statistics while
              // training (until frozen), and eval equals the folded conv
};

struct LayerBits {
  std::optional<int> param_bits;
  std::optional<int> activation_bits;
};

struct QuantSimOptions {
  SimConfig config;
  // Per node name (the op whose weight / output is quantized).
  std::map<std::string, LayerBits> layer_bits;
  // Bitwidth of the model-input quantizer (unset: the config's activation
  // bitwidth; a layer_bits entry for the input name wins over both). Image
  // data are 8-bit already, so a 4-bit-activation sim that quantizes its
  // input to 4 bits discards information no training can restore.
  std::optional<int> model_input_bits;
  std::string activation_analyzer = "minmax";  // make_analyzer names
  std::string param_analyzer = "minmax";
  BatchNormMode batchnorm = BatchNormMode::kSimulate;
};

// One quantizer of the sim and what it quantizes.
struct QuantizerInfo {
  std::string name;    // quantizer name == node name in the sim graph
  std::string tensor;  // the quantized value (ONNX tensor name)
  std::string layer;   // node owning the weight, or producing the activation
  bool is_param = false;
};

struct LayerSqnr {
  std::string node;
  std::string op_type;
  double sqnr_db = 0.0;
};

class QuantSim {
 public:
  // Modifies `model` in place (BN handling, quantizer nodes).
  // `input_shape` is one sample input shape, e.g. {1, 1, 28, 28}.
  QuantSim(std::shared_ptr<GraphModule> model, QuantSimOptions options, std::vector<int64_t> input_shape);

  GraphModule& model() { return *model_; }
  std::shared_ptr<GraphModule> model_ptr() { return model_; }
  const std::vector<QuantizerInfo>& quantizers() const { return quantizers_; }
  Quantizer& quantizer(const std::string& name);

  // Calibrates every quantizer: `forward_pass` runs calibration batches
  // through model() (quantizers pass data through while they observe).
  // Throws std::runtime_error naming quantizers that saw no data.
  void compute_encodings(const std::function<void(GraphModule&)>& forward_pass);

  // All quantizers on (quantized) or off (the FP32 model).
  void set_quantization_enabled(bool enabled);
  // QAT variants: weight encodings always train; activation encodings
  // only with range learning.
  void set_range_learning(bool weights, bool activations);
  std::vector<torch::Tensor> encoding_parameters();
  // Trainable tensors that are not encodings (weights, biases, BN affine).
  std::vector<torch::Tensor> weight_parameters();
  // Stops BN statistics updates in simulated-fold layers (use running
  // stats while training too).
  void freeze_batchnorm_stats(bool frozen = true);

  // SQNR (dB) of each node's output, quantized vs float, on one batch.
  std::vector<LayerSqnr> sqnr_report(const torch::Tensor& batch);

  // A JSON description of every quantizer's spec and state, stored in
  // checkpoints to refuse resuming into a differently configured sim.
  std::string describe() const;

 private:
  std::shared_ptr<GraphModule> model_;
  QuantSimOptions options_;
  std::vector<QuantizerInfo> quantizers_;
};

// Static BN folding: every Conv whose output feeds only a
// BatchNormalization absorbs it (w' = w * gamma / sqrt(var + eps),
// b' = (b - mean) * gamma / sqrt(var + eps) + beta) and the BN node is
// removed. Returns the names of the folded BN nodes.
std::vector<std::string> fold_batchnorms(GraphModule& model);

}  // namespace qat
