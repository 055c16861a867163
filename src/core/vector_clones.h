// Internal: building hot float loops for more than one x86 vector ISA.
//
// The project compiles for baseline x86-64 (SSE2). A function marked
// QAT_VECTOR_CLONES is compiled once more for AVX2, and the dynamic loader
// picks the version the CPU supports (GCC/Clang target_clones, an ifunc).
// Loop templates it calls must be QAT_ALWAYS_INLINE, or they stay compiled
// for the baseline. AVX2 does not enable FMA, so elementwise results are
// the same in every clone; SIMD reductions may group lanes differently.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define QAT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QAT_VECTOR_CLONES
#endif

#if defined(__GNUC__)
#define QAT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define QAT_ALWAYS_INLINE inline
#endif
