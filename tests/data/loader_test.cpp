#include "qat/data.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <set>
#include <tuple>
#include <utility>

namespace qat::data {
namespace {

constexpr int64_t kSize = 103;

// 103 RGB 8x8 images of pixels in [1, 255] (so that padding zeros stand out)
// and labels i % 10.
Dataset synthetic() {
  const auto generator = at::detail::createCPUGenerator(12345);
  return Dataset{torch::randint(1, 256, {kSize, 3, 8, 8}, generator, torch::kUInt8),
                 torch::arange(kSize, torch::kLong).remainder(10),
                 {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}};
}

LoaderOptions options_of(int64_t batch_size, bool shuffle, uint64_t seed = 7) {
  LoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = shuffle;
  options.seed = seed;
  return options;
}

LoaderOptions augmenting(int64_t batch_size) {
  LoaderOptions options = options_of(batch_size, true);
  options.augmentation = {2, true};
  return options;
}

std::vector<Batch> epoch_of(const DataLoader& loader, int64_t epoch) {
  std::vector<Batch> batches;
  for (auto it = loader.begin(epoch); it != loader.end(); ++it) batches.push_back(*it);
  return batches;
}

torch::Tensor all_indices(const std::vector<Batch>& batches) {
  std::vector<torch::Tensor> parts;
  for (const Batch& b : batches) parts.push_back(b.indices);
  return torch::cat(parts);
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a[i].indices.equal(b[i].indices)) << "batch " << i;
    EXPECT_TRUE(a[i].labels.equal(b[i].labels)) << "batch " << i;
    EXPECT_TRUE(a[i].images.equal(b[i].images)) << "batch " << i;
  }
}

// Pixels back from a batch without normalisation.
torch::Tensor pixels_of(const torch::Tensor& images) { return (images * 255).round().to(torch::kUInt8); }

TEST(DataLoader, BatchesCoverTheDatasetOncePerEpoch) {
  const Dataset data = synthetic();
  const DataLoader loader(data, options_of(10, true));
  ASSERT_EQ(loader.num_batches(), 11);
  const auto batches = epoch_of(loader, 3);
  ASSERT_EQ(batches.size(), 11u);
  for (size_t i = 0; i < batches.size(); ++i) {
    const int64_t expected = i + 1 < batches.size() ? 10 : 3;
    EXPECT_EQ(batches[i].images.sizes(), (std::vector<int64_t>{expected, 3, 8, 8}));
    EXPECT_EQ(batches[i].images.scalar_type(), torch::kFloat);
    EXPECT_EQ(batches[i].labels.scalar_type(), torch::kLong);
    EXPECT_TRUE(batches[i].labels.equal(data.labels.index_select(0, batches[i].indices)));
    EXPECT_TRUE(pixels_of(batches[i].images).equal(data.images.index_select(0, batches[i].indices)));
    EXPECT_GE(batches[i].images.min().item<float>(), 0.0f);
    EXPECT_LE(batches[i].images.max().item<float>(), 1.0f);
  }
  const auto seen = std::get<0>(all_indices(batches).sort());
  EXPECT_TRUE(seen.equal(torch::arange(kSize, torch::kLong)));
}

TEST(DataLoader, DropLast) {
  LoaderOptions options = options_of(10, true);
  options.drop_last = true;
  const DataLoader loader(synthetic(), options);
  ASSERT_EQ(loader.num_batches(), 10);
  const auto batches = epoch_of(loader, 0);
  ASSERT_EQ(batches.size(), 10u);
  for (const Batch& b : batches) EXPECT_EQ(b.labels.size(0), 10);
  EXPECT_EQ(std::get<0>(torch::_unique(all_indices(batches))).numel(), 100);

  options.batch_size = kSize + 1;
  EXPECT_EQ(DataLoader(synthetic(), options).num_batches(), 0);
  options.drop_last = false;
  EXPECT_EQ(DataLoader(synthetic(), options).num_batches(), 1);
}

TEST(DataLoader, WithoutShuffleVisitsInOrder) {
  const DataLoader loader(synthetic(), options_of(16, false));
  EXPECT_TRUE(all_indices(epoch_of(loader, 5)).equal(torch::arange(kSize, torch::kLong)));
}

TEST(DataLoader, OrderIsAFunctionOfSeedAndEpoch) {
  const Dataset data = synthetic();
  const DataLoader a(data, augmenting(16));
  const DataLoader b(synthetic(), augmenting(16));
  expect_same(epoch_of(a, 2), epoch_of(b, 2));
  EXPECT_FALSE(a.order(2).equal(a.order(3)));
  EXPECT_FALSE(a.order(2).equal(DataLoader(data, options_of(16, true, 8)).order(2)));
  EXPECT_FALSE(a.order(0).equal(torch::arange(kSize, torch::kLong)));
}

TEST(DataLoader, SetEpochBeginAndRandomAccessAgree) {
  DataLoader loader(synthetic(), augmenting(16));
  loader.set_epoch(4);
  EXPECT_EQ(loader.epoch(), 4);
  std::vector<Batch> ranged;
  for (const Batch& b : loader) ranged.push_back(b);
  std::vector<Batch> random_access;
  for (int64_t i = 0; i < loader.num_batches(); ++i) random_access.push_back(loader.batch(4, i));
  expect_same(ranged, epoch_of(loader, 4));
  expect_same(ranged, random_access);
  EXPECT_THROW(loader.batch(4, loader.num_batches()), std::out_of_range);
  EXPECT_THROW(loader.batch(4, -1), std::out_of_range);
}

