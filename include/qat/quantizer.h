// A quantizer: one encoding (per-tensor or per-channel) applied to one
// tensor of the graph, as a torch::nn::Module so that its scale and zero
// point are parameters (trainable with range learning, saved in
// checkpoints).
//
// States: calibrating (observes inputs with an analyzer, passes them
// through), quantizing (fake-quantizes), disabled (passes through).
#pragma once

#include "qat/analyzers.h"
#include "qat/encoding.h"
#include "qat/fake_quant.h"

#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace qat {

class Quantizer : public torch::nn::Module {
 public:
  // `analyzer` names the calibration analyzer (make_analyzer's names);
  // `channels` sizes the scale and zero point (1 for per-tensor).
  Quantizer(QuantSpec spec, std::string analyzer, int64_t channels = 1);

  const QuantSpec& spec() const { return spec_; }
  // Changing the spec drops the encoding: it must be calibrated again.
  void set_spec(const QuantSpec& spec);
  const std::string& analyzer_name() const { return analyzer_name_; }
  void set_analyzer(const std::string& analyzer);

  bool enabled() const { return enabled_; }
  void set_enabled(bool enabled) { enabled_ = enabled; }
  bool has_encoding() const;
  Encoding encoding() const;
  void set_encoding(const Encoding& encoding);

  // Range learning: scale (and, for asymmetric specs, zero point) receive
  // gradients through the LSQ estimator.
  void set_trainable(bool trainable);
  bool trainable() const { return trainable_; }
  // The tensors an optimizer should update when trainable.
  std::vector<torch::Tensor> encoding_parameters();

  void start_calibration();
  bool calibrating() const { return analyzer_ != nullptr; }
  // Sets the encoding from what was observed; throws std::logic_error if
  // nothing was.
  void finish_calibration();

  // Whether forward() fake-quantizes now: calibrated, enabled, not calibrating.
  bool quantizing() const { return !analyzer_ && enabled_ && has_encoding(); }
  // The scale and zero point forward() applies, shape [] (per-tensor) or
  // [C], differentiable with range learning.
  torch::Tensor applied_scale() const;
  torch::Tensor applied_zero_point() const;

  // Quantizes activation(x): the ReLU or Clip the quantizer absorbed from
  // the graph (docs/quantsim.md) applies in every state, so that a
  // disabled or calibrating quantizer passes (and observes) activation(x).
  torch::Tensor forward(const torch::Tensor& x, const FusedActivation& activation = {});

 private:
  void set_has_encoding(bool value);
  torch::Tensor effective_scale() const;

  QuantSpec spec_;
  std::string analyzer_name_;
  std::unique_ptr<EncodingAnalyzer> analyzer_;
  torch::Tensor scale_;
  torch::Tensor zero_point_;
  torch::Tensor has_encoding_;  // bool [1]
  bool enabled_ = true;
  bool trainable_ = false;
};

// The op a quantizing Quantizer applies, given its applied scale and zero
// point: the LSQ op when `learnable`, the straight-through one otherwise.
torch::Tensor apply_fake_quant(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero_point,
                               const QuantSpec& spec, bool learnable, const FusedActivation& activation = {});

}  // namespace qat
