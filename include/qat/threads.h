// Intra-op thread count. Debian's LibTorch starts with one thread; qat uses
// every core unless told otherwise.
#pragma once

#include <optional>

namespace qat {

// Sets LibTorch's intra-op threads to `requested`, else to $QAT_NUM_THREADS,
// else to the number of cores. Returns the count in force.
int configure_threads(std::optional<int> requested = std::nullopt);

}  // namespace qat
