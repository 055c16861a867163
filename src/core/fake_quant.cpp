#include "qat/fake_quant.h"

#include "core/vector_clones.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace qat {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr int64_t kGrain = 32768;
constexpr int64_t kPerTensor = -1;

// How a contiguous tensor splits into runs that share one channel's
// parameters: element i belongs to channel (i / inner) % channels.
struct ChannelLayout {
  int64_t numel = 0;
  int64_t inner = 0;
  int64_t channels = 1;
};

ChannelLayout layout_of(const Tensor& x, int64_t axis) {
  ChannelLayout layout{x.numel(), x.numel(), 1};
  if (axis == kPerTensor) return layout;
  layout.channels = x.size(axis);
  layout.inner = 1;
  for (int64_t d = axis + 1; d < x.dim(); ++d) layout.inner *= x.size(d);
  return layout;
}

// Calls fn(begin, end, channel) over [first, last), split at channel edges.
template <typename F>
void for_channel_runs(const ChannelLayout& layout, int64_t first, int64_t last, const F& fn) {
  if (layout.inner == 0) return;
  int64_t i = first;
  while (i < last) {
    const int64_t block = i / layout.inner;
    const int64_t run_end = std::min(last, (block + 1) * layout.inner);
    fn(i, run_end, block % layout.channels);
    i = run_end;
  }
}

// Per-channel constants in the input's precision. For float this mirrors
// ATen exactly: inv_scale = 1.0f / s, codes computed as float.
template <typename T>
struct Params {
  std::vector<T> scale, inv_scale, zero_point;
  T qmin, qmax;
};

template <typename T>
Params<T> params_of(const Tensor& scale, const Tensor& zero_point, int64_t qmin, int64_t qmax,
                    int64_t channels) {
  if (scale.numel() != channels || zero_point.numel() != channels) {
    throw std::invalid_argument("encoding has " + std::to_string(scale.numel()) +
                                " scales for " + std::to_string(channels) + " channels");
  }
  const auto dtype = std::is_same<T, float>::value ? torch::kFloat : torch::kDouble;
  // Read in place (no ATen ops: this runs for every quantizer call).
  const Tensor s = scale.detach().to(dtype).contiguous();
  const Tensor z = zero_point.detach().to(dtype).contiguous();
  Params<T> p;
  p.qmin = static_cast<T>(qmin);
  p.qmax = static_cast<T>(qmax);
  p.scale.assign(s.data_ptr<T>(), s.data_ptr<T>() + channels);
  // Zero points are rounded half to even and kept on the grid (NaN stays).
  for (const T* zp = z.data_ptr<T>(); zp != z.data_ptr<T>() + channels; ++zp) {
    p.zero_point.push_back(std::min(std::max(std::nearbyint(*zp), p.qmin), p.qmax));
  }
  for (T v : p.scale) {
    if (!(v > T(0)) || !std::isfinite(v)) {
      throw std::invalid_argument("quantization scale must be positive and finite, got " +
                                  std::to_string(v));
    }
    p.inv_scale.push_back(T(1) / v);
  }
  return p;
}

// Round half to even without a libm call, so that the loops below
// vectorise: adding and subtracting 1.5 * 2^(mantissa bits) leaves the
// nearest integer (ties to even, the default rounding mode) for |v| <
// 2^(mantissa bits - 1). Callers clamp v to the grid first (see
// grid_code), so |v| stays far below that. NaN passes through.
template <typename T>
struct RoundingMagic;
template <>
struct RoundingMagic<float> {
  static constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
};
template <>
struct RoundingMagic<double> {
  static constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
};

template <typename T>
QAT_ALWAYS_INLINE T round_half_even(T v) {
  constexpr T shift = RoundingMagic<T>::kShift;
  return (v + shift) - shift;
}

// NaN passes through. Written as two selects of the form `a < b ? b : a`
// (not one nested select), which GCC maps onto maxps/minps: their
// NaN rule (return the second operand) keeps v's NaN.
template <typename T>
QAT_ALWAYS_INLINE T clamp_to(T v, T lo, T hi) {
  const T above = v < lo ? lo : v;
  return above > hi ? hi : above;
}

// A fused activation in the form the loops use: the value is clamp(x, lo,
// hi) and x's gradient passes where pass_lo <= x <= hi. ReLU's gradient at
// 0 is 0 (ATen passes it where the output is > 0), so its pass_lo is the
// smallest float above 0; Clip's passes at its bounds. With no activation
// the bounds are infinite: the value is x and only NaN is stopped, which
// the grid mask stops anyway.
template <typename T>
struct ActivationBounds {
  T lo, hi, pass_lo;
};

