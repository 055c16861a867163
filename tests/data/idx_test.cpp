#include "qat/data.h"

#include "test_files.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

namespace qat::data {
namespace {

using testing::Bytes;
using testing::error_of;
using testing::idx_header;
using testing::TempDir;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;

// Reference values for the real files, computed independently of qat with
//   x = numpy.frombuffer(gzip.open(f).read(), numpy.uint8, offset=16)
// (offset=8 for labels), reshaped to [N, 28, 28]:
//   pixel_sum     = x.sum(dtype=int64)
//   square_sum    = (x.astype(int64) ** 2).sum()
//   weighted_sum  = (x.reshape(N, -1).sum(1) * (arange(N) % 7 + 1)).sum()
// weighted_sum changes when images are reordered; row 14 of image 0 and the
// first labels pin down layout.
struct SplitReference {
  int64_t size;
  int64_t pixel_sum;
  int64_t square_sum;
  int64_t weighted_sum;
  std::vector<int64_t> first_labels;
  std::vector<int64_t> image0_row14;
};

const SplitReference kTrainReference{60000,
                                     3431114169,
                                     631470052347,
                                     13719068577,
                                     {9, 0, 0, 3, 0, 2, 7, 2, 5, 5},
                                     {0,   0,   1,   4,   6,   7,   2,   0,   0,   0,   0,   0,   237, 226,
                                      217, 223, 222, 219, 222, 221, 216, 223, 229, 215, 218, 255, 77,  0}};
const SplitReference kTestReference{10000,
                                    573469082,
                                    105272563536,
                                    2297381975,
                                    {9, 2, 1, 1, 6, 1, 4, 6, 5, 7},
                                    {0,   0,   0,   0,   0,   0,   2,   4,   1,   0,   0,   0,   98,  136,
                                     110, 109, 110, 162, 135, 144, 149, 159, 167, 144, 158, 169, 119, 0}};

void expect_matches(const Dataset& data, const SplitReference& ref) {
  ASSERT_EQ(data.images.sizes(), (std::vector<int64_t>{ref.size, 1, 28, 28}));
  ASSERT_EQ(data.images.scalar_type(), torch::kUInt8);
  ASSERT_EQ(data.labels.sizes(), (std::vector<int64_t>{ref.size}));
  ASSERT_EQ(data.labels.scalar_type(), torch::kLong);
  EXPECT_EQ(data.class_names, (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}));
  const auto pixels = data.images.to(torch::kLong);
  EXPECT_EQ(pixels.sum().item<int64_t>(), ref.pixel_sum);
  EXPECT_EQ(pixels.square().sum().item<int64_t>(), ref.square_sum);
  const auto weights = torch::arange(ref.size, torch::kLong).remainder(7) + 1;
  EXPECT_EQ((pixels.sum({1, 2, 3}) * weights).sum().item<int64_t>(), ref.weighted_sum);
  EXPECT_EQ(torch::bincount(data.labels).eq(ref.size / 10).sum().item<int64_t>(), 10)
      << torch::bincount(data.labels);
  for (size_t i = 0; i < ref.first_labels.size(); ++i)
    EXPECT_EQ(data.labels[i].item<int64_t>(), ref.first_labels[i]);
  for (size_t x = 0; x < ref.image0_row14.size(); ++x) {
    EXPECT_EQ(data.images[0][0][14][x].item<int64_t>(), ref.image0_row14[x]) << "x=" << x;
  }
}

TEST(FashionMnist, TrainSplit) {
  const auto start = std::chrono::steady_clock::now();
  const Dataset train = load_fashion_mnist(Split::kTrain);
  const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
  std::cout << "load_fashion_mnist(kTrain): " << elapsed.count() << " ms\n";
  expect_matches(train, kTrainReference);
}

TEST(FashionMnist, TestSplit) { expect_matches(load_fashion_mnist(Split::kTest), kTestReference); }

// 3 images of 2x3 with pixel i*10+k, labels 2, 0, 5.
Bytes tiny_images() {
  Bytes bytes = idx_header(kImagesMagic, {3, 2, 3});
  for (uint8_t i = 0; i < 3; ++i) {
    for (uint8_t k = 0; k < 6; ++k) bytes.push_back(static_cast<uint8_t>(i * 10 + k));
  }
  return bytes;
}

Bytes tiny_labels() {
  Bytes bytes = idx_header(kLabelsMagic, {3});
  bytes.insert(bytes.end(), {2, 0, 5});
  return bytes;
}

TEST(Idx, ReadsPlainAndGzipFilesAlike) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), tiny_images());
  testing::write_plain(dir.path("labels"), tiny_labels());
  testing::write_gzip(dir.path("images.gz"), tiny_images());
  testing::write_gzip(dir.path("labels.gz"), tiny_labels());
  const Dataset plain = load_idx(dir.path("images"), dir.path("labels"));
  const Dataset gzip = load_idx(dir.path("images.gz"), dir.path("labels.gz"), {"a", "b", "c", "d", "e", "f"});

  const auto expected =
      (torch::arange(3).view({3, 1, 1, 1}) * 10 + torch::arange(6).view({1, 1, 2, 3})).to(torch::kUInt8);
  EXPECT_TRUE(plain.images.equal(expected)) << plain.images;
  EXPECT_TRUE(gzip.images.equal(expected)) << gzip.images;
  EXPECT_TRUE(plain.labels.equal(torch::tensor({2, 0, 5}, torch::kLong)));
  EXPECT_TRUE(gzip.labels.equal(plain.labels));
  // Without names, classes are numbered up to the largest label.
  EXPECT_EQ(plain.class_names, (std::vector<std::string>{"0", "1", "2", "3", "4", "5"}));
  EXPECT_EQ(gzip.class_names.size(), 6u);
}

