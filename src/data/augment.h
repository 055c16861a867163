// Batch augmentation for the loader: random crop after zero padding and
// random horizontal flip, both in one indexing pass.
#pragma once

#include "qat/data.h"

namespace qat::data {

// images: uint8 [B, C, H, W]; indices: int64 [B], the samples' dataset
// positions. Sample b's crop offset and flip are drawn from the stream
// (seed, kAugmentStream, epoch, indices[b]) alone.
torch::Tensor augment(const torch::Tensor& images, const torch::Tensor& indices,
                      const Augmentation& augmentation, uint64_t seed, int64_t epoch);

}  // namespace qat::data
