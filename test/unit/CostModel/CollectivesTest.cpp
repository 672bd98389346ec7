//===- CollectivesTest.cpp - alpha-beta collective costs ------------------===//
//
// Expected values are written out as the closed forms of Collectives.cpp's
// sources (Thakur et al. 2005, nccl-tests PERFORMANCE.md, NCCL 2.4 trees), not
// recomputed through the code under test.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Collectives.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

using namespace loom::cost;

namespace {
constexpr double kKiB = 1024.0, kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kNvlinkBw = 450e9, kIbBw = 50e9; // bytes/s per GPU, one way
constexpr double kNvlinkAlpha = 1e-6, kIbAlpha = 5e-6;

constexpr Collective kOps[] = {Collective::AllReduce, Collective::ReduceScatter,
                               Collective::AllGather, Collective::AllToAll};
constexpr Algorithm kAlgorithms[] = {Algorithm::Auto, Algorithm::Ring,
                                     Algorithm::Tree, Algorithm::Hierarchical,
                                     Algorithm::Direct};

GroupLevel nvlink(int64_t k, double alpha = kNvlinkAlpha) {
  return {k, kNvlinkBw, alpha};
}
GroupLevel ib(int64_t k, double alpha = kIbAlpha) { return {k, kIbBw, alpha}; }

double seconds(Collective op, double bytes, const GroupShape &g,
               Algorithm a = Algorithm::Auto) {
  return collectiveTime(op, bytes, g, a).seconds;
}

void expectRelEq(double actual, double expected) {
  EXPECT_NEAR(actual, expected, 1e-12 * expected);
}
} // namespace

TEST(CollectivesLevel, ConvertsGbpsAndMicroseconds) {
  GroupLevel l = levelFor(8, 3600, 2.5, /*perNode=*/false, 8, 1);
  EXPECT_EQ(l.size, 8);
  EXPECT_DOUBLE_EQ(l.bandwidth, 450e9);
  EXPECT_DOUBLE_EQ(l.latency, 2.5e-6);
}

TEST(CollectivesLevel, PerNodeUplinkIsSplitAmongConcurrentGroups) {
  // 8 tp-ranks of a node each run their own dp all-reduce over the uplink.
  GroupLevel wan = levelFor(2, 400, 10000, /*perNode=*/true, 8, 8);
  EXPECT_DOUBLE_EQ(wan.bandwidth, 400.0 / 8 * 1e9 / 8);
  EXPECT_DOUBLE_EQ(wan.latency, 0.01);
  EXPECT_DOUBLE_EQ(levelFor(2, 400, 0, true, 8, 1).bandwidth, 50e9);
  EXPECT_DOUBLE_EQ(levelFor(2, 400, 0, true, 8, 0).bandwidth, 50e9);
}

TEST(CollectivesLevel, NicPerGpuIsSharedOnlyBeyondOneStreamPerGpu) {
  for (int64_t streams : {1, 4, 8})
    EXPECT_DOUBLE_EQ(levelFor(16, 400, 5, false, 8, streams).bandwidth, 50e9);
  EXPECT_DOUBLE_EQ(levelFor(16, 400, 5, false, 8, 16).bandwidth, 25e9);
}

TEST(CollectivesRing, AllReduceClosedForm) {
  GroupShape g{{nvlink(8, 3e-6)}};
  CommCost c = collectiveTime(Collective::AllReduce, kGiB, g, Algorithm::Ring);
  EXPECT_EQ(c.algorithm, Algorithm::Ring);
  expectRelEq(c.seconds, 2.0 * 7 / 8 * kGiB / 450e9 + 2 * 7 * 3e-6);
  expectRelEq(c.slowestLevelBytes, 2.0 * 7 / 8 * kGiB);
}

TEST(CollectivesRing, StepWaitsForTheSlowestHop) {
  GroupShape g{{nvlink(8), ib(2)}};
  double chunk = kGiB / 16;
  expectRelEq(seconds(Collective::AllGather, kGiB, g, Algorithm::Ring),
              15 * (chunk / kIbBw + kIbAlpha));
}