TEST(Idx, FashionMnistFallsBackToUncompressedFiles) {
  const TempDir dir;
  testing::write_plain(dir.path("t10k-images-idx3-ubyte"), tiny_images());
  testing::write_gzip(dir.path("t10k-labels-idx1-ubyte.gz"), tiny_labels());
  const Dataset data = load_fashion_mnist(Split::kTest, dir.root());
  EXPECT_EQ(data.size(), 3);
  EXPECT_EQ(data.class_names.size(), 10u);
}

TEST(IdxErrors, MissingFile) {
  const TempDir dir;
  testing::write_plain(dir.path("labels"), tiny_labels());
  EXPECT_EQ(error_of([&] { load_idx(dir.path("nope"), dir.path("labels")); }),
            dir.path("nope") + ": cannot open: No such file or directory");
  EXPECT_EQ(error_of([&] { load_fashion_mnist(Split::kTrain, dir.root()); }),
            dir.path("train-images-idx3-ubyte.gz") + ": cannot open: No such file or directory");
}

TEST(IdxErrors, BadMagic) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), tiny_images());
  testing::write_plain(dir.path("labels"), tiny_labels());
  // The two files swapped.
  EXPECT_EQ(error_of([&] { load_idx(dir.path("labels"), dir.path("images")); }),
            dir.path("labels") + ": bad magic number 0x00000801, expected 0x00000803 (IDX uint8 images)");
  Bytes labels = tiny_labels();
  labels[2] = 0x0d;  // float32 elements
  testing::write_plain(dir.path("float_labels"), labels);
  EXPECT_EQ(
      error_of([&] { load_idx(dir.path("images"), dir.path("float_labels")); }),
      dir.path("float_labels") + ": bad magic number 0x00000d01, expected 0x00000801 (IDX uint8 labels)");
}

