#include "core/extrema.h"

#include "core/vector_clones.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace qat {
namespace {

// Rows split into chunks of this many elements: the unit of parallel work.
constexpr int64_t kChunk = 32768;

template <typename T>
struct Extrema {
  T lo = std::numeric_limits<T>::infinity();
  T hi = -std::numeric_limits<T>::infinity();
  T probe = 0;  // v * 0 summed: 0 while every v is finite, NaN after a NaN or an infinity
};

// One run's extrema. The selects are written as `a < b ? a : b`, which GCC
// maps onto minps/maxps (this file is built with -fno-trapping-math); they
// pass over NaN, which the probe reports instead.
template <typename T>
QAT_ALWAYS_INLINE Extrema<T> run_extrema(const T* __restrict v, int64_t n) {
  Extrema<T> e;
  T lo = e.lo, hi = e.hi, probe = e.probe;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : probe)
  for (int64_t i = 0; i < n; ++i) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
    probe += v[i] * T(0);
  }
  return {lo, hi, probe};
}

QAT_VECTOR_CLONES Extrema<float> run_extrema(const float* v, int64_t n) { return run_extrema<float>(v, n); }

template <typename T>
std::optional<std::pair<torch::Tensor, torch::Tensor>> row_extrema_of(const torch::Tensor& rows) {
  const int64_t channels = rows.size(0), n = rows.size(1);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<Extrema<T>> parts(static_cast<size_t>(channels * chunks));
  const T* data = rows.data_ptr<T>();
  at::parallel_for(0, channels * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks, first = (task % chunks) * kChunk;
      parts[static_cast<size_t>(task)] = run_extrema(data + row * n + first, std::min(kChunk, n - first));
    }
  });
  const auto options = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor lo = torch::empty({channels}, options), hi = torch::empty({channels}, options);
  for (int64_t row = 0; row < channels; ++row) {
    Extrema<T> e;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const Extrema<T>& part = parts[static_cast<size_t>(row * chunks + chunk)];
      if (part.probe != T(0)) return std::nullopt;
      e.lo = std::min(e.lo, part.lo);
      e.hi = std::max(e.hi, part.hi);
    }
    lo.data_ptr<double>()[row] = static_cast<double>(e.lo);
    hi.data_ptr<double>()[row] = static_cast<double>(e.hi);
  }
  return std::make_pair(lo, hi);
}

}  // namespace

std::optional<std::pair<torch::Tensor, torch::Tensor>> row_extrema(const torch::Tensor& rows) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(1) > 0 && rows.is_contiguous(), "row_extrema wants contiguous [C, N > 0]");
  if (rows.scalar_type() == torch::kDouble) return row_extrema_of<double>(rows);
  TORCH_CHECK(rows.scalar_type() == torch::kFloat, "row_extrema wants float32 or float64");
  return row_extrema_of<float>(rows);
}

}  // namespace qat
