#include "qat/data.h"

#include "test_files.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat::data {
namespace {

using testing::Bytes;
using testing::error_of;
using testing::TempDir;

constexpr int kRecord = 3073;

// Record r of file f: label (3r + f) % 10, pixel byte k = (7f + 31r + k) % 256.
uint8_t label_of(int file, int record) { return static_cast<uint8_t>((3 * record + file) % 10); }
uint8_t pixel_of(int file, int record, int k) {
  return static_cast<uint8_t>((7 * file + 31 * record + k) % 256);
}

Bytes records(int file, int count) {
  Bytes bytes;
  for (int r = 0; r < count; ++r) {
    bytes.push_back(label_of(file, r));
    for (int k = 0; k < kRecord - 1; ++k) bytes.push_back(pixel_of(file, r, k));
  }
  return bytes;
}

TEST(Cifar10, RoundTrip) {
  // Files 1..5 hold 1..5 records (batch 4 gzip-compressed), the test file 2.
  const TempDir dir;
  for (int f = 1; f <= 5; ++f) {
    const std::string path = dir.path("data_batch_" + std::to_string(f) + ".bin");
    if (f == 4)
      testing::write_gzip(path, records(f, f));
    else
      testing::write_plain(path, records(f, f));
  }
  testing::write_plain(dir.path("test_batch.bin"), records(0, 2));

  const Dataset train = load_cifar10(Split::kTrain, dir.root());
  ASSERT_EQ(train.images.sizes(), (std::vector<int64_t>{15, 3, 32, 32}));
  ASSERT_EQ(train.images.scalar_type(), torch::kUInt8);
  ASSERT_EQ(train.labels.scalar_type(), torch::kLong);
  EXPECT_EQ(train.class_names, (std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer",
                                                         "dog", "frog", "horse", "ship", "truck"}));
  // Element by element against the generator: byte k of a record's image is
  // channel k / 1024, row (k / 32) % 32, column k % 32.
  const auto images = train.images.contiguous();
  const uint8_t* pixels = images.data_ptr<uint8_t>();
  int64_t n = 0;
  for (int f = 1; f <= 5; ++f) {
    for (int r = 0; r < f; ++r, ++n) {
      EXPECT_EQ(train.labels[n].item<int64_t>(), label_of(f, r));
      for (int k = 0; k < kRecord - 1; ++k) {
        const int c = k / 1024;
        const int y = (k / 32) % 32;
        const int x = k % 32;
        ASSERT_EQ(pixels[((n * 3 + c) * 32 + y) * 32 + x], pixel_of(f, r, k))
            << "sample " << n << " byte " << k;
      }
    }
  }

  const Dataset test = load_cifar10(Split::kTest, dir.root());
  ASSERT_EQ(test.size(), 2);
  EXPECT_EQ(test.labels[1].item<int64_t>(), label_of(0, 1));
  EXPECT_EQ(test.images[1][2][31][31].item<int64_t>(), pixel_of(0, 1, 3071));
}

TEST(Cifar10Errors, SizeNotAMultipleOfTheRecord) {
  const TempDir dir;
  Bytes bytes = records(0, 2);
  bytes.pop_back();
  testing::write_plain(dir.path("test_batch.bin"), bytes);
  EXPECT_EQ(error_of([&] { load_cifar10(Split::kTest, dir.root()); }),
            dir.path("test_batch.bin") +
                ": holds 6145 bytes, not a positive multiple of the 3073-byte CIFAR-10 record");
  testing::write_gzip(dir.path("empty.bin.gz"), {});
  EXPECT_EQ(
      error_of([&] { load_cifar10_files({dir.path("empty.bin.gz")}); }),
      dir.path("empty.bin.gz") +
          ": holds 0 bytes after decompression, not a positive multiple of the 3073-byte CIFAR-10 record");
}

TEST(Cifar10Errors, LabelOutOfRange) {
  const TempDir dir;
  Bytes bytes = records(0, 3);
  bytes[2 * kRecord] = 10;
  testing::write_plain(dir.path("test_batch.bin"), bytes);
  EXPECT_EQ(error_of([&] { load_cifar10(Split::kTest, dir.root()); }),
            dir.path("test_batch.bin") + ": label 10 of record 2 is out of range for 10 classes");
}

TEST(Cifar10Errors, MissingFile) {
  const TempDir dir;
  for (int f : {1, 2, 4, 5})
    testing::write_plain(dir.path("data_batch_" + std::to_string(f) + ".bin"), records(f, 1));
  EXPECT_EQ(error_of([&] { load_cifar10(Split::kTrain, dir.root()); }),
            dir.path("data_batch_3.bin") + ": cannot open: No such file or directory");
  EXPECT_THROW(load_cifar10_files({}), std::invalid_argument);
}

}  // namespace
}  // namespace qat::data
