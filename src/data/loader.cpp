#include "qat/data.h"

#include "augment.h"
#include "counter_random.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace qat::data {
namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("DataLoader: " + what);
}

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.scalar_type() << " " << t.sizes();
  return out.str();
}

void validate(const Dataset& dataset, const LoaderOptions& options) {
  const torch::Tensor& images = dataset.images;
  const torch::Tensor& labels = dataset.labels;
  check(images.defined() && images.scalar_type() == torch::kUInt8 && images.dim() == 4,
        "images must be uint8 [N, C, H, W], got " + (images.defined() ? shape_of(images) : "none"));
  check(labels.defined() && labels.scalar_type() == torch::kLong && labels.dim() == 1 &&
            labels.size(0) == images.size(0),
        "labels must be int64 [" + std::to_string(images.size(0)) + "], got " +
            (labels.defined() ? shape_of(labels) : "none"));
  check(options.batch_size >= 1, "batch_size must be at least 1, got " + std::to_string(options.batch_size));
  check(options.augmentation.crop_padding >= 0,
        "crop_padding must be non-negative, got " + std::to_string(options.augmentation.crop_padding));
  const Normalization& norm = options.normalization;
  const auto channels = static_cast<size_t>(images.size(1));
  check(norm.mean.size() == norm.std.size() && (norm.mean.empty() || norm.mean.size() == channels),
        "normalization needs one mean and one std per channel (" + std::to_string(channels) + "), got " +
            std::to_string(norm.mean.size()) + " and " + std::to_string(norm.std.size()));
  for (double s : norm.std) check(s > 0, "normalization std must be positive, got " + std::to_string(s));
}

}  // namespace

DataLoader::DataLoader(Dataset dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  validate(dataset_, options_);
  const auto channels = static_cast<size_t>(dataset_.images.size(1));
  const Normalization& norm = options_.normalization;
  std::vector<double> scale(channels, 1.0 / 255.0);
  std::vector<double> shift(channels, 0.0);
  for (size_t c = 0; c < norm.mean.size(); ++c) {
    scale[c] = 1.0 / (255.0 * norm.std[c]);
    shift[c] = -norm.mean[c] / norm.std[c];
  }
  const std::vector<int64_t> shape = {1, static_cast<int64_t>(channels), 1, 1};
  scale_ = torch::tensor(scale, torch::kDouble).to(torch::kFloat).view(shape);
  shift_ = torch::tensor(shift, torch::kDouble).to(torch::kFloat).view(shape);
}

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_.size();
  const int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

torch::Tensor DataLoader::order(int64_t epoch) const {
  const int64_t n = dataset_.size();
  auto order = torch::arange(n, torch::kLong);
  if (!options_.shuffle) return order;
  // Fisher-Yates with a stream of its own per (seed, epoch).
  int64_t* p = order.data_ptr<int64_t>();
  CounterRandom random({options_.seed, kShuffleStream, static_cast<uint64_t>(epoch)});
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[random.below(static_cast<uint64_t>(i + 1))]);
  return order;
}

Batch DataLoader::batch(int64_t epoch, int64_t index) const {
  if (index < 0 || index >= num_batches()) {
    throw std::out_of_range("DataLoader: batch " + std::to_string(index) + " of " +
                            std::to_string(num_batches()));
  }
  return make_batch(order(epoch), epoch, index);
}

Batch DataLoader::make_batch(const torch::Tensor& order, int64_t epoch, int64_t index) const {
  const int64_t start = index * options_.batch_size;
  const auto indices = order.narrow(0, start, std::min(options_.batch_size, dataset_.size() - start));
  auto pixels = dataset_.images.index_select(0, indices);
  const Augmentation& aug = options_.augmentation;
  if (aug.crop_padding > 0 || aug.horizontal_flip)
    pixels = augment(pixels, indices, aug, options_.seed, epoch);
  return Batch{pixels.to(torch::kFloat).mul_(scale_).add_(shift_), dataset_.labels.index_select(0, indices),
               indices};
}

DataLoader::Iterator DataLoader::begin() const { return begin(epoch_); }

DataLoader::Iterator DataLoader::begin(int64_t epoch) const { return Iterator(this, epoch, order(epoch), 0); }

DataLoader::Iterator DataLoader::end() const {
  return Iterator(this, epoch_, torch::Tensor(), num_batches());
}

}  // namespace qat::data
