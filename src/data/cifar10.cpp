// CIFAR-10's binary version (www.cs.toronto.edu/~kriz/cifar.html): each file
// is a plain sequence of 3073-byte records, one label byte (0-9) and then a
// 32x32 image as 1024 red, 1024 green and 1024 blue bytes, rows first.
#include "qat/data.h"

#include "input_file.h"

#include <stdexcept>
#include <utility>

namespace qat::data {
namespace {

constexpr int64_t kSide = 32;
constexpr int64_t kImageBytes = 3 * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kImageBytes;

const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                  "dog",      "frog",       "horse", "ship", "truck"};

// One file's records as {images [n, 3, 32, 32], labels [n]}.
std::pair<torch::Tensor, torch::Tensor> read_records(const std::string& path) {
  FileContent file = read_file(path);
  const int64_t size = static_cast<int64_t>(file.bytes.size());
  if (size == 0 || size % kRecordBytes != 0) {
    fail(path, "holds " + file.size_text() + ", not a positive multiple of the " +
                   std::to_string(kRecordBytes) + "-byte CIFAR-10 record");
  }
  const int64_t n = size / kRecordBytes;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = file.bytes[static_cast<size_t>(i * kRecordBytes)];
    if (label >= static_cast<int64_t>(kCifar10Classes.size())) {
      fail(path, "label " + std::to_string(label) + " of record " + std::to_string(i) +
                     " is out of range for 10 classes");
    }
  }
  // Column 0 of the [n, 3073] view is the labels, the rest the pixels;
  // both are copied out before the buffer goes.
  const auto records = torch::from_blob(file.bytes.data(), {n, kRecordBytes}, torch::kUInt8);
  return {
      records.narrow(1, 1, kImageBytes).reshape({n, 3, kSide, kSide}).clone(torch::MemoryFormat::Contiguous),
      records.select(1, 0).to(torch::kLong)};
}

}  // namespace

Dataset load_cifar10_files(const std::vector<std::string>& paths) {
  if (paths.empty()) throw std::invalid_argument("load_cifar10_files needs at least one file");
  std::vector<torch::Tensor> images;
  std::vector<torch::Tensor> labels;
  for (const std::string& path : paths) {
    auto [file_images, file_labels] = read_records(path);
    images.push_back(std::move(file_images));
    labels.push_back(std::move(file_labels));
  }
  return Dataset{torch::cat(images), torch::cat(labels), kCifar10Classes};
}

Dataset load_cifar10(Split split, const std::string& dir) {
  std::vector<std::string> paths;
  if (split == Split::kTest) {
    paths.push_back(dir + "/test_batch.bin");
  } else {
    for (int i = 1; i <= 5; ++i) paths.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  }
  return load_cifar10_files(paths);
}

}  // namespace qat::data
