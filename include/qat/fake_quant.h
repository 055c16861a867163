// Quantize, dequantize and fake-quantize with autograd.
//
// Forward (float32): bit for bit ATen's fake_quantize_per_{tensor,channel}_affine,
// i.e. q = clamp(nearbyint(x * (1/s)) + z, qmin, qmax), x' = (q - z) * s.
// Backward: straight-through estimator for x (gradient passes where the
// unclamped q lies inside the grid), and, for the learnable variants, the
// LSQ gradients for scale and zero point (docs/quantization.md, section 3).
// float64 inputs are computed in double (used by finite-difference tests).
#pragma once

#include "qat/encoding.h"

namespace qat {

// A ReLU or Clip evaluated inside the fake-quant kernels, on x before it is
// quantized: fake_quantize(x, enc, FusedActivation::relu()) has the values
// and gradients of fake_quantize(relu(x), enc) (ATen's relu: no gradient
// at 0; Clip: gradient where lo <= x <= hi, as ATen's clamp), in one pass
// over x each way instead of two. The quantizer of a ReLU's output absorbs
// the ReLU this way (docs/quantsim.md).
struct FusedActivation {
  enum class Kind { kNone, kRelu, kClip };
  Kind kind = Kind::kNone;
  double lo = 0.0, hi = 0.0;  // kClip's bounds

  static FusedActivation relu();
  static FusedActivation clip(double lo, double hi);
  bool none() const { return kind == Kind::kNone; }
};

// Integer codes q as a float tensor (so that the STE gradient can flow:
// dq/dx = 1/s inside the grid, 0 outside).
torch::Tensor quantize(const torch::Tensor& x, const Encoding& enc);
// (q - z) * s; differentiable in q, s and z by ordinary autograd.
torch::Tensor dequantize(const torch::Tensor& q, const Encoding& enc);

// dequantize(quantize(x)) in one pass. Gradient for x only (STE); the
// encoding is treated as a constant. This is the op for frozen encodings.
torch::Tensor fake_quantize(const torch::Tensor& x, const Encoding& enc, const FusedActivation& activation = {});

// Range learning in the LSQ parameterisation: `scale` and `zero_point`
// (shape [] or [C], float) receive gradients. zero_point is rounded (half
// to even) and clamped to the grid in the forward pass, with a straight-
// through gradient. The scale and zero-point gradients are multiplied by
// `grad_factor` (LSQ uses 1 / sqrt(elements per channel * qmax)).
torch::Tensor fake_quantize_learnable(const torch::Tensor& x, const torch::Tensor& scale,
                                      const torch::Tensor& zero_point, const QuantSpec& spec,
                                      double grad_factor = 1.0, const FusedActivation& activation = {});

// fake_quantize_learnable's forward value and its backward for the output
// gradient `grad`, in one pass over x instead of two: the same floats as
// the op's forward and backward. For callers that recompute the value in
// backward (recomputing convs) once they hold its gradient.
struct LearnableFakeQuantPass {
  torch::Tensor value, grad_x, grad_scale, grad_zero_point;
};
LearnableFakeQuantPass fake_quantize_learnable_pass(const torch::Tensor& x, const torch::Tensor& grad,
                                                    const torch::Tensor& scale, const torch::Tensor& zero_point,
                                                    const QuantSpec& spec, double grad_factor,
                                                    const FusedActivation& activation = {});

// The same backward alone (`value` left undefined): for callers that
// recompute x in backward and need no output but its gradients.
LearnableFakeQuantPass fake_quantize_learnable_backward(const torch::Tensor& x, const torch::Tensor& grad,
                                                        const torch::Tensor& scale, const torch::Tensor& zero_point,
                                                        const QuantSpec& spec, double grad_factor,
                                                        const FusedActivation& activation = {});

// LSQ's gradient scale for a tensor of this shape under this spec.
double lsq_grad_factor(const torch::Tensor& x, const QuantSpec& spec);

// Range learning in AIMET's parameterisation: the trainable tensors are the
// range bounds; s and z are derived from them (encoding_from_range's
// formulas written in differentiable ops) and the gradients reach min and
// max by the chain rule through fake_quantize_learnable.
torch::Tensor fake_quantize_min_max(const torch::Tensor& x, const torch::Tensor& min,
                                    const torch::Tensor& max, const QuantSpec& spec);

}  // namespace qat