TEST(CollectivesRing, ReduceScatterPlusAllGatherIsAllReduce) {
  for (const GroupShape &g : {GroupShape{{nvlink(8)}},
                              GroupShape{{nvlink(8), ib(16)}}}) {
    for (Algorithm a : {Algorithm::Ring, Algorithm::Hierarchical}) {
      double rs = seconds(Collective::ReduceScatter, kGiB, g, a);
      double ag = seconds(Collective::AllGather, kGiB, g, a);
      expectRelEq(rs + ag, seconds(Collective::AllReduce, kGiB, g, a));
    }
  }
}

TEST(CollectivesRing, BusBandwidthIsTheLinkBandwidthWithoutLatency) {
  // nccl-tests: busbw = algbw * 2(n-1)/n (all-reduce), (n-1)/n (RS, AG).
  const double n = 8;
  GroupShape g{{nvlink(8, 0)}};
  expectRelEq(kGiB * 2 * (n - 1) / n /
                  seconds(Collective::AllReduce, kGiB, g, Algorithm::Ring),
              kNvlinkBw);
  for (Collective op : {Collective::ReduceScatter, Collective::AllGather})
    expectRelEq(kGiB * (n - 1) / n / seconds(op, kGiB, g, Algorithm::Ring),
                kNvlinkBw);
  // Across nodes the ring's bus bandwidth is that of the slowest level.
  GroupShape twoLevels{{nvlink(8, 0), ib(4, 0)}};
  expectRelEq(kGiB * 2 * 31 / 32 /
                  seconds(Collective::AllReduce, kGiB, twoLevels, Algorithm::Ring),
              kIbBw);
}

TEST(CollectivesTrivial, OneRankOrNoBytesCostsNothing) {
  GroupShape single{{nvlink(1), ib(1)}};
  GroupShape none;
  GroupShape wide{{nvlink(8), ib(16)}};
  for (Collective op : kOps) {
    for (Algorithm a : kAlgorithms) {
      EXPECT_EQ(seconds(op, kGiB, single, a), 0);
      EXPECT_EQ(seconds(op, kGiB, none, a), 0);
      EXPECT_EQ(seconds(op, 0, wide, a), 0);
      EXPECT_EQ(collectiveTime(op, 0, wide, a).slowestLevelBytes, 0);
    }
  }
}

TEST(CollectivesTrivial, SizeOneLevelsAreIgnored) {
  GroupShape padded{{nvlink(1), ib(16), GroupLevel{1, 1e6, 1.0}}};
  GroupShape bare{{ib(16)}};
  for (Collective op : kOps)
    for (Algorithm a : kAlgorithms)
      EXPECT_EQ(seconds(op, kGiB, padded, a), seconds(op, kGiB, bare, a));
}

TEST(CollectivesHierarchical, BeatsFlatRingAcrossNodes) {
  // 8 GPUs x 16 nodes, NVLink 450 GB/s and IB 50 GB/s per GPU, no latency.
  GroupShape g{{nvlink(8, 0), ib(16, 0)}};
  CommCost flat = collectiveTime(Collective::AllReduce, kGiB, g, Algorithm::Ring);
  CommCost hier =
      collectiveTime(Collective::AllReduce, kGiB, g, Algorithm::Hierarchical);

  // The flat ring moves all 2(n-1)/n S through one IB link per node.
  double flatExpected = 2.0 * 127 / 128 * kGiB / kIbBw;
  expectRelEq(flat.seconds, flatExpected);
  expectRelEq(flat.slowestLevelBytes / kIbBw, flat.seconds);

  // Reduce-scatter in the node, 8 parallel rings of S/8 across nodes, gather.
  double hierExpected =
      2 * (7.0 / 8 * kGiB / kNvlinkBw + 15.0 / 16 * (kGiB / 8) / kIbBw);
  expectRelEq(hier.seconds, hierExpected);
  expectRelEq(hier.slowestLevelBytes, 2.0 * 15 / 16 * kGiB / 8);

  double ratio = flat.seconds / hier.seconds;
  EXPECT_NEAR(ratio, flatExpected / hierExpected, 1e-9);
  EXPECT_GT(ratio, 4.5);
  EXPECT_EQ(collectiveTime(Collective::AllReduce, kGiB, g).algorithm,
            Algorithm::Hierarchical);
}

TEST(CollectivesHierarchical, OneLevelEqualsRingAndAutoPrefersRing) {
  GroupShape g{{nvlink(8)}};
  expectRelEq(seconds(Collective::AllReduce, kGiB, g, Algorithm::Hierarchical),
              seconds(Collective::AllReduce, kGiB, g, Algorithm::Ring));
  EXPECT_EQ(collectiveTime(Collective::AllReduce, kGiB, g).algorithm,
            Algorithm::Ring);
}

