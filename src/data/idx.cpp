// The IDX format (yann.lecun.com/exdb/mnist): a big-endian header, then the
// array in row-major order. Byte 2 of the magic number is the element type
// (0x08: unsigned byte), byte 3 the number of dimensions; one big-endian
// uint32 per dimension follows.
#include "qat/data.h"

#include "input_file.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace qat::data {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // uint8 [N, H, W]
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8 [N]

const std::vector<std::string> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

uint32_t read_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

std::string hex32(uint32_t value) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// A checked IDX array of unsigned bytes; `data` points into the file's bytes.
struct IdxArray {
  std::vector<int64_t> dims;
  const uint8_t* data = nullptr;
};

// "10000 images of 28x28" or "10000 labels".
std::string describe(const std::vector<int64_t>& dims) {
  if (dims.size() == 1) return std::to_string(dims[0]) + " labels";
  return std::to_string(dims[0]) + " images of " + std::to_string(dims[1]) + "x" + std::to_string(dims[2]);
}

// Checks the magic number and that the file holds exactly what its header
// promises, so that reading `data` can never run past the buffer.
IdxArray parse_idx(const FileContent& file, uint32_t magic) {
  const std::vector<uint8_t>& bytes = file.bytes;
  const size_t rank = magic & 0xff;
  const size_t header = 4 + 4 * rank;
  if (bytes.size() >= 4 && read_be32(bytes.data()) != magic) {
    fail(file.path, "bad magic number " + hex32(read_be32(bytes.data())) + ", expected " + hex32(magic) +
                        (rank == 1 ? " (IDX uint8 labels)" : " (IDX uint8 images)"));
  }
  if (bytes.size() < header) {
    fail(file.path, "truncated: the IDX header needs " + std::to_string(header) + " bytes, file holds " +
                        file.size_text());
  }
  IdxArray array;
  uint64_t payload = 1;
  for (size_t d = 0; d < rank; ++d) {
    const uint32_t dim = read_be32(bytes.data() + 4 + 4 * d);
    array.dims.push_back(dim);
    if (__builtin_mul_overflow(payload, uint64_t{dim}, &payload)) {
      fail(file.path, "corrupt header: " + describe(array.dims) + " overflows 64 bits");
    }
  }
  if (bytes.size() - header != payload) {
    fail(file.path, std::string(bytes.size() - header < payload ? "truncated" : "trailing data") +
                        ": header promises " + describe(array.dims) + " (" + std::to_string(header + payload) +
                        " bytes with the header), file holds " + file.size_text());
  }
  array.data = bytes.data() + header;
  return array;
}

// <dir>/<name>.gz, or <dir>/<name> when only the uncompressed file exists.
std::string pick_file(const std::string& dir, const std::string& name) {
  const std::string compressed = dir + "/" + name + ".gz";
  const std::string plain = dir + "/" + name;
  return !std::filesystem::exists(compressed) && std::filesystem::exists(plain) ? plain : compressed;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 std::vector<std::string> class_names) {
  const FileContent image_file = read_file(images_path);
  const IdxArray images = parse_idx(image_file, kImagesMagic);
  const FileContent label_file = read_file(labels_path);
  const IdxArray labels = parse_idx(label_file, kLabelsMagic);

  const int64_t n = images.dims[0];
  if (labels.dims[0] != n) {
    fail(labels_path, "holds " + std::to_string(labels.dims[0]) + " labels but " + images_path + " holds " +
                          std::to_string(n) + " images");
  }
  const int64_t num_classes = class_names.empty() ? 256 : static_cast<int64_t>(class_names.size());
  int64_t largest = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = labels.data[i];
    if (label >= num_classes) {
      fail(labels_path, "label " + std::to_string(label) + " at index " + std::to_string(i) +
                            " is out of range for " + std::to_string(num_classes) + " classes");
    }
    largest = std::max(largest, label);
  }
  for (int64_t c = static_cast<int64_t>(class_names.size()); c <= largest; ++c) {
    class_names.push_back(std::to_string(c));
  }

  // from_blob only views the file buffer, which dies here: copy out.
  auto* pixels = const_cast<uint8_t*>(images.data);
  auto* label_bytes = const_cast<uint8_t*>(labels.data);
  return Dataset{torch::from_blob(pixels, {n, 1, images.dims[1], images.dims[2]}, torch::kUInt8).clone(),
                 torch::from_blob(label_bytes, {n}, torch::kUInt8).to(torch::kLong), std::move(class_names)};
}

Dataset load_fashion_mnist(Split split, const std::string& dir) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return load_idx(pick_file(dir, prefix + "-images-idx3-ubyte"),
                  pick_file(dir, prefix + "-labels-idx1-ubyte"), kFashionMnistClasses);
}

}  // namespace qat::data
