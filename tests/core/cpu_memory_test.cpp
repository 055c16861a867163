#include "qat/cpu_memory.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace qat {
namespace {

// Under ctest each test is its own process, so installing the allocator
// here leaves the other tests alone (run directly, they run on it too).
class CachingCpuAllocator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!install_caching_cpu_allocator()) GTEST_SKIP() << "not installed in sanitizer builds";
  }
};

TEST_F(CachingCpuAllocator, ReusesAFreedBlockForTheSameSize) {
  const void* first = nullptr;
  {
    const torch::Tensor t = torch::empty({1000, 257});
    first = t.data_ptr();
  }
  const torch::Tensor same = torch::empty({257, 1000});
  EXPECT_EQ(same.data_ptr(), first);
  // A live block is never handed out twice.
  const torch::Tensor other = torch::empty({257, 1000});
  EXPECT_NE(other.data_ptr(), first);
}

TEST_F(CachingCpuAllocator, ReusedBlocksHoldWhatIsWrittenAndComputeRight) {
  torch::manual_seed(0);
  const torch::Tensor a = torch::randn({300, 300});
  const torch::Tensor b = torch::randn({300, 300});
  const torch::Tensor want = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble)).to(torch::kFloat);
  for (int i = 0; i < 3; ++i) {
    const torch::Tensor got = torch::mm(a, b);
    EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-3));
  }
}

TEST_F(CachingCpuAllocator, RawInterfaceRoundTrips) {
  c10::Allocator* allocator = c10::GetCPUAllocator();
  ASSERT_NE(allocator->raw_deleter(), nullptr);
  void* p = allocator->raw_allocate(10000);
  static_cast<char*>(p)[9999] = 7;
  allocator->raw_deallocate(p);
  void* q = allocator->raw_allocate(10000);
  EXPECT_EQ(q, p);
  allocator->raw_deallocate(q);
}

}  // namespace
}  // namespace qat