TEST(DataLoader, IndependentOfThreadCount) {
  const int threads = at::get_num_threads();
  const DataLoader loader(synthetic(), augmenting(32));
  at::set_num_threads(1);
  const auto one = epoch_of(loader, 1);
  at::set_num_threads(4);
  const auto four = epoch_of(loader, 1);
  at::set_num_threads(threads);
  expect_same(one, four);
}

TEST(DataLoader, NormalisesPerChannel) {
  LoaderOptions options = options_of(kSize, false);
  options.normalization = {{0.1, 0.2, 0.3}, {0.5, 1.0, 2.0}};
  const Dataset data = synthetic();
  const Batch batch = DataLoader(data, options).batch(0, 0);
  const auto mean = torch::tensor({0.1, 0.2, 0.3}, torch::kDouble).view({1, 3, 1, 1});
  const auto std = torch::tensor({0.5, 1.0, 2.0}, torch::kDouble).view({1, 3, 1, 1});
  const auto expected = ((data.images.to(torch::kDouble) / 255.0 - mean) / std).to(torch::kFloat);
  EXPECT_TRUE(batch.images.allclose(expected, 0, 1e-6));
}

TEST(DataLoader, RejectsBadInput) {
  const Dataset data = synthetic();
  auto with = [](auto change) {
    LoaderOptions options = options_of(8, true);
    change(options);
    return options;
  };
  EXPECT_THROW(DataLoader(data, with([](LoaderOptions& o) { o.batch_size = 0; })), std::invalid_argument);
  EXPECT_THROW(DataLoader(data, with([](LoaderOptions& o) { o.augmentation.crop_padding = -1; })),
               std::invalid_argument);
  EXPECT_THROW(DataLoader(data, with([](LoaderOptions& o) {
                            o.normalization = {{0.5}, {0.5}};
                          })),
               std::invalid_argument);
  EXPECT_THROW(DataLoader(data, with([](LoaderOptions& o) {
                            o.normalization = {{0, 0, 0}, {1, 0, 1}};
                          })),
               std::invalid_argument);
  Dataset float_images = data;
  float_images.images = data.images.to(torch::kFloat);
  EXPECT_THROW(DataLoader(float_images, options_of(8, true)), std::invalid_argument);
  Dataset short_labels = data;
  short_labels.labels = data.labels.narrow(0, 0, 5);
  EXPECT_THROW(DataLoader(short_labels, options_of(8, true)), std::invalid_argument);
}

// The (dy, dx, flip) with which `out` is `image` zero-padded by 2, cropped at
// (dy, dx) and maybe mirrored, written with plain tensor ops; none if no
// choice reproduces it.
std::optional<std::tuple<int64_t, int64_t, bool>> crop_of(const torch::Tensor& image,
                                                          const torch::Tensor& out) {
  const auto padded = torch::constant_pad_nd(image, {2, 2, 2, 2}, 0);
  for (int64_t dy = 0; dy <= 4; ++dy) {
    for (int64_t dx = 0; dx <= 4; ++dx) {
      const auto crop = padded.narrow(1, dy, 8).narrow(2, dx, 8);
      if (crop.equal(out)) return std::make_tuple(dy, dx, false);
      if (crop.flip(2).equal(out)) return std::make_tuple(dy, dx, true);
    }
  }
  return std::nullopt;
}

TEST(Augmentation, IsAZeroPaddedCropAndFlip) {
  const Dataset data = synthetic();
  const DataLoader loader(data, augmenting(kSize));
  const Batch batch = loader.batch(0, 0);
  ASSERT_EQ(batch.images.sizes(), data.images.sizes());
  std::set<std::pair<int64_t, int64_t>> offsets;
  int flips = 0;
  const auto pixels = pixels_of(batch.images);
  for (int64_t b = 0; b < kSize; ++b) {
    const auto found = crop_of(data.images[batch.indices[b].item<int64_t>()], pixels[b]);
    ASSERT_TRUE(found.has_value()) << "sample " << b;
    offsets.insert({std::get<0>(*found), std::get<1>(*found)});
    flips += std::get<2>(*found);
  }
  EXPECT_GE(offsets.size(), 15u);  // of 25
  EXPECT_GT(flips, 30);
  EXPECT_LT(flips, 73);
}

TEST(Augmentation, FlipAloneOnlyMirrors) {
  LoaderOptions options = options_of(kSize, false);
  options.augmentation.horizontal_flip = true;
  const Dataset data = synthetic();
  const auto pixels = pixels_of(DataLoader(data, options).batch(0, 0).images);
  int flips = 0;
  for (int64_t b = 0; b < kSize; ++b) {
    const bool same = pixels[b].equal(data.images[b]);
    const bool mirrored = pixels[b].equal(data.images[b].flip(2));
    EXPECT_TRUE(same || mirrored) << "sample " << b;
    flips += mirrored;
  }
  EXPECT_GT(flips, 30);
  EXPECT_LT(flips, 73);
}

// A sample's augmentation depends on (seed, epoch, sample) only, not on the
// batch it lands in.
TEST(Augmentation, DeterministicPerSample) {
  const Dataset data = synthetic();
  auto by_sample = [&](int64_t batch_size, int64_t epoch) {
    auto images = torch::empty({kSize, 3, 8, 8});
    for (const Batch& b : epoch_of(DataLoader(data, augmenting(batch_size)), epoch)) {
      images.index_copy_(0, b.indices, b.images);
    }
    return images;
  };
  const auto reference = by_sample(7, 1);
  EXPECT_TRUE(by_sample(13, 1).equal(reference));
  EXPECT_TRUE(by_sample(7, 1).equal(reference));
  EXPECT_FALSE(by_sample(7, 2).equal(reference));
}

}  // namespace
}  // namespace qat::data
