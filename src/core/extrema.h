// Internal: per-row minimum and maximum in one pass over the data.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <utility>

namespace qat {

// For a contiguous float32 or float64 tensor [C, N] with N > 0: each row's
// minimum and maximum as float64 [C], read in one pass. Returns nothing when
// some element is NaN or infinite (the caller then filters), because this
// pass only detects such elements, it does not skip them.
std::optional<std::pair<torch::Tensor, torch::Tensor>> row_extrema(const torch::Tensor& rows);

}  // namespace qat
