#include "qat/data.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace qat::data {
namespace {

// Images converted to int64 at a time: bounds the temporary to ~25 MB for
// 28x28 images while keeping the per-chunk overhead negligible.
constexpr int64_t kChunk = 4096;

}  // namespace

Normalization compute_normalization(const torch::Tensor& images) {
  if (images.scalar_type() != torch::kUInt8 || images.dim() != 4 || images.numel() == 0) {
    throw std::invalid_argument("compute_normalization needs non-empty uint8 images [N, C, H, W]");
  }
  const int64_t n = images.size(0);
  const int64_t channels = images.size(1);
  // Integer sums are exact, so the only rounding is in the final divisions.
  auto sum = torch::zeros({channels}, torch::kLong);
  auto sum_squares = torch::zeros({channels}, torch::kLong);
  for (int64_t start = 0; start < n; start += kChunk) {
    const auto chunk = images.narrow(0, start, std::min(kChunk, n - start)).to(torch::kLong);
    sum += chunk.sum({0, 2, 3});
    sum_squares += (chunk * chunk).sum({0, 2, 3});
  }
  const double count = static_cast<double>(images.numel() / channels);
  Normalization stats;
  for (int64_t c = 0; c < channels; ++c) {
    const double mean = static_cast<double>(sum[c].item<int64_t>()) / (255.0 * count);
    const double mean_square = static_cast<double>(sum_squares[c].item<int64_t>()) / (255.0 * 255.0 * count);
    stats.mean.push_back(mean);
    stats.std.push_back(std::sqrt(std::max(mean_square - mean * mean, 0.0)));
  }
  return stats;
}

}  // namespace qat::data
