//===- BlockGemm.h - register-blocked products of attention blocks -*- C++
//-*-===//
//
// The products inside the blocked attention kernels (attention/Flash.cpp):
// scores Q Kᵀ, P V, and in the backward pass dO Vᵀ, Pᵀ dO, dS K and dSᵀ Q,
// each at most 64 x 64 x head size. One routine covers them all:
//
//   C[r][0:n] = alpha * sum_{c < k} A(r, c) * B[c][0:n]   (+ C when
//   accumulating)
//
// with A(r, c) = a[r * ars + c * acs] — so A may be read transposed — B's
// rows at b + c * ldb and C's at c + r * ldc. Register-blocked micro-kernels
// keep a tile of C in vector registers across the whole k loop (4 rows x 64
// columns in AVX-512 registers, 6 x 16 in AVX2 ones) and broadcast A's
// elements, so each loaded B vector feeds several fused multiply-adds.
// The baseline path (any x86-64) is plain loops, and the reference the SIMD
// paths are tested against (test/runtime/FastKernelsTest.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_BLOCKGEMM_H
#define KILN_RUNTIME_ATTENTION_BLOCKGEMM_H

#include <cstdint>
#include <vector>

namespace kiln::runtime::attention {

/// The instruction sets the micro-kernels are written for.
enum class Isa { Baseline, Avx2, Avx512 };

/// The best this CPU runs, capped by the environment variable KILN_MAX_ISA
/// (baseline, avx2, avx512) when set — how the tests run the portable
/// paths on a machine that has AVX-512. Fixed for the process.
Isa bestIsa();
/// Every ISA this CPU runs, baseline first (for tests).
std::vector<Isa> supportedIsas();
const char *isaName(Isa isa);

void blockGemm(Isa isa, int64_t m, int64_t n, int64_t k, float alpha,
               const float *a, int64_t ars, int64_t acs, const float *b,
               int64_t ldb, float *c, int64_t ldc, bool accumulate);

} // namespace kiln::runtime::attention

#endif