template <typename T>
ActivationBounds<T> bounds_of(const FusedActivation& activation) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  switch (activation.kind) {
    case FusedActivation::Kind::kRelu:
      return {T(0), inf, std::nextafter(T(0), inf)};
    case FusedActivation::Kind::kClip: {
      // Clip compares in the tensor's precision: the bounds are rounded to T.
      const T lo = static_cast<T>(activation.lo), hi = static_cast<T>(activation.hi);
      return {lo, hi, lo};
    }
    case FusedActivation::Kind::kNone:
      break;
  }
  return {-inf, inf, -inf};
}

// Clip's expression (graph/clip.cpp): a NaN x stays NaN.
template <typename T>
QAT_ALWAYS_INLINE T activate(T x, const ActivationBounds<T>& a) {
  const T above = x < a.lo ? a.lo : x;
  return above > a.hi ? a.hi : above;
}

template <typename T>
QAT_ALWAYS_INLINE bool passes(T x, const ActivationBounds<T>& a) {
  return (x >= a.pass_lo) & (x <= a.hi);
}

// One channel's constants in the form the loops use. Codes are kept
// relative to the zero point: r = q - z lies in [lo, hi] = [qmin - z,
// qmax - z]. Since z and the bounds are integers, clamp(round(v) + z,
// qmin, qmax) - z == clamp(round(v), lo, hi), and (q - z) * s is r * s:
// the same floats ATen computes, with fewer operations.
template <typename T>
struct ChannelGrid {
  T s, inv, z, lo, hi;
};

template <typename T>
ChannelGrid<T> grid_of(const Params<T>& p, int64_t c) {
  const T z = p.zero_point[c];
  return {p.scale[c], p.inv_scale[c], z, p.qmin - z, p.qmax - z};
}

// round(x / s) clamped to [lo - 1, hi + 1]: clamping before rounding keeps
// the rounding in range and still tells whether the unclamped code lies on
// the grid (the STE mask: lo <= r <= hi).
template <typename T>
QAT_ALWAYS_INLINE T grid_code(T x, const ChannelGrid<T>& g) {
  return round_half_even(clamp_to(x * g.inv, g.lo - T(1), g.hi + T(1)));
}

enum class Output { kFakeQuant, kCodes };

// The per-run loops, as functions of the run's own pointers (inside the
// parallel_for lambdas a store through uint8_t* may alias the captured
// pointers, which blocks vectorisation) with branch-free bodies (this file
// is built with -fno-trapping-math, which lets GCC turn the clamps into
// min/max).

// y = r * mul + add for r the code of activate(x): r * s for fake-quant,
// r + z for codes.
template <typename T>
QAT_ALWAYS_INLINE void forward_run(const T* x, T* y, int64_t n, const ChannelGrid<T>& g, const ActivationBounds<T>& a,
                                   T mul, T add) {
  for (int64_t i = 0; i < n; ++i) y[i] = clamp_to(grid_code(activate(x[i], a), g), g.lo, g.hi) * mul + add;
}

// The same, plus the STE mask: 1 where the activation passes x's gradient
// and the code was on the grid.
template <typename T>
QAT_ALWAYS_INLINE void forward_run(const T* x, T* y, uint8_t* mask, int64_t n, const ChannelGrid<T>& g,
                                   const ActivationBounds<T>& a, T mul, T add) {
  for (int64_t i = 0; i < n; ++i) {
    const T r = grid_code(activate(x[i], a), g);
    const T on_grid_r = clamp_to(r, g.lo, g.hi);
    mask[i] = (on_grid_r == r) & passes(x[i], a);  // clamping changed nothing: on the grid (NaN: not)
    y[i] = on_grid_r * mul + add;
  }
}

// dx = grad * factor where the mask is set, else 0.
template <typename T>
QAT_ALWAYS_INLINE void ste_run(const uint8_t* mask, const T* grad, T* dx, int64_t n, T factor) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i] * factor;  // loaded unconditionally, so the loop needs no branch
    dx[i] = mask[i] ? g : T(0);
  }
}

template <typename T>
struct LsqTerms {
  T dx, dscale, dzero, code;  // code: the clamped grid code r
};

