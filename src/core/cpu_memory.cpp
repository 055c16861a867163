#include "qat/cpu_memory.h"

#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define QAT_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QAT_ADDRESS_SANITIZER 1
#endif
#endif

namespace qat {
namespace {

// Requests are rounded up so that near sizes share blocks: 64 bytes
// (a cache line, the default allocator's alignment) below a page, whole
// pages above.
size_t rounded(size_t bytes) {
  const size_t unit = bytes < 4096 ? 64 : 4096;
  return (bytes + unit - 1) / unit * unit;
}

// The data pointer doubles as the DataPtr's context (so that LibTorch's
// raw_allocate works); the block's size and its owner are looked up by it.
// No member is marked override: LibTorch 2.x made allocate() non-const and
// added copy_data(), so each version overrides the overloads it declares.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(c10::Allocator* underlying) : underlying_(underlying) {}

  c10::DataPtr allocate(size_t bytes) const {
    if (bytes == 0) return underlying_->allocate(0);
    void* data = take(rounded(bytes));
    return {data, data, &give_back, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DataPtr allocate(size_t bytes) { return static_cast<const CachingCpuAllocator*>(this)->allocate(bytes); }
  c10::DeleterFnPtr raw_deleter() const { return &give_back; }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  static CachingCpuAllocator* instance;

 private:
  struct Block {
    c10::DataPtr memory;  // from the underlying allocator, freed with it
    size_t size;
  };

  void* take(size_t size) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* data = it->second.back();
        it->second.pop_back();
        return data;
      }
    }
    c10::DataPtr memory = underlying_->allocate(size);
    void* data = memory.get();
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.emplace(data, Block{std::move(memory), size});
    return data;
  }

  static void give_back(void* data) {
    CachingCpuAllocator& self = *instance;
    std::lock_guard<std::mutex> lock(self.mutex_);
    const auto it = self.blocks_.find(data);
    if (it == self.blocks_.end()) {
      // LibTorch frees some buffers taken by raw_allocate before the
      // install through the current allocator's raw_deleter.
      self.underlying_->raw_deleter()(data);
      return;
    }
    self.free_[it->second.size].push_back(data);
  }

  c10::Allocator* underlying_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, Block> blocks_;               // every block taken, by address
  mutable std::unordered_map<size_t, std::vector<void*>> free_;  // freed blocks by size
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;

}  // namespace

bool install_caching_cpu_allocator() {
#ifdef QAT_ADDRESS_SANITIZER
  return false;
#else
  static const bool installed = [] {
    // Never destroyed: tensors may outlive any static destructor.
    CachingCpuAllocator::instance = new CachingCpuAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
    return c10::GetCPUAllocator() == CachingCpuAllocator::instance;
  }();
  return installed;
#endif
}

}  // namespace qat