TEST(CollectivesTree, WinsForSmallMessagesOnManyRanks) {
  GroupShape g{{nvlink(8), ib(128)}}; // 1024 ranks
  double bytes = 4 * kKiB;
  CommCost tree = collectiveTime(Collective::AllReduce, bytes, g, Algorithm::Tree);
  // 2S/B_min + 2 (log2 8 alpha_nvlink + log2 128 alpha_ib).
  expectRelEq(tree.seconds,
              2 * bytes / kIbBw + 2 * (3 * kNvlinkAlpha + 7 * kIbAlpha));
  EXPECT_LT(tree.seconds,
            seconds(Collective::AllReduce, bytes, g, Algorithm::Ring));
  EXPECT_LT(tree.seconds,
            seconds(Collective::AllReduce, bytes, g, Algorithm::Hierarchical));
  CommCost best = collectiveTime(Collective::AllReduce, bytes, g);
  EXPECT_EQ(best.algorithm, Algorithm::Tree);
  EXPECT_EQ(best.seconds, tree.seconds);
}

TEST(CollectivesTree, RingWinsForLargeMessagesOnFewRanks) {
  GroupShape g{{nvlink(8)}};
  double ring = seconds(Collective::AllReduce, kGiB, g, Algorithm::Ring);
  double tree = seconds(Collective::AllReduce, kGiB, g, Algorithm::Tree);
  EXPECT_LT(ring, tree);
  CommCost best = collectiveTime(Collective::AllReduce, kGiB, g);
  EXPECT_EQ(best.algorithm, Algorithm::Ring);
  EXPECT_EQ(best.seconds, ring);
}

TEST(CollectivesFallback, MissingAlgorithmFallsBackToTheFlatOne) {
  GroupShape g{{nvlink(8), ib(4)}};
  CommCost gather = collectiveTime(Collective::AllGather, kGiB, g, Algorithm::Tree);
  EXPECT_EQ(gather.algorithm, Algorithm::Ring);
  EXPECT_EQ(gather.seconds, seconds(Collective::AllGather, kGiB, g, Algorithm::Ring));
  for (Algorithm a : {Algorithm::Ring, Algorithm::Tree})
    EXPECT_EQ(collectiveTime(Collective::AllToAll, kGiB, g, a).algorithm,
              Algorithm::Direct);
  EXPECT_EQ(collectiveTime(Collective::AllReduce, kGiB, g, Algorithm::Direct)
                .algorithm,
            Algorithm::Ring);
}

TEST(CollectivesWan, DataParallelAcrossTwoDatacentersIsWanBound) {
  // dp over 2 nodes x 2 DCs; tp = 8 inside each node, so 8 dp groups leave
  // every node at once. IB: 400 Gb/s NIC per GPU; WAN: 400 Gb/s per node.
  auto groupWithWanLatencyUs = [](double us) {
    return GroupShape{{levelFor(2, 400, 5, /*perNode=*/false, 8, 8),
                       levelFor(2, 400, us, /*perNode=*/true, 8, 8)}};
  };
  const double wanBw = 400.0 / 8 * 1e9 / 8, wanAlpha = 10e-3;
  GroupShape g = groupWithWanLatencyUs(10000);
  CommCost c = collectiveTime(Collective::AllReduce, kGiB, g);
  EXPECT_EQ(c.algorithm, Algorithm::Hierarchical);

  double ibTerm = 2 * (1.0 / 2 * kGiB / 50e9 + kIbAlpha);
  double wanTerm = 2 * (1.0 / 2 * (kGiB / 2) / wanBw + wanAlpha);
  expectRelEq(c.seconds, ibTerm + wanTerm);
  EXPECT_GT(wanTerm, 0.75 * c.seconds);
  expectRelEq(c.slowestLevelBytes, kGiB / 2);

  // Two WAN messages (reduce-scatter and all-gather of a 2-rank ring).
  double noLatency =
      collectiveTime(Collective::AllReduce, kGiB, groupWithWanLatencyUs(0)).seconds;
  EXPECT_NEAR(c.seconds - noLatency, 2 * wanAlpha, 1e-12);
}