// d/ds of r * s with round() treated as identity: r - x / s on the grid,
// the clamped bound outside it; d/dz: -s outside the grid.
template <typename T>
QAT_ALWAYS_INLINE LsqTerms<T> lsq_terms(T x, T grad, const ChannelGrid<T>& g) {
  const T r = grid_code(x, g);
  const T rq = clamp_to(r, g.lo, g.hi);
  const bool in = rq == r;
  return {in ? grad : T(0), in ? (rq * g.s - x) * g.inv * grad : rq * grad, in ? T(0) : -grad * g.s, rq};
}

// LSQ backward of one run: dx (STE, times the activation's gradient) and
// the run's sums of the scale and zero-point gradients, which see the
// activation's output. The sums are float SIMD reductions (`omp simd`
// allows the reassociation), added into double per run. kWithValue also
// writes the forward value, from the same code: the recompute in backward
// then reads x once. (A compile-time flag, so each loop stays branch-free.)
template <bool kWithValue, typename T>
QAT_ALWAYS_INLINE void lsq_loop(const T* __restrict x, const T* __restrict grad, T* __restrict dx, T* __restrict y,
                                int64_t n, const ChannelGrid<T>& g, const ActivationBounds<T>& a, double* sums) {
  T sum_s = 0, sum_z = 0;
#pragma omp simd reduction(+ : sum_s, sum_z)
  for (int64_t i = 0; i < n; ++i) {
    const LsqTerms<T> t = lsq_terms(activate(x[i], a), grad[i], g);
    dx[i] = passes(x[i], a) ? t.dx : T(0);
    if constexpr (kWithValue) y[i] = t.code * g.s + T(0);  // forward_run's expression: -0 becomes +0 there too
    sum_s += t.dscale;
    sum_z += t.dzero;
  }
  sums[0] += static_cast<double>(sum_s);
  sums[1] += static_cast<double>(sum_z);
}

// lsq_loop with the value when `y` is not null.
template <typename T>
QAT_ALWAYS_INLINE void lsq_run(const T* x, const T* grad, T* dx, T* y, int64_t n, const ChannelGrid<T>& g,
                               const ActivationBounds<T>& a, double* sums) {
  if (y) {
    lsq_loop<true>(x, grad, dx, y, n, g, a, sums);
  } else {
    lsq_loop<false>(x, grad, dx, y, n, g, a, sums);
  }
}

// The float loops once more, built for AVX2 as well (core/vector_clones.h).
// Unqualified calls pick these overloads for float and the templates above
// for double (used by tests).
QAT_VECTOR_CLONES void forward_run(const float* x, float* y, int64_t n, const ChannelGrid<float>& g,
                                   const ActivationBounds<float>& a, float mul, float add) {
  forward_run<float>(x, y, n, g, a, mul, add);
}
QAT_VECTOR_CLONES void forward_run(const float* x, float* y, uint8_t* mask, int64_t n,
                                   const ChannelGrid<float>& g, const ActivationBounds<float>& a, float mul,
                                   float add) {
  forward_run<float>(x, y, mask, n, g, a, mul, add);
}
QAT_VECTOR_CLONES void ste_run(const uint8_t* mask, const float* grad, float* dx, int64_t n, float factor) {
  ste_run<float>(mask, grad, dx, n, factor);
}
QAT_VECTOR_CLONES void lsq_run(const float* x, const float* grad, float* dx, float* y, int64_t n,
                               const ChannelGrid<float>& g, const ActivationBounds<float>& a, double* sums) {
  lsq_run<float>(x, grad, dx, y, n, g, a, sums);
}

// y = fake-quantized x, or its integer codes q; mask (when not null)
// records which elements the STE gradient passes.
template <typename T>
void fake_quant_forward(const T* x, T* y, uint8_t* mask, const Params<T>& p, const ChannelLayout& layout,
                        const ActivationBounds<T>& a, Output output) {
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    for_channel_runs(layout, begin, end, [&](int64_t b, int64_t e, int64_t c) {
      const ChannelGrid<T> g = grid_of(p, c);
      const T mul = output == Output::kCodes ? T(1) : g.s;
      const T add = output == Output::kCodes ? g.z : T(0);
      if (mask) {
        forward_run(x + b, y + b, mask + b, e - b, g, a, mul, add);
      } else {
        forward_run(x + b, y + b, e - b, g, a, mul, add);
      }
    });
  });
}

