// During QAT with simulated BatchNorm folding the conv runs with the folded
// (and quantized) weight w * factor, and its output is divided by factor
// again so that BatchNorm sees the statistics of the unfolded conv:
//
//   y = c / f + b                       (per output channel)
//   dc = g / f,   db = sum(g),   df = -sum(g * c) / f^2 = -sum(g * (y - b)) / f
//
// Written with ATen ops this is two forward and five backward passes over
// the activation, and autograd keeps c alive for df next to y, which
// batch_norm saves anyway. Here each direction is one pass, and backward
// reads y (the same tensor batch_norm holds) instead of c: one activation
// tensor less per conv layer. y - b equals c / f up to one rounding, so df
// differs from ATen's by float rounding only.
#include "sim/unfold.h"

#include "core/vector_clones.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace qat {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// A contiguous [N, C, rest...] tensor is N * C rows of `inner` elements;
// row r belongs to channel r % C.
struct Rows {
  int64_t count, channels, inner;
};

Rows rows_of(const Tensor& t) {
  TORCH_CHECK(t.dim() >= 2, "unfold_conv_output: expected [N, C, ...], got ", t.sizes());
  const int64_t channels = t.size(1);
  const int64_t count = t.size(0) * channels;
  return {count, channels, count == 0 ? 0 : t.numel() / count};
}

int64_t grain_rows(const Rows& rows) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, rows.inner)); }

// One row: out = c / f + b.
template <typename T>
QAT_ALWAYS_INLINE void forward_row(const T* __restrict c, T* __restrict out, int64_t n, T f, T b) {
  for (int64_t i = 0; i < n; ++i) out[i] = c[i] / f + b;
}

// One row of the backward: dc = g / f, and the row's sums of g * (y - b)
// and of g, as float SIMD reductions (`omp simd` allows the reassociation)
// returned in double.
template <typename T>
QAT_ALWAYS_INLINE void backward_row(const T* __restrict g, const T* __restrict y, T* __restrict dc, int64_t n, T f,
                                    T b, double* sum_gy, double* sum_g) {
  T gy = 0, gs = 0;
#pragma omp simd reduction(+ : gy, gs)
  for (int64_t i = 0; i < n; ++i) {
    dc[i] = g[i] / f;
    gy += g[i] * (y[i] - b);
    gs += g[i];
  }
  *sum_gy = static_cast<double>(gy);
  *sum_g = static_cast<double>(gs);
}

// The float rows built for AVX2 as well (core/vector_clones.h); double
// (tests) uses the templates.
QAT_VECTOR_CLONES void forward_row(const float* c, float* out, int64_t n, float f, float b) {
  forward_row<float>(c, out, n, f, b);
}
QAT_VECTOR_CLONES void backward_row(const float* g, const float* y, float* dc, int64_t n, float f, float b,
                                    double* sum_gy, double* sum_g) {
  backward_row<float>(g, y, dc, n, f, b, sum_gy, sum_g);
}

template <typename T>
void forward_rows(const T* c, const T* f, const T* b, T* y, const Rows& rows) {
  at::parallel_for(0, rows.count, grain_rows(rows), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t ch = r % rows.channels, offset = r * rows.inner;
      forward_row(c + offset, y + offset, rows.inner, f[ch], b[ch]);
    }
  });
}

// Each row's sums come from one thread, and rows are added in order per
// channel (in backward), so the sums do not depend on the thread count.
template <typename T>
void backward_rows(const T* g, const T* y, const T* f, const T* b, T* dc, double* row_gy, double* row_g,
                   const Rows& rows) {
  at::parallel_for(0, rows.count, grain_rows(rows), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t ch = r % rows.channels, offset = r * rows.inner;
      backward_row(g + offset, y + offset, dc + offset, rows.inner, f[ch], b[ch], row_gy + r, row_g + r);
    }
  });
}

class UnfoldConvOutput : public torch::autograd::Function<UnfoldConvOutput> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& conv, const Tensor& factor, const Tensor& bias) {
    const Tensor c = conv.contiguous();
    const Tensor f = factor.to(c.scalar_type()).contiguous();
    const Tensor b = bias.to(c.scalar_type()).contiguous();
    const Rows rows = rows_of(c);
    TORCH_CHECK(f.numel() == rows.channels && b.numel() == rows.channels,
                "unfold_conv_output: factor and bias need one value per channel");
    Tensor y = torch::empty_like(c);
    AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "unfold_conv_output", [&] {
      forward_rows<scalar_t>(c.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                             y.data_ptr<scalar_t>(), rows);
    });
    ctx->save_for_backward({y, f, b});
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &y = saved[0], &f = saved[1], &b = saved[2];
    const Tensor g = grads[0].to(y.scalar_type()).contiguous();
    const Rows rows = rows_of(y);
    Tensor dc = torch::empty_like(y);
    const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
    Tensor row_gy = torch::empty({rows.count}, f64), row_g = torch::empty({rows.count}, f64);
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "unfold_conv_output_backward", [&] {
      backward_rows<scalar_t>(g.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(),
                              b.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(), row_gy.data_ptr<double>(),
                              row_g.data_ptr<double>(), rows);
    });
    // Row sums -> channel sums, adding rows in batch order.
    Tensor df = torch::zeros({rows.channels}, f64), db = torch::zeros({rows.channels}, f64);
    const double* gy = row_gy.data_ptr<double>();
    const double* gs = row_g.data_ptr<double>();
    double* df_data = df.data_ptr<double>();
    double* db_data = db.data_ptr<double>();
    for (int64_t r = 0; r < rows.count; ++r) {
      df_data[r % rows.channels] += gy[r];
      db_data[r % rows.channels] += gs[r];
    }
    df = -df / f.to(torch::kDouble);
    return {dc, df.to(y.scalar_type()), db.to(y.scalar_type())};
  }
};

}  // namespace

Tensor unfold_conv_output(const Tensor& conv, const Tensor& factor, const Tensor& bias) {
  return UnfoldConvOutput::apply(conv, factor.reshape({-1}), bias.reshape({-1}));
}

}  // namespace qat