TEST(IdxErrors, TruncatedPayload) {
  // The header of Fashion-MNIST's test images followed by 107 bytes, 123 in all.
  const TempDir dir;
  Bytes images = idx_header(kImagesMagic, {10000, 28, 28});
  images.resize(123, 7);
  testing::write_gzip(dir.path("t10k-images-idx3-ubyte.gz"), images);
  testing::write_gzip(dir.path("t10k-labels-idx1-ubyte.gz"), tiny_labels());
  EXPECT_EQ(
      error_of([&] { load_fashion_mnist(Split::kTest, dir.root()); }),
      dir.path("t10k-images-idx3-ubyte.gz") +
          ": truncated: header promises 10000 images of 28x28 (7840016 bytes with the header), file holds "
          "123 bytes after decompression");

  Bytes labels = tiny_labels();
  labels.pop_back();
  testing::write_plain(dir.path("labels"), labels);
  testing::write_plain(dir.path("images"), tiny_images());
  EXPECT_EQ(error_of([&] { load_idx(dir.path("images"), dir.path("labels")); }),
            dir.path("labels") +
                ": truncated: header promises 3 labels (11 bytes with the header), file holds 10 bytes");
}

TEST(IdxErrors, TruncatedHeaderAndTrailingData) {
  const TempDir dir;
  testing::write_plain(dir.path("labels"), tiny_labels());
  testing::write_plain(dir.path("short"), Bytes{0, 0, 8});
  EXPECT_EQ(error_of([&] { load_idx(dir.path("short"), dir.path("labels")); }),
            dir.path("short") + ": truncated: the IDX header needs 16 bytes, file holds 3 bytes");
  testing::write_plain(dir.path("header_only"), Bytes{0, 0, 8, 3, 0, 0});
  EXPECT_EQ(error_of([&] { load_idx(dir.path("header_only"), dir.path("labels")); }),
            dir.path("header_only") + ": truncated: the IDX header needs 16 bytes, file holds 6 bytes");
  Bytes images = tiny_images();
  images.push_back(0);
  testing::write_plain(dir.path("long"), images);
  EXPECT_EQ(error_of([&] { load_idx(dir.path("long"), dir.path("labels")); }),
            dir.path("long") +
                ": trailing data: header promises 3 images of 2x3 (34 bytes with the header), "
                "file holds 35 bytes");
}

TEST(IdxErrors, HugeHeaderDimensions) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), idx_header(kImagesMagic, {0xffffffff, 0xffffffff, 0xffffffff}));
  testing::write_plain(dir.path("labels"), tiny_labels());
  EXPECT_EQ(
      error_of([&] { load_idx(dir.path("images"), dir.path("labels")); }),
      dir.path("images") + ": corrupt header: 4294967295 images of 4294967295x4294967295 overflows 64 bits");
}

TEST(IdxErrors, CountMismatch) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), tiny_images());
  Bytes labels = idx_header(kLabelsMagic, {2});
  labels.insert(labels.end(), {1, 1});
  testing::write_plain(dir.path("labels"), labels);
  EXPECT_EQ(error_of([&] { load_idx(dir.path("images"), dir.path("labels")); }),
            dir.path("labels") + ": holds 2 labels but " + dir.path("images") + " holds 3 images");
}

TEST(IdxErrors, LabelOutOfRange) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), tiny_images());
  testing::write_plain(dir.path("labels"), tiny_labels());
  EXPECT_EQ(error_of([&] {
              load_idx(dir.path("images"), dir.path("labels"), {"a", "b", "c", "d", "e"});
            }),
            dir.path("labels") + ": label 5 at index 2 is out of range for 5 classes");
}

TEST(IdxErrors, CorruptGzipStream) {
  const TempDir dir;
  testing::write_plain(dir.path("images"), tiny_images());
  const Bytes real = testing::read_plain(std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_GT(real.size(), 3000u);
  testing::write_plain(dir.path("cut.gz"), Bytes(real.begin(), real.begin() + 3000));
  EXPECT_EQ(error_of([&] { load_idx(dir.path("images"), dir.path("cut.gz")); }),
            dir.path("cut.gz") + ": corrupt gzip data: unexpected end of file");
  Bytes flipped = real;
  flipped[2000] ^= 0xff;
  testing::write_plain(dir.path("flipped.gz"), flipped);
  const std::string error = error_of([&] { load_idx(dir.path("images"), dir.path("flipped.gz")); });
  EXPECT_EQ(error.rfind(dir.path("flipped.gz") + ": corrupt gzip data: ", 0), 0u) << error;
}

}  // namespace
}  // namespace qat::data
