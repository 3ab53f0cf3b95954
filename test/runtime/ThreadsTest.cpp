//===- ThreadsTest.cpp - kiln's thread count is its own -------------------===//
//
// Another library on the same thread may change OpenMP's count (importing
// PyTorch does); a model without its own count still runs with kiln's
// default, and the caller's OpenMP setting is restored after the call.
//
//===----------------------------------------------------------------------===//
#include "runtime/Model.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstdlib>

using namespace kiln::runtime;

TEST(Threads, KilnsDefaultIgnoresAnotherLibrarysSetting) {
  int before = omp_get_max_threads();
  omp_set_num_threads(1); // what another library might do
  {
    ThreadScope scope(0);
    EXPECT_EQ(omp_get_max_threads(), numThreads());
    EXPECT_GE(numThreads(), 1);
  }
  EXPECT_EQ(omp_get_max_threads(), 1); // the caller's setting is back
  {
    ThreadScope scope(3);
    EXPECT_EQ(omp_get_max_threads(), 3);
  }
  setNumThreads(2);
  EXPECT_EQ(numThreads(), 2);
  {
    ThreadScope scope(0);
    EXPECT_EQ(omp_get_max_threads(), 2);
  }
  setNumThreads(0); // back to the default: every core unless the
                    // environment says otherwise
  if (!std::getenv("OMP_NUM_THREADS")) {
    EXPECT_EQ(numThreads(), omp_get_num_procs());
  }
  omp_set_num_threads(before);
}