// STE backward from the forward's mask: dx = g * factor where the code was
// on the grid (factor 1 for fake-quant, 1/s for quantize), else 0.
template <typename T>
void ste_backward(const uint8_t* mask, const T* grad, T* dx, const Params<T>& p, const ChannelLayout& layout,
                  bool divide_by_scale) {
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    for_channel_runs(layout, begin, end, [&](int64_t b, int64_t e, int64_t c) {
      ste_run(mask + b, grad + b, dx + b, e - b, divide_by_scale ? p.inv_scale[c] : T(1));
    });
  });
}

// LSQ backward over the whole tensor. Runs never cross a fixed-size chunk
// and chunk sums are added in chunk order, so the result does not depend
// on the thread count. With `y`, the forward value is written in the same
// pass.
template <typename T>
void lsq_backward(const T* x, const T* g, T* dx, T* y, double* dscale, double* dzero, const Params<T>& p,
                  const ChannelLayout& layout, const ActivationBounds<T>& a) {
  const int64_t chunks = (layout.numel + kGrain - 1) / kGrain;
  const int64_t channels = layout.channels;
  std::vector<double> part_s(static_cast<size_t>(chunks * channels), 0.0);
  std::vector<double> part_z(part_s.size(), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      double* ps = part_s.data() + chunk * channels;
      double* pz = part_z.data() + chunk * channels;
      const int64_t first = chunk * kGrain;
      const int64_t last = std::min(layout.numel, first + kGrain);
      for_channel_runs(layout, first, last, [&](int64_t b, int64_t e, int64_t c) {
        double sums[2] = {0.0, 0.0};
        const ChannelGrid<T> grid = grid_of(p, c);
        lsq_run(x + b, g + b, dx + b, y ? y + b : nullptr, e - b, grid, a, sums);
        ps[c] += sums[0];
        pz[c] += sums[1];
      });
    }
  });
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t c = 0; c < channels; ++c) {
      dscale[c] += part_s[static_cast<size_t>(chunk * channels + c)];
      dzero[c] += part_z[static_cast<size_t>(chunk * channels + c)];
    }
  }
}

void check_input(const Tensor& x) {
  if (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kDouble) {
    throw std::invalid_argument(std::string("fake-quant supports float32 and float64 tensors, got ") +
                                c10::toString(x.scalar_type()));
  }
  if (!x.device().is_cpu()) throw std::invalid_argument("fake-quant kernels run on CPU tensors");
}

int64_t axis_of(const QuantSpec& spec, const Tensor& x) {
  return spec.channel_axis ? normalize_axis(*spec.channel_axis, x.dim()) : kPerTensor;
}

// Runs `body<T>` with T matching x's dtype.
template <typename F>
auto dispatch(const Tensor& x, const F& body) {
  check_input(x);
  if (x.scalar_type() == torch::kDouble) return body(double{});
  return body(float{});
}

// The forward kernel on activation(x); fills `mask` (a uint8 tensor shaped
// like x) when it is defined.
Tensor forward_impl(const Tensor& x_in, const Tensor& scale, const Tensor& zero_point, int64_t qmin,
                    int64_t qmax, int64_t axis, const FusedActivation& activation, Output output,
                    const Tensor& mask = Tensor()) {
  const Tensor x = x_in.contiguous();
  Tensor y = torch::empty_like(x);
  const ChannelLayout layout = layout_of(x, axis);
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const auto p = params_of<T>(scale, zero_point, qmin, qmax, layout.channels);
    uint8_t* mask_data = mask.defined() ? mask.data_ptr<uint8_t>() : nullptr;
    fake_quant_forward<T>(x.data_ptr<T>(), y.data_ptr<T>(), mask_data, p, layout, bounds_of<T>(activation), output);
  });
  return y;
}

// The grid both autograd functions below keep for backward.
void save_grid(AutogradContext* ctx, int64_t qmin, int64_t qmax, int64_t axis) {
  ctx->saved_data["qmin"] = qmin;
  ctx->saved_data["qmax"] = qmax;
  ctx->saved_data["axis"] = axis;
}

