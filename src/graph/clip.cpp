// Why Clip has its own kernel: LibTorch 1.13 differentiates clamp(x, lo, hi)
// as where(x >= lo & x <= hi, grad, 0), four passes over the activation with
// a broadcast scalar in the last, which made ReLU6's backward cost more than
// its conv's in MobileNetV2 (bench/results/perf.md). Here the forward writes
// y and a byte mask in one pass, and backward is one select; the mask is a
// quarter of the x that clamp's backward keeps alive.
#include "graph/clip.h"

#include "core/vector_clones.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

namespace qat::ops {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr int64_t kGrain = 32768;

// Branch-free, so that the loops vectorise (this file is built with
// -fno-trapping-math). `x < lo ? lo : x` keeps a NaN x, as ATen's clamp does.
template <typename T>
QAT_ALWAYS_INLINE void clamp_run(const T* __restrict x, T* __restrict y, uint8_t* __restrict mask, int64_t n, T lo,
                                 T hi) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T above = v < lo ? lo : v;
    y[i] = above > hi ? hi : above;
    mask[i] = (v >= lo) & (v <= hi);
  }
}

template <typename T>
QAT_ALWAYS_INLINE void masked_run(const uint8_t* __restrict mask, const T* __restrict grad, T* __restrict dx,
                                  int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? grad[i] : T(0);
}

// The float loops built for AVX2 too (core/vector_clones.h).
QAT_VECTOR_CLONES void clamp_run(const float* x, float* y, uint8_t* mask, int64_t n, float lo, float hi) {
  clamp_run<float>(x, y, mask, n, lo, hi);
}
QAT_VECTOR_CLONES void masked_run(const uint8_t* mask, const float* grad, float* dx, int64_t n) {
  masked_run<float>(mask, grad, dx, n);
}

template <typename F>
void for_runs(int64_t numel, const F& fn) {
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) { fn(begin, end - begin); });
}

template <typename T>
void clamp_forward(const Tensor& x, Tensor& y, Tensor& mask, double lo, double hi) {
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  uint8_t* mp = mask.data_ptr<uint8_t>();
  // ATen compares in the tensor's precision: the bounds are rounded to T.
  const T l = static_cast<T>(lo), h = static_cast<T>(hi);
  for_runs(x.numel(), [&](int64_t b, int64_t n) { clamp_run(xp + b, yp + b, mp + b, n, l, h); });
}

template <typename T>
void masked_backward(const Tensor& mask, const Tensor& grad, Tensor& dx) {
  const uint8_t* mp = mask.data_ptr<uint8_t>();
  const T* gp = grad.data_ptr<T>();
  T* dp = dx.data_ptr<T>();
  for_runs(grad.numel(), [&](int64_t b, int64_t n) { masked_run(mp + b, gp + b, dp + b, n); });
}

class ClampWithMask : public torch::autograd::Function<ClampWithMask> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, double lo, double hi) {
    const Tensor x = x_in.contiguous();
    Tensor y = torch::empty_like(x);
    Tensor mask = torch::empty(x.sizes(), x.options().dtype(torch::kByte));
    if (x.scalar_type() == torch::kDouble) {
      clamp_forward<double>(x, y, mask, lo, hi);
    } else {
      clamp_forward<float>(x, y, mask, lo, hi);
    }
    ctx->save_for_backward({mask});
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const Tensor mask = ctx->get_saved_variables()[0];
    const Tensor grad = grads[0].contiguous();
    Tensor dx = torch::empty_like(grad);
    if (grad.scalar_type() == torch::kDouble) {
      masked_backward<double>(mask, grad, dx);
    } else {
      masked_backward<float>(mask, grad, dx);
    }
    return {dx, Tensor(), Tensor()};
  }
};

}  // namespace

Tensor clamp_with_mask(const Tensor& x, double lo, double hi) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble),
              "clamp_with_mask: expected a float or double CPU tensor, got ", x.toString());
  return ClampWithMask::apply(x, lo, hi);
}

Tensor clamp_constant(const Tensor& x, double lo, double hi) {
  if (torch::GradMode::is_enabled() && x.requires_grad()) return clamp_with_mask(x, lo, hi);
  return torch::clamp(x, lo, hi);
}

}  // namespace qat::ops
