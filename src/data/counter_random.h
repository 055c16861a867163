// Random numbers for the loader that are pure functions of a key. A stream
// is named by a key such as (seed, purpose, epoch, sample) and yields
// SplitMix64's sequence from the key's hash, so a draw never depends on
// thread count, batch size or what was drawn before for other keys.
// std::mt19937 would give fixed words, but the standard distributions are
// implementation-defined; `below` is fixed here.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace qat::data {

// Key parts naming what a stream is for, so that streams never coincide.
enum : uint64_t { kShuffleStream = 1, kAugmentStream = 2 };

class CounterRandom {
 public:
  explicit CounterRandom(std::initializer_list<uint64_t> key) {
    for (uint64_t part : key) state_ = mix(state_ ^ part);
  }

  uint64_t next() {
    state_ += kGolden;
    return mix(state_);
  }

  // Uniform in [0, bound) for bound > 0: rejects the 2^64 mod bound lowest
  // words, which would otherwise favour small results.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t word = next();
      if (word >= threshold) return word % bound;
    }
  }

 private:
  static constexpr uint64_t kGolden = 0x9e3779b97f4a7c15;

  // SplitMix64's output function, a bijective 64-bit mixer.
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }

  uint64_t state_ = kGolden;
};

}  // namespace qat::data
