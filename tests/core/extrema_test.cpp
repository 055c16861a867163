#include "core/extrema.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

namespace qat {
namespace {

using torch::Tensor;

// Rows long enough to span several chunks, with the extremes placed in
// different ones: the per-chunk results must be combined per row.
TEST(RowExtrema, EqualsAminAmaxAcrossChunks) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    Tensor rows = torch::randn({3, 100003}, dtype);
    rows[0][5] = -50.0;
    rows[1][70000] = 60.0;
    rows[2][100002] = -70.0;
    const auto extrema = row_extrema(rows);
    ASSERT_TRUE(extrema.has_value());
    EXPECT_TRUE(torch::equal(extrema->first, rows.amin(1).to(torch::kDouble)));
    EXPECT_TRUE(torch::equal(extrema->second, rows.amax(1).to(torch::kDouble)));
  }
}

TEST(RowExtrema, ReportsNanAndInfinity) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    Tensor rows = torch::ones({2, 40000});
    rows[1][39999] = bad;
    EXPECT_FALSE(row_extrema(rows).has_value()) << bad;
  }
}

TEST(RowExtrema, RejectsNonContiguousRows) {
  EXPECT_THROW(row_extrema(torch::ones({4, 3}).t()), c10::Error);
}

}  // namespace
}  // namespace qat
