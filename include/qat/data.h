// Image classification data: file readers and a deterministic batch loader.
//
// Readers load a whole split into memory as uint8 pixels (Fashion-MNIST's
// training split is 47 MB), so that batching is an index_select. Every
// reader error is a std::runtime_error whose message starts with the path of
// the offending file. docs/data.md describes the formats and guarantees.
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace qat::data {

// Where Debian's dataset-fashion-mnist package installs the data.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Per-channel statistics of Fashion-MNIST's training split, pixels scaled to
// [0, 1], std over all pixels (population, not sample). Computed once from
// exact integer sums of the 47,040,000 pixels of train-images-idx3-ubyte.gz
// with Python's gzip and numpy; tests/data/normalization_test.cpp recomputes
// them with compute_normalization.
inline constexpr double kFashionMnistMean = 0.2860405969887955;
inline constexpr double kFashionMnistStd = 0.3530242445149226;

enum class Split { kTrain, kTest };

struct Dataset {
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N], each in [0, class_names.size())
  std::vector<std::string> class_names;

  int64_t size() const { return labels.size(0); }
};

// Reads a pair of IDX files (the MNIST format: uint8 images [N, H, W] with
// magic 0x00000803, uint8 labels [N] with magic 0x00000801), gzip-compressed
// or not. Images come back as [N, 1, H, W]. Labels must lie below
// class_names.size(); with no names given, the classes are named "0" up to
// the largest label.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 std::vector<std::string> class_names = {});

// Fashion-MNIST's {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in `dir`;
// a file without the .gz suffix is used when the compressed one is absent.
Dataset load_fashion_mnist(Split split, const std::string& dir = kFashionMnistDir);

// Reads CIFAR-10 binary batches: records of one label byte and 3072 pixel
// bytes (32x32 red, then green, then blue). Files may be gzip-compressed.
// Images come back as [N, 3, 32, 32], in file order. An empty list throws
// std::invalid_argument.
Dataset load_cifar10_files(const std::vector<std::string>& paths);

// data_batch_1.bin to data_batch_5.bin (train) or test_batch.bin (test) in
// `dir`, the cifar-10-batches-bin directory of the official archive.
Dataset load_cifar10(Split split, const std::string& dir);

// Per-channel affine normalisation of pixels scaled to [0, 1]:
// x = (pixel / 255 - mean[c]) / std[c]. Empty vectors mean no normalisation.
struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};

// Mean and population std per channel of uint8 images [N, C, H, W], on the
// [0, 1] scale, from exact integer sums.
Normalization compute_normalization(const torch::Tensor& images);

// Training-time augmentation, applied to the uint8 pixels before scaling.
struct Augmentation {
  // Pads each side with this many zero pixels and crops a random window of
  // the original size back out; 0 disables it.
  int64_t crop_padding = 0;
  // Mirrors each image left-right with probability 1/2.
  bool horizontal_flip = false;
};

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = false;
  uint64_t seed = 0;
  // Drops the last batch when it would be smaller than batch_size.
  bool drop_last = false;
  Augmentation augmentation;
  Normalization normalization;
};

struct Batch {
  torch::Tensor images;   // float32 [B, C, H, W], scaled and normalised
  torch::Tensor labels;   // int64 [B]
  torch::Tensor indices;  // int64 [B], the samples' positions in the dataset
};

// Cuts a Dataset into batches. Every batch is a pure function of (seed,
// epoch, batch index): the sample order of an epoch depends only on (seed,
// epoch), and a sample's crop offset and flip only on (seed, epoch, sample's
// dataset index), never on thread count, batch size or what was loaded
// before. Training can therefore resume exactly at any batch.
class DataLoader {
 public:
  class Iterator;

  // Throws std::invalid_argument for a malformed dataset or bad options.
  DataLoader(Dataset dataset, LoaderOptions options);

  const Dataset& dataset() const { return dataset_; }
  const LoaderOptions& options() const { return options_; }
  int64_t num_batches() const;

  // The epoch that begin() iterates.
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }

  // Dataset indices in the order epoch `epoch` visits them: a permutation of
  // [0, N) when shuffling, 0..N-1 otherwise. int64 [N].
  torch::Tensor order(int64_t epoch) const;
  // Batch `index` (0 <= index < num_batches()) of epoch `epoch`, for resuming
  // mid-epoch. It recomputes the epoch's order; iterate for a whole epoch.
  Batch batch(int64_t epoch, int64_t index) const;

  Iterator begin() const;
  Iterator begin(int64_t epoch) const;
  Iterator end() const;

 private:
  Batch make_batch(const torch::Tensor& order, int64_t epoch, int64_t index) const;

  Dataset dataset_;
  LoaderOptions options_;
  int64_t epoch_ = 0;
  // pixel * scale_ + shift_ == (pixel / 255 - mean) / std, shaped [1, C, 1, 1].
  torch::Tensor scale_;
  torch::Tensor shift_;
};

// Walks one epoch; each dereference builds its batch.
class DataLoader::Iterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = Batch;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = Batch;

  Batch operator*() const { return loader_->make_batch(order_, epoch_, index_); }
  Iterator& operator++() {
    ++index_;
    return *this;
  }
  bool operator==(const Iterator& other) const { return index_ == other.index_; }
  bool operator!=(const Iterator& other) const { return index_ != other.index_; }

 private:
  friend class DataLoader;
  Iterator(const DataLoader* loader, int64_t epoch, torch::Tensor order, int64_t index)
      : loader_(loader), epoch_(epoch), order_(std::move(order)), index_(index) {}

  const DataLoader* loader_;
  int64_t epoch_;
  torch::Tensor order_;
  int64_t index_;
};

}  // namespace qat::data