// Straight-through estimator with the encoding held constant. The forward
// saves a one-byte mask instead of x (the activation's gradient folded in):
// backward is one masked multiply, and it keeps a quarter of x's memory
// alive instead of x itself.
class FrozenQuantSte : public torch::autograd::Function<FrozenQuantSte> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                        int64_t qmin, int64_t qmax, int64_t axis, bool codes, const FusedActivation& activation) {
    const Tensor mask = torch::empty(x.sizes(), torch::TensorOptions().dtype(torch::kByte));
    const Output output = codes ? Output::kCodes : Output::kFakeQuant;
    Tensor y = forward_impl(x, scale, zero_point, qmin, qmax, axis, activation, output, mask);
    ctx->save_for_backward({mask, scale, zero_point});
    save_grid(ctx, qmin, qmax, axis);
    ctx->saved_data["codes"] = codes;
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& mask = saved[0];
    const int64_t qmin = ctx->saved_data["qmin"].toInt(), qmax = ctx->saved_data["qmax"].toInt();
    const ChannelLayout layout = layout_of(mask, ctx->saved_data["axis"].toInt());
    const bool divide_by_scale = ctx->saved_data["codes"].toBool();
    const Tensor g = grads[0].contiguous();
    Tensor dx = torch::empty_like(g);
    dispatch(g, [&](auto tag) {
      using T = decltype(tag);
      const auto p = params_of<T>(saved[1], saved[2], qmin, qmax, layout.channels);
      ste_backward<T>(mask.data_ptr<uint8_t>(), g.data_ptr<T>(), dx.data_ptr<T>(), p, layout, divide_by_scale);
    });
    return {dx, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Without a gradient to compute, skip autograd and the mask.
Tensor frozen_quant(const Tensor& x, const Encoding& enc, bool codes, const FusedActivation& activation) {
  const int64_t qmin = enc.spec.grid.qmin(), qmax = enc.spec.grid.qmax(), axis = axis_of(enc.spec, x);
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    return FrozenQuantSte::apply(x, enc.scale, enc.zero_point, qmin, qmax, axis, codes, activation);
  }
  const Output output = codes ? Output::kCodes : Output::kFakeQuant;
  return forward_impl(x, enc.scale, enc.zero_point, qmin, qmax, axis, activation, output);
}

// The activation through saved_data, for FakeQuantLsq's backward.
void save_activation(AutogradContext* ctx, const FusedActivation& activation) {
  ctx->saved_data["activation"] = static_cast<int64_t>(activation.kind);
  ctx->saved_data["activation_lo"] = activation.lo;
  ctx->saved_data["activation_hi"] = activation.hi;
}

FusedActivation saved_activation(AutogradContext* ctx) {
  FusedActivation a;
  a.kind = static_cast<FusedActivation::Kind>(ctx->saved_data["activation"].toInt());
  a.lo = ctx->saved_data["activation_lo"].toDouble();
  a.hi = ctx->saved_data["activation_hi"].toDouble();
  return a;
}

// The LSQ backward for output gradient `grad` (and, with_value, the
// forward value too, in the same pass over x).
LearnableFakeQuantPass lsq_pass(const Tensor& x_in, const Tensor& grad, const Tensor& scale, const Tensor& zero_point,
                                int64_t qmin, int64_t qmax, int64_t axis, double grad_factor,
                                const FusedActivation& activation, bool with_value) {
  const Tensor x = x_in.contiguous();
  const Tensor g = grad.to(x.scalar_type()).contiguous();
  LearnableFakeQuantPass pass;
  pass.grad_x = torch::empty_like(x);
  if (with_value) pass.value = torch::empty_like(x);
  const ChannelLayout layout = layout_of(x, axis);
  const auto sum_options = torch::TensorOptions().dtype(torch::kDouble);
  Tensor dscale = torch::zeros({layout.channels}, sum_options);
  Tensor dzero = torch::zeros({layout.channels}, sum_options);
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const auto p = params_of<T>(scale, zero_point, qmin, qmax, layout.channels);
    T* y = with_value ? pass.value.data_ptr<T>() : nullptr;
    lsq_backward<T>(x.data_ptr<T>(), g.data_ptr<T>(), pass.grad_x.data_ptr<T>(), y, dscale.data_ptr<double>(),
                    dzero.data_ptr<double>(), p, layout, bounds_of<T>(activation));
  });
  const auto as_param = [&](const Tensor& sum, const Tensor& param) {
    return (sum * grad_factor).to(param.scalar_type()).reshape(param.sizes());
  };
  pass.grad_scale = as_param(dscale, scale);
  pass.grad_zero_point = as_param(dzero, zero_point);
  return pass;
}

LearnableFakeQuantPass checked_lsq_pass(const Tensor& x, const Tensor& grad, const Tensor& scale,
                                        const Tensor& zero_point, const QuantSpec& spec, double grad_factor,
                                        const FusedActivation& activation, bool with_value) {
  spec.grid.validate();
  return lsq_pass(x, grad, scale.detach(), zero_point.detach(), spec.grid.qmin(), spec.grid.qmax(), axis_of(spec, x),
                  grad_factor, activation, with_value);
}