TEST(CollectivesAllToAll, TwoNodesOfEightSendHalfOverIb) {
  GroupShape g{{nvlink(8), ib(2)}};
  CommCost c = collectiveTime(Collective::AllToAll, kGiB, g, Algorithm::Direct);
  // 15 of 16 shares leave the GPU, the 8 for the other node leave the node.
  double nvlinkTerm = 15.0 / 16 * kGiB / kNvlinkBw + 15 * kNvlinkAlpha;
  double ibTerm = 8.0 / 16 * kGiB / kIbBw + 8 * kIbAlpha;
  expectRelEq(c.seconds, std::max(nvlinkTerm, ibTerm));
  expectRelEq(c.slowestLevelBytes, kGiB / 2);
  EXPECT_EQ(collectiveTime(Collective::AllToAll, kGiB, g).algorithm,
            Algorithm::Direct);
}

TEST(CollectivesAllToAll, HierarchicalWinsForSmallMessagesOnManyNodes) {
  GroupShape g{{nvlink(8), ib(128)}};
  double bytes = 4 * kKiB;
  CommCost c = collectiveTime(Collective::AllToAll, bytes, g);
  EXPECT_EQ(c.algorithm, Algorithm::Hierarchical);
  // 7 NVLink messages, then 127 IB messages of 8 shares each instead of 1016.
  expectRelEq(c.seconds, 7.0 / 8 * bytes / kNvlinkBw + 7 * kNvlinkAlpha +
                             127.0 / 128 * bytes / kIbBw + 127 * kIbAlpha);
  EXPECT_LT(c.seconds, seconds(Collective::AllToAll, bytes, g, Algorithm::Direct));
}

namespace {
// Three levels with a slow WAN, as the planner sees a multi-DC dp group.
GroupShape threeLevels(int64_t dcs) {
  return GroupShape{{nvlink(8), ib(4), levelFor(dcs, 400, 10000, true, 8, 8)}};
}
} // namespace

TEST(CollectivesSweep, TimeGrowsWithBytes) {
  for (const GroupShape &g :
       {GroupShape{{nvlink(8)}}, GroupShape{{nvlink(8), ib(16)}}, threeLevels(2)}) {
    for (Collective op : kOps) {
      for (Algorithm a : kAlgorithms) {
        double prev = 0;
        for (double bytes = 1; bytes <= 16 * kGiB; bytes *= 2) {
          double t = seconds(op, bytes, g, a);
          EXPECT_GE(t, prev) << int(op) << " " << int(a) << " " << bytes;
          prev = t;
        }
      }
    }
  }
}

// Growing an inner level may rightly make a hierarchical collective faster:
// more ranks per node bring more NICs to the outer phases. Only growing a flat
// group or the outermost level must never help.
TEST(CollectivesSweep, TimeGrowsWithGroupSize) {
  auto sweep = [](auto makeGroup, int64_t maxSize) {
    for (Collective op : kOps) {
      for (Algorithm a : kAlgorithms) {
        double prev = 0;
        for (int64_t k = 1; k <= maxSize; ++k) {
          double t = seconds(op, 256 * kKiB, makeGroup(k), a);
          EXPECT_GE(t, prev) << int(op) << " " << int(a) << " " << k;
          prev = t;
        }
      }
    }
  };
  sweep([](int64_t k) { return GroupShape{{ib(k)}}; }, 1024);
  sweep([](int64_t k) { return GroupShape{{nvlink(8), ib(k)}}; }, 128);
  sweep(threeLevels, 16);
}

TEST(CollectivesPerf, ManyCallsOnThreeLevels) {
  GroupShape g = threeLevels(2);
  constexpr int kCalls = 1000000;
  double sink = 0;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i)
    sink += collectiveTime(kOps[i % 4], 1e6 + i, g).seconds;
  std::chrono::duration<double, std::nano> took =
      std::chrono::steady_clock::now() - start;
  std::printf("collectiveTime, 3 levels, Auto: %.1f ns/call\n",
              took.count() / kCalls);
  EXPECT_GT(sink, 0);
}

TEST(CollectivesP2p, LatencyPlusBytesOverBandwidth) {
  GroupLevel link = ib(2);
  expectRelEq(p2pTime(kGiB, link), kIbAlpha + kGiB / kIbBw);
  EXPECT_EQ(p2pTime(0, link), 0);
}
