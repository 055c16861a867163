#include "qat/fake_quant.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <cmath>
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
  const Tensor s = scale.detach().to(dtype).contiguous();
  // Zero points are rounded half to even and kept on the grid.
  const Tensor z = zero_point.detach().to(dtype).round().clamp(qmin, qmax).contiguous();
  Params<T> p;
  p.scale.assign(s.data_ptr<T>(), s.data_ptr<T>() + channels);
  p.zero_point.assign(z.data_ptr<T>(), z.data_ptr<T>() + channels);
  for (T v : p.scale) {
    if (!(v > T(0)) || !std::isfinite(v)) {
      throw std::invalid_argument("quantization scale must be positive and finite, got " +
                                  std::to_string(v));
    }
    p.inv_scale.push_back(T(1) / v);
  }
  p.qmin = static_cast<T>(qmin);
  p.qmax = static_cast<T>(qmax);
  return p;
}

// Round half to even without a libm call, so that the loops below
// vectorise: adding and subtracting 1.5 * 2^(mantissa bits) leaves the
// nearest integer (ties to even, the default rounding mode) for |v| <
// 2^(mantissa bits - 1). Larger |v| are first clamped to that bound; they
// are off every grid of <= 16 bits either way, so codes, clamping and the
// in-range masks equal those of std::nearbyint. NaN passes through.
template <typename T>
struct RoundingMagic;
template <>
struct RoundingMagic<float> {
  static constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kBound = 4194304.0f;   // 2^22
};
template <>
struct RoundingMagic<double> {
  static constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kBound = 2251799813685248.0;  // 2^51
};

template <typename T>
inline T round_half_even(T v) {
  constexpr T bound = RoundingMagic<T>::kBound, shift = RoundingMagic<T>::kShift;
  v = v < -bound ? -bound : (v > bound ? bound : v);
  return (v + shift) - shift;
}

// Unclamped code of x: nearbyint(x * inv_scale) + z, as ATen computes it.
template <typename T>
inline T code_of(T x, T inv_scale, T zero_point) {
  return round_half_even(x * inv_scale) + zero_point;
}

template <typename T>
inline T clamp_code(T q, T qmin, T qmax) {
  return q < qmin ? qmin : (q > qmax ? qmax : q);  // NaN passes through
}

template <typename T>
void fake_quant_forward(const T* x, T* y, const Params<T>& p, const ChannelLayout& layout, bool codes_only) {
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    for_channel_runs(layout, begin, end, [&](int64_t b, int64_t e, int64_t c) {
      const T s = p.scale[c], inv = p.inv_scale[c], z = p.zero_point[c];
      if (codes_only) {
        for (int64_t i = b; i < e; ++i) y[i] = clamp_code(code_of(x[i], inv, z), p.qmin, p.qmax);
      } else {
        for (int64_t i = b; i < e; ++i) y[i] = (clamp_code(code_of(x[i], inv, z), p.qmin, p.qmax) - z) * s;
      }
    });
  });
}

// dx = g where the unclamped code lies on the grid, times `factor`
// (1 for fake-quant, 1/s for quantize).
template <typename T>
void ste_backward(const T* x, const T* g, T* dx, const Params<T>& p, const ChannelLayout& layout,
                  bool divide_by_scale) {
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    for_channel_runs(layout, begin, end, [&](int64_t b, int64_t e, int64_t c) {
      const T inv = p.inv_scale[c], z = p.zero_point[c];
      const T factor = divide_by_scale ? inv : T(1);
      for (int64_t i = b; i < e; ++i) {
        const T q = code_of(x[i], inv, z);
        dx[i] = (q >= p.qmin && q <= p.qmax) ? g[i] * factor : T(0);
      }
    });
  });
}

// LSQ backward in one pass: dx (STE) and the per-channel sums of the scale
// and zero-point gradients. Partial sums are kept per fixed-size chunk and
// added in chunk order, so the result does not depend on the thread count.
template <typename T>
void lsq_backward(const T* x, const T* g, T* dx, double* dscale, double* dzero, const Params<T>& p,
                  const ChannelLayout& layout) {
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
        const T s = p.scale[c], inv = p.inv_scale[c], z = p.zero_point[c];
        const T below = p.qmin - z, above = p.qmax - z;
        double sum_s = 0.0, sum_z = 0.0;
        for (int64_t i = b; i < e; ++i) {
          const T q = code_of(x[i], inv, z);
          if (q >= p.qmin && q <= p.qmax) {
            dx[i] = g[i];
            // d/ds of s * round(x/s) with round treated as identity.
            sum_s += static_cast<double>(((q - z) * s - x[i]) * inv * g[i]);
          } else {
            dx[i] = T(0);
            sum_s += static_cast<double>((q < p.qmin ? below : above) * g[i]);
            sum_z -= static_cast<double>(g[i] * s);
          }
        }
        ps[c] += sum_s;
        pz[c] += sum_z;
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

Tensor forward_impl(const Tensor& x_in, const Tensor& scale, const Tensor& zero_point, int64_t qmin,
                    int64_t qmax, int64_t axis, bool codes_only) {
  const Tensor x = x_in.contiguous();
  Tensor y = torch::empty_like(x);
  const ChannelLayout layout = layout_of(x, axis);
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const auto p = params_of<T>(scale, zero_point, qmin, qmax, layout.channels);
    fake_quant_forward<T>(x.data_ptr<T>(), y.data_ptr<T>(), p, layout, codes_only);
  });
  return y;
}

