//===- CommunicatorTest.cpp - kiln's collectives under mpirun ------------===//
//
// Run by ctest as `mpirun --oversubscribe -np N kiln-mpi-tests` for N = 2
// and 3 (and alone, as one rank). Every rank computes what each collective
// must give from the values every rank contributes (a function of rank and
// index), so the checks need no communication of their own: reductions
// must equal, bit for bit, the floats added in rank order.
//
//===----------------------------------------------------------------------===//
#include "runtime/Communicator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

using namespace kiln;
using namespace kiln::runtime;

namespace {

std::shared_ptr<Communicator> world() {
  std::shared_ptr<Communicator> c;
  Status s = openMpi(c);
  EXPECT_TRUE(s) << s.message();
  return c;
}

/// Rank r's value at j: magnitudes far apart, so that adding in another
/// order would round differently.
float value(int r, size_t j) {
  float big = (j % 3 == 0) ? 1e8f : 1.0f;
  return big * static_cast<float>((r + 1) * ((j * 2654435761u) % 97)) / 97.0f +
         0.1f * static_cast<float>(r) - static_cast<float>(j % 5) * 3e-3f;
}

float orderedSum(int ranks, size_t j) {
  float s = value(0, j);
  for (int r = 1; r < ranks; ++r)
    s += value(r, j);
  return s;
}

std::vector<float> mine(const Communicator &c, size_t n) {
  std::vector<float> v(n);
  for (size_t j = 0; j < n; ++j)
    v[j] = value(c.rank(), j);
  return v;
}

TEST(Mpi, TheLauncherIsNoticedAndTheWorldDescribed) {
  auto c = world();
  ASSERT_TRUE(c);
  EXPECT_TRUE(launchedByMpi() || c->size() == 1);
  EXPECT_NE(c->describe().find("rank " + std::to_string(c->rank()) + " of " +
                               std::to_string(c->size())),
            std::string::npos)
      << c->describe();
  EXPECT_EQ(c->describe().rfind("MPI: ", 0), 0u) << c->describe();
  // The ranks on this machine, as the launcher counts them.
  EXPECT_GE(c->localSize(), 1);
  EXPECT_LE(c->localSize(), c->size());
  if (const char *local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    EXPECT_EQ(c->localSize(), std::atoi(local));
  }
  ASSERT_TRUE(c->barrier());
}

TEST(Mpi, AllReduceIsTheRankOrderedSumOnEveryRank) {
  auto c = world();
  for (size_t n :
       {size_t(0), size_t(1), size_t(2), size_t(7), size_t(100003)}) {
    std::vector<float> v = mine(*c, n);
    Status s = c->allReduceSum(v.data(), n);
    ASSERT_TRUE(s) << s.message();
    for (size_t j = 0; j < n; ++j) {
      float want = orderedSum(c->size(), j);
      ASSERT_EQ(std::memcmp(&v[j], &want, sizeof want), 0)
          << "n=" << n << ", element " << j << ": " << v[j] << " vs " << want;
    }
  }
}

TEST(Mpi, AllReducesInFlightTogether) {
  // Buckets as the backward pass starts them: several in flight, pushed
  // along now and then, waited for in order.
  auto c = world();
  std::vector<std::vector<float>> buckets;
  for (size_t n : {size_t(5), size_t(4096), size_t(1), size_t(33333)})
    buckets.push_back(mine(*c, n));
  std::vector<std::unique_ptr<PendingReduce>> pending(buckets.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    Status s =
        c->startAllReduceSum(buckets[b].data(), buckets[b].size(), pending[b]);
    ASSERT_TRUE(s) << s.message();
    for (size_t p = 0; p <= b; ++p)
      ASSERT_TRUE(pending[p]->progress());
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    Status s = pending[b]->wait();
    ASSERT_TRUE(s) << s.message();
    ASSERT_TRUE(pending[b]->wait()); // a second wait is harmless
    for (size_t j = 0; j < buckets[b].size(); ++j)
      ASSERT_EQ(buckets[b][j], orderedSum(c->size(), j))
          << "bucket " << b << ", element " << j;
  }
}

TEST(Mpi, ReduceScatterAndAllGatherOverUnevenShards) {
  auto c = world();
  const size_t n = 1001; // not a multiple of 2 or 3
  std::vector<Shards> layouts = {Shards::even(n, c->size())};
  // A hand-made layout: half on rank 0, none on rank 1, the rest after.
  Shards odd;
  size_t at = 0;
  for (int r = 0; r < c->size(); ++r) {
    size_t count = r == c->size() - 1 ? n - at
                   : r == 0           ? n / 2
                   : r == 1           ? 0
                                      : (n - at) / 2;
    odd.counts.push_back(count);
    odd.offsets.push_back(at);
    at += count;
  }
  layouts.push_back(odd);
  for (const Shards &shards : layouts) {
    ASSERT_EQ(shards.total(), n);
    size_t me = static_cast<size_t>(c->rank());
    std::vector<float> in = mine(*c, n), out(shards.counts[me] + 1, -7.0f);
    Status s = c->reduceScatterSum(in.data(), out.data(), shards);
    ASSERT_TRUE(s) << s.message();
    for (size_t j = 0; j < shards.counts[me]; ++j)
      ASSERT_EQ(out[j], orderedSum(c->size(), shards.offsets[me] + j)) << j;
    EXPECT_EQ(out.back(), -7.0f) << "wrote past its shard";
    // Gather the summed shards back, from a separate buffer and in place.
    std::vector<float> all(n, -1.0f);
    s = c->allGather(out.data(), all.data(), shards);
    ASSERT_TRUE(s) << s.message();
    std::vector<float> inPlace(n, -1.0f);
    std::copy(out.begin(), out.begin() + shards.counts[me],
              inPlace.begin() + shards.offsets[me]);
    s = c->allGather(inPlace.data() + shards.offsets[me], inPlace.data(),
                     shards);
    ASSERT_TRUE(s) << s.message();
    for (size_t j = 0; j < n; ++j) {
      ASSERT_EQ(all[j], orderedSum(c->size(), j)) << j;
      ASSERT_EQ(inPlace[j], all[j]) << j;
    }
  }
}

TEST(Mpi, ReduceScatterAccumulatesAfterTheOwnersRunningSum) {
  // ZeRO-2's gradients: the owner's running sum comes first, then the
  // ranks' values in rank order; several reductions in flight at once.
  auto c = world();
  const size_t n = 777;
  Shards shards = Shards::even(n, c->size());
  size_t me = static_cast<size_t>(c->rank());
  std::vector<float> in = mine(*c, n), twice = in;
  std::vector<float> acc(shards.counts[me]);
  for (size_t j = 0; j < acc.size(); ++j)
    acc[j] = 0.37f * static_cast<float>(shards.offsets[me] + j) - 1e7f;
  std::vector<float> start = acc;
  std::unique_ptr<PendingReduce> first, second;
  ASSERT_TRUE(
      c->startReduceScatterSum(in.data(), acc.data(), shards, true, first));
  ASSERT_TRUE(first->wait());
  ASSERT_TRUE(
      c->startReduceScatterSum(twice.data(), acc.data(), shards, true, second));
  ASSERT_TRUE(second->progress());
  ASSERT_TRUE(second->wait());
  for (size_t j = 0; j < acc.size(); ++j) {
    size_t at = shards.offsets[me] + j;
    float expect = start[j];
    for (int pass = 0; pass < 2; ++pass)
      for (int r = 0; r < c->size(); ++r)
        expect += value(r, at);
    ASSERT_EQ(acc[j], expect) << j;
  }
}

TEST(Mpi, GatherOntoOneRoot) {
  auto c = world();
  const size_t n = 501;
  Shards shards = Shards::even(n, c->size());
  size_t me = static_cast<size_t>(c->rank());
  std::vector<float> part(shards.counts[me]);
  for (size_t j = 0; j < part.size(); ++j)
    part[j] = value(c->rank(), shards.offsets[me] + j);
  for (int root = 0; root < c->size(); ++root) {
    std::vector<float> all(n, -1.0f);
    Status s = c->gather(part.data(), c->rank() == root ? all.data() : nullptr,
                         shards, root);
    ASSERT_TRUE(s) << s.message();
    if (c->rank() != root)
      continue;
    for (int r = 0; r < c->size(); ++r)
      for (size_t j = 0; j < shards.counts[static_cast<size_t>(r)]; ++j) {
        size_t at = shards.offsets[static_cast<size_t>(r)] + j;
        ASSERT_EQ(all[at], value(r, at)) << at;
      }
  }
  int bad = c->size();
  Status s = c->gather(part.data(), nullptr, shards, bad);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("gather to rank"), std::string::npos);
}