class FakeQuantLsq : public torch::autograd::Function<FakeQuantLsq> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                        int64_t qmin, int64_t qmax, int64_t axis, double grad_factor,
                        const FusedActivation& activation) {
    ctx->save_for_backward({x, scale, zero_point});
    save_grid(ctx, qmin, qmax, axis);
    ctx->saved_data["grad_factor"] = grad_factor;
    save_activation(ctx, activation);
    return forward_impl(x, scale, zero_point, qmin, qmax, axis, activation, Output::kFakeQuant);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const LearnableFakeQuantPass pass =
        lsq_pass(saved[0], grads[0], saved[1], saved[2], d["qmin"].toInt(), d["qmax"].toInt(), d["axis"].toInt(),
                 d["grad_factor"].toDouble(), saved_activation(ctx), /*with_value=*/false);
    return {pass.grad_x, pass.grad_scale, pass.grad_zero_point, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor round_ste(const Tensor& v) { return v + (v.round() - v).detach(); }

}  // namespace

Tensor quantize(const Tensor& x, const Encoding& enc) { return frozen_quant(x, enc, /*codes=*/true, {}); }

Tensor dequantize(const Tensor& q, const Encoding& enc) {
  const auto axis = enc.spec.channel_axis;
  const Tensor s = broadcast_along(enc.scale, q.dim(), axis).to(q.scalar_type());
  const Tensor z = broadcast_along(enc.zero_point, q.dim(), axis).to(q.scalar_type());
  return (q - z) * s;
}

Tensor fake_quantize(const Tensor& x, const Encoding& enc, const FusedActivation& activation) {
  return frozen_quant(x, enc, /*codes=*/false, activation);
}

Tensor fake_quantize_learnable(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                               const QuantSpec& spec, double grad_factor, const FusedActivation& activation) {
  spec.grid.validate();
  return FakeQuantLsq::apply(x, scale, zero_point, spec.grid.qmin(), spec.grid.qmax(), axis_of(spec, x),
                             grad_factor, activation);
}

FusedActivation FusedActivation::relu() { return {Kind::kRelu, 0.0, 0.0}; }

FusedActivation FusedActivation::clip(double lo, double hi) { return {Kind::kClip, lo, hi}; }

LearnableFakeQuantPass fake_quantize_learnable_pass(const Tensor& x, const Tensor& grad, const Tensor& scale,
                                                    const Tensor& zero_point, const QuantSpec& spec,
                                                    double grad_factor, const FusedActivation& activation) {
  return checked_lsq_pass(x, grad, scale, zero_point, spec, grad_factor, activation, /*with_value=*/true);
}

LearnableFakeQuantPass fake_quantize_learnable_backward(const Tensor& x, const Tensor& grad, const Tensor& scale,
                                                        const Tensor& zero_point, const QuantSpec& spec,
                                                        double grad_factor, const FusedActivation& activation) {
  return checked_lsq_pass(x, grad, scale, zero_point, spec, grad_factor, activation, /*with_value=*/false);
}

double lsq_grad_factor(const Tensor& x, const QuantSpec& spec) {
  const int64_t axis = axis_of(spec, x);
  const int64_t channels = axis == kPerTensor ? 1 : x.size(axis);
  const double per_channel = static_cast<double>(x.numel()) / static_cast<double>(channels);
  return 1.0 / std::sqrt(per_channel * static_cast<double>(spec.grid.qmax()));
}

Tensor fake_quantize_min_max(const Tensor& x, const Tensor& min, const Tensor& max, const QuantSpec& spec) {
  spec.grid.validate();
  const double qmin = static_cast<double>(spec.grid.qmin());
  const double qmax = static_cast<double>(spec.grid.qmax());
  const Tensor lo = min.clamp_max(0.0);
  const Tensor hi = max.clamp_min(0.0);
  Tensor scale, zero_point;
  if (spec.symmetric && spec.grid.is_signed) {
    scale = (torch::max(-lo, hi) / qmax).clamp_min(kMinScale);
    zero_point = torch::zeros_like(scale);
  } else if (spec.symmetric) {
    scale = (hi / (qmax - qmin)).clamp_min(kMinScale);
    zero_point = torch::full_like(scale, qmin);
  } else {
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(kMinScale);
    zero_point = (qmin - round_ste(lo / scale)).clamp(qmin, qmax);
  }
  return fake_quantize_learnable(x, scale, zero_point, spec, 1.0);
}

}  // namespace qat