Tensor ste_impl(const Tensor& x_in, const Tensor& g_in, const Tensor& scale, const Tensor& zero_point,
                int64_t qmin, int64_t qmax, int64_t axis, bool divide_by_scale) {
  const Tensor x = x_in.contiguous();
  const Tensor g = g_in.to(x.scalar_type()).contiguous();
  Tensor dx = torch::empty_like(x);
  const ChannelLayout layout = layout_of(x, axis);
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const auto p = params_of<T>(scale, zero_point, qmin, qmax, layout.channels);
    ste_backward<T>(x.data_ptr<T>(), g.data_ptr<T>(), dx.data_ptr<T>(), p, layout, divide_by_scale);
  });
  return dx;
}

// Saved state shared by the autograd functions below.
void save(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point, int64_t qmin,
          int64_t qmax, int64_t axis) {
  ctx->save_for_backward({x, scale, zero_point});
  ctx->saved_data["qmin"] = qmin;
  ctx->saved_data["qmax"] = qmax;
  ctx->saved_data["axis"] = axis;
}

struct Saved {
  Tensor x, scale, zero_point;
  int64_t qmin, qmax, axis;
};

Saved load(AutogradContext* ctx) {
  const auto v = ctx->get_saved_variables();
  return {v[0], v[1], v[2], ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(),
          ctx->saved_data["axis"].toInt()};
}

class QuantizeSte : public torch::autograd::Function<QuantizeSte> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                        int64_t qmin, int64_t qmax, int64_t axis) {
    save(ctx, x, scale, zero_point, qmin, qmax, axis);
    return forward_impl(x, scale, zero_point, qmin, qmax, axis, /*codes_only=*/true);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const Saved s = load(ctx);
    return {ste_impl(s.x, grads[0], s.scale, s.zero_point, s.qmin, s.qmax, s.axis, true),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

class FakeQuantSte : public torch::autograd::Function<FakeQuantSte> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                        int64_t qmin, int64_t qmax, int64_t axis) {
    save(ctx, x, scale, zero_point, qmin, qmax, axis);
    return forward_impl(x, scale, zero_point, qmin, qmax, axis, /*codes_only=*/false);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const Saved s = load(ctx);
    return {ste_impl(s.x, grads[0], s.scale, s.zero_point, s.qmin, s.qmax, s.axis, false),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

class FakeQuantLsq : public torch::autograd::Function<FakeQuantLsq> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                        int64_t qmin, int64_t qmax, int64_t axis, double grad_factor) {
    save(ctx, x, scale, zero_point, qmin, qmax, axis);
    ctx->saved_data["grad_factor"] = grad_factor;
    return forward_impl(x, scale, zero_point, qmin, qmax, axis, /*codes_only=*/false);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const Saved s = load(ctx);
    const double grad_factor = ctx->saved_data["grad_factor"].toDouble();
    const Tensor x = s.x.contiguous();
    const Tensor g = grads[0].to(x.scalar_type()).contiguous();
    Tensor dx = torch::empty_like(x);
    const ChannelLayout layout = layout_of(x, s.axis);
    const auto sum_options = torch::TensorOptions().dtype(torch::kDouble);
    Tensor dscale = torch::zeros({layout.channels}, sum_options);
    Tensor dzero = torch::zeros({layout.channels}, sum_options);
    dispatch(x, [&](auto tag) {
      using T = decltype(tag);
      const auto p = params_of<T>(s.scale, s.zero_point, s.qmin, s.qmax, layout.channels);
      lsq_backward<T>(x.data_ptr<T>(), g.data_ptr<T>(), dx.data_ptr<T>(), dscale.data_ptr<double>(),
                      dzero.data_ptr<double>(), p, layout);
    });
    const auto as_param = [&](const Tensor& sum, const Tensor& param) {
      return (sum * grad_factor).to(param.scalar_type()).reshape(param.sizes());
    };
    return {dx, as_param(dscale, s.scale), as_param(dzero, s.zero_point), Tensor(), Tensor(), Tensor(),
            Tensor()};
  }
};

Tensor round_ste(const Tensor& v) { return v + (v.round() - v).detach(); }

}  // namespace

Tensor quantize(const Tensor& x, const Encoding& enc) {
  return QuantizeSte::apply(x, enc.scale, enc.zero_point, enc.spec.grid.qmin(), enc.spec.grid.qmax(),
                            axis_of(enc.spec, x));
}

Tensor dequantize(const Tensor& q, const Encoding& enc) {
  const auto axis = enc.spec.channel_axis;
  const Tensor s = broadcast_along(enc.scale, q.dim(), axis).to(q.scalar_type());
  const Tensor z = broadcast_along(enc.zero_point, q.dim(), axis).to(q.scalar_type());
  return (q - z) * s;
}

Tensor fake_quantize(const Tensor& x, const Encoding& enc) {
  return FakeQuantSte::apply(x, enc.scale, enc.zero_point, enc.spec.grid.qmin(), enc.spec.grid.qmax(),
                             axis_of(enc.spec, x));
}

Tensor fake_quantize_learnable(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                               const QuantSpec& spec, double grad_factor) {
  spec.grid.validate();
  return FakeQuantLsq::apply(x, scale, zero_point, spec.grid.qmin(), spec.grid.qmax(), axis_of(spec, x),
                             grad_factor);
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
