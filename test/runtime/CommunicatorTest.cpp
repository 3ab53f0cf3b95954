//===- CommunicatorTest.cpp - shards and the one-rank communicator -------===//
#include "runtime/Communicator.h"

#include <gtest/gtest.h>

using namespace kiln;
using namespace kiln::runtime;

TEST(Communicator, EvenShardsCoverEveryElementOnce) {
  for (size_t n : {0, 1, 2, 7, 1001})
    for (int ranks : {1, 2, 3, 8}) {
      Shards s = Shards::even(n, ranks);
      ASSERT_EQ(s.counts.size(), static_cast<size_t>(ranks));
      EXPECT_EQ(s.total(), n);
      size_t at = 0, lo = n, hi = 0;
      for (size_t r = 0; r < s.counts.size(); ++r) {
        EXPECT_EQ(s.offsets[r], at) << "n=" << n << " rank " << r;
        at += s.counts[r];
        lo = std::min(lo, s.counts[r]);
        hi = std::max(hi, s.counts[r]);
      }
      EXPECT_LE(hi - std::min(lo, hi), 1u) << "balanced, n=" << n;
    }
}

TEST(Communicator, OneRankIsItsOwnResult) {
  auto c = localCommunicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->localSize(), 1);
  EXPECT_EQ(c->describe(), "one process");
  std::vector<float> v = {1.5f, -2.0f, 3.25f}, out(3);
  ASSERT_TRUE(c->allReduceSum(v.data(), v.size()));
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::unique_ptr<PendingReduce> p;
  ASSERT_TRUE(c->startAllReduceSum(v.data(), v.size(), p));
  ASSERT_TRUE(p->progress());
  ASSERT_TRUE(p->wait());
  Shards s = Shards::even(3, 1);
  ASSERT_TRUE(c->reduceScatterSum(v.data(), out.data(), s));
  EXPECT_EQ(out, v);
  ASSERT_TRUE(c->reduceScatterSum(v.data(), out.data(), s, true));
  EXPECT_EQ(out, (std::vector<float>{3.0f, -4.0f, 6.5f})) << "accumulated";
  std::fill(out.begin(), out.end(), 0.0f);
  ASSERT_TRUE(c->allGather(v.data(), out.data(), s));
  EXPECT_EQ(out, v);
  std::fill(out.begin(), out.end(), 0.0f);
  ASSERT_TRUE(c->gather(v.data(), out.data(), s, 0));
  EXPECT_EQ(out, v);
  EXPECT_FALSE(c->gather(v.data(), out.data(), s, 1));
  int x = 4;
  ASSERT_TRUE(c->broadcast(&x, sizeof x, 0));
  Status bad = c->broadcast(&x, sizeof x, 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.message(), "broadcast from rank 1 of 1");
  ASSERT_TRUE(c->barrier());
}
