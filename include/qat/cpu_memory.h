// A CPU tensor allocator that keeps freed blocks for reuse.
//
// A training step allocates the same sequence of tensor sizes every time.
// glibc's malloc serves them from its heap, where blocks freed in a
// different order than they were taken leave holes that stay resident, so
// peak RSS grows well past the bytes in use, more for QAT's many tensors
// than for FP32's (bench/results/perf.md: resnet20 peak RSS FP32 / QAT with
// range learning 311 / 442 MiB with malloc, 278 / 308 MiB with this
// allocator). Keeping freed blocks by exact size and handing them back to
// the next request of that size makes every step after the first reuse the
// first one's blocks: resident memory stays near the peak of bytes in use.
//
// Process-wide (LibTorch has one CPU allocator); the qat CLI and benches
// install it, library users opt in. Sanitizer builds do not install it:
// reused blocks would hide use-after-free from AddressSanitizer.
#pragma once

namespace qat {

// Makes the caching allocator LibTorch's CPU allocator from now on; the
// one in place before serves its fresh blocks. Idempotent. Returns false
// where it is not installed (sanitizer builds).
bool install_caching_cpu_allocator();

}  // namespace qat