TEST(Mpi, BroadcastFromEveryRootAndGatherBytes) {
  auto c = world();
  for (int root = 0; root < c->size(); ++root) {
    std::vector<int64_t> v(1000, c->rank() == root ? 0 : -1);
    if (c->rank() == root)
      std::iota(v.begin(), v.end(), int64_t(root) * 1000);
    Status s = c->broadcast(v.data(), v.size() * sizeof(int64_t), root);
    ASSERT_TRUE(s) << s.message();
    for (size_t j = 0; j < v.size(); ++j)
      ASSERT_EQ(v[j], int64_t(root) * 1000 + int64_t(j));
  }
  double loss = 0.5 + c->rank();
  std::vector<double> losses(static_cast<size_t>(c->size()));
  ASSERT_TRUE(c->allGatherBytes(&loss, losses.data(), sizeof loss));
  for (int r = 0; r < c->size(); ++r)
    EXPECT_EQ(losses[static_cast<size_t>(r)], 0.5 + r);
}

TEST(Mpi, BadArgumentsAreRefusedOnEveryRank) {
  auto c = world();
  int x = 0;
  Status s = c->broadcast(&x, sizeof x, c->size());
  ASSERT_FALSE(s);
  EXPECT_NE(
      s.message().find("broadcast from rank " + std::to_string(c->size())),
      std::string::npos)
      << s.message();
  Shards wrong = Shards::even(10, c->size() + 1);
  float in[10] = {}, out[10] = {};
  s = c->reduceScatterSum(in, out, wrong);
  ASSERT_FALSE(s);
  EXPECT_NE(
      s.message().find("shards for " + std::to_string(c->size()) + " ranks"),
      std::string::npos)
      << s.message();
  ASSERT_TRUE(c->barrier()); // still usable
}

} // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::shared_ptr<Communicator> c;
  Status s = openMpi(c);
  if (!s) {
    std::fprintf(stderr, "kiln-mpi-tests: %s\n", s.message().c_str());
    return 1;
  }
  // One report: rank 0's (the others still fail the run when they fail).
  if (c->rank() != 0) {
    auto &listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();
}
