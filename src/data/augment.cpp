#include "augment.h"

#include "counter_random.h"

namespace qat::data {

torch::Tensor augment(const torch::Tensor& images, const torch::Tensor& indices,
                      const Augmentation& augmentation, uint64_t seed, int64_t epoch) {
  const int64_t batch = images.size(0);
  const int64_t channels = images.size(1);
  const int64_t height = images.size(2);
  const int64_t width = images.size(3);
  const int64_t pad = augmentation.crop_padding;

  // Source row and column in the padded image of every output row and
  // column; a flip reverses the columns.
  auto rows = torch::empty({batch, height}, torch::kLong);
  auto cols = torch::empty({batch, width}, torch::kLong);
  const auto sample = indices.contiguous();
  const int64_t* sample_ptr = sample.data_ptr<int64_t>();
  int64_t* row_ptr = rows.data_ptr<int64_t>();
  int64_t* col_ptr = cols.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    CounterRandom random(
        {seed, kAugmentStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(sample_ptr[b])});
    // Offsets lie in [0, 2 * pad], 0 without padding. Always three draws, so
    // that turning one augmentation off leaves the other's choices unchanged.
    const auto dy = static_cast<int64_t>(random.below(static_cast<uint64_t>(2 * pad + 1)));
    const auto dx = static_cast<int64_t>(random.below(static_cast<uint64_t>(2 * pad + 1)));
    const bool flip = (random.next() & 1) != 0 && augmentation.horizontal_flip;
    for (int64_t i = 0; i < height; ++i) row_ptr[b * height + i] = dy + i;
    for (int64_t j = 0; j < width; ++j) col_ptr[b * width + j] = dx + (flip ? width - 1 - j : j);
  }
  // One gather over the flattened padded images: output pixel (i, j) of
  // sample b reads offset rows[b, i] * padded_width + cols[b, j].
  const auto padded = pad != 0 ? torch::constant_pad_nd(images, {pad, pad, pad, pad}, 0) : images;
  const int64_t padded_width = width + 2 * pad;
  const auto offsets = (rows.unsqueeze(2) * padded_width + cols.unsqueeze(1))
                           .view({batch, 1, height * width})
                           .expand({batch, channels, height * width});
  return padded.reshape({batch, channels, -1}).gather(2, offsets).view({batch, channels, height, width});
}

}  // namespace qat::data
