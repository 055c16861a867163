#include "qat/quantizer.h"

#include "graph/clip.h"

#include <stdexcept>

namespace qat {
namespace {

// The absorbed activation alone, as the graph's Relu and Clip kernels
// compute it.
torch::Tensor activate(const torch::Tensor& x, const FusedActivation& activation) {
  switch (activation.kind) {
    case FusedActivation::Kind::kRelu:
      return torch::relu(x);
    case FusedActivation::Kind::kClip:
      return ops::clamp_constant(x, activation.lo, activation.hi);
    case FusedActivation::Kind::kNone:
      break;
  }
  return x;
}

}  // namespace

Quantizer::Quantizer(QuantSpec spec, std::string analyzer, int64_t channels)
    : spec_(std::move(spec)), analyzer_name_(std::move(analyzer)) {
  spec_.grid.validate();
  make_analyzer(analyzer_name_, spec_.channel_axis);  // rejects unknown names now, not at calibration
  scale_ = register_parameter("scale", torch::ones({channels}), false);
  zero_point_ = register_parameter("zero_point", torch::zeros({channels}), false);
  // A buffer, not a bool member, so that checkpoints carry it.
  has_encoding_ = register_buffer("has_encoding", torch::zeros({1}, torch::kBool));
}

bool Quantizer::has_encoding() const { return has_encoding_.data_ptr<bool>()[0]; }

void Quantizer::set_has_encoding(bool value) { has_encoding_.data_ptr<bool>()[0] = value; }

void Quantizer::set_spec(const QuantSpec& spec) {
  spec.grid.validate();
  spec_ = spec;
  set_has_encoding(false);
}

void Quantizer::set_analyzer(const std::string& analyzer) {
  make_analyzer(analyzer, spec_.channel_axis);
  analyzer_name_ = analyzer;
}

// An optimizer step can push a learned scale through zero; like NNCF, the
// quantizer uses |scale| (never below kMinScale), so a trained encoding
// always stays a valid one.
torch::Tensor Quantizer::effective_scale() const { return scale_.abs().clamp_min(kMinScale); }

Encoding Quantizer::encoding() const {
  if (!has_encoding()) throw std::logic_error("quantizer has no encoding yet: calibrate it first");
  return {spec_, effective_scale().detach().clone(), zero_point_.detach().clone()};
}

void Quantizer::set_encoding(const Encoding& encoding) {
  torch::NoGradGuard no_grad;
  // set_data keeps the parameters' identity, so optimizers holding them
  // keep working after an encoding is loaded.
  scale_.set_data(encoding.scale.to(torch::kFloat).reshape({-1}).clone());
  zero_point_.set_data(encoding.zero_point.to(torch::kFloat).reshape({-1}).clone());
  spec_ = encoding.spec;
  set_has_encoding(true);
}

void Quantizer::set_trainable(bool trainable) {
  trainable_ = trainable;
  scale_.set_requires_grad(trainable);
  // A symmetric grid pins the zero point; learning it would break symmetry.
  zero_point_.set_requires_grad(trainable && !spec_.symmetric);
}

std::vector<torch::Tensor> Quantizer::encoding_parameters() {
  std::vector<torch::Tensor> params;
  if (scale_.requires_grad()) params.push_back(scale_);
  if (zero_point_.requires_grad()) params.push_back(zero_point_);
  return params;
}

void Quantizer::start_calibration() { analyzer_ = make_analyzer(analyzer_name_, spec_.channel_axis); }

void Quantizer::finish_calibration() {
  if (!analyzer_) throw std::logic_error("quantizer is not calibrating");
  const Encoding encoding = analyzer_->compute_encoding(spec_);
  analyzer_.reset();
  set_encoding(encoding);
}

torch::Tensor Quantizer::applied_scale() const {
  // Per-tensor parameters are stored as [1]; the ops want [] or [C].
  return spec_.channel_axis ? effective_scale() : effective_scale().reshape({});
}

torch::Tensor Quantizer::applied_zero_point() const {
  return spec_.channel_axis ? zero_point_ : zero_point_.reshape({});
}

torch::Tensor Quantizer::forward(const torch::Tensor& x, const FusedActivation& activation) {
  if (analyzer_) {
    const torch::Tensor y = activate(x, activation);
    analyzer_->update(y.detach());
    return y;
  }
  if (!enabled_ || !has_encoding()) return activate(x, activation);
  return apply_fake_quant(x, applied_scale(), applied_zero_point(), spec_, trainable_, activation);
}

torch::Tensor apply_fake_quant(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero_point,
                               const QuantSpec& spec, bool learnable, const FusedActivation& activation) {
  if (learnable) return fake_quantize_learnable(x, scale, zero_point, spec, lsq_grad_factor(x, spec), activation);
  return fake_quantize(x, Encoding{spec, scale, zero_point}, activation);
}

}  // namespace qat
