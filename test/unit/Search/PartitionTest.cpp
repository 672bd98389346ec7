//===- PartitionTest.cpp - layer->stage partitioning, DP and Z3 -----------===//
//
// The DP is checked against enumeration of every contiguous split, Z3 against the
// DP (homogeneous) and against the DP run on every device order (heterogeneous).
// The reference oracles sum layers directly instead of using StageCosts, so a
// prefix-sum bug cannot hide in both sides.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Partition.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

using namespace loom::search;

namespace {
constexpr double kGiB = double(int64_t(1) << 30);
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<int64_t> oneF1B(int64_t stages) {
  std::vector<int64_t> inflight;
  for (int64_t p = 0; p < stages; ++p)
    inflight.push_back(stages - p);
  return inflight;
}

/// Slowest stage of the best contiguous split with devices in the given order,
/// by enumerating every split; +inf if none fits in memory.
double bruteForce(const PartitionProblem &p) {
  int64_t layers = int64_t(p.layerSeconds.size()), stages = int64_t(p.devices.size());
  double best = kInf;
  std::function<void(int64_t, int64_t, double)> place = [&](int64_t s, int64_t first,
                                                            double worst) {
    if (s == stages) {
      if (first == layers)
        best = std::min(best, worst);
      return;
    }
    for (int64_t end = first + 1; end <= layers - (stages - 1 - s); ++end) {
      double seconds = 0, bytes = 0;
      for (int64_t l = first; l < end; ++l) {
        seconds += p.layerSeconds[l];
        bytes += p.layerStaticBytes[l] + p.layerActivationBytes[l] * p.inflight[s];
      }
      if (bytes > p.devices[s].memoryBytes)
        continue;
      double t = seconds / p.devices[s].speed + p.stageOverheadSeconds;
      place(s + 1, end, std::max(worst, t));
    }
  };
  place(0, 0, 0);
  return best;
}

/// The DP's optimum over every order of the devices.
double dpOverEveryOrder(const PartitionProblem &p) {
  std::vector<int64_t> order(p.devices.size());
  std::iota(order.begin(), order.end(), 0);
  double best = kInf;
  do {
    PartitionProblem q = p;
    for (size_t s = 0; s < order.size(); ++s)
      q.devices[s] = p.devices[order[s]];
    Partition r = partitionByDynamicProgramming(q);
    if (r.feasible)
      best = std::min(best, r.maxStageSeconds);
  } while (std::next_permutation(order.begin(), order.end()));
  return best;
}

/// Random instance; memory caps are drawn so that roughly a third do not fit.
PartitionProblem randomProblem(std::mt19937 &rng, int64_t maxLayers, int64_t maxStages,
                               const std::vector<PartitionDevice> &kinds) {
  std::uniform_int_distribution<int64_t> layerCount(1, maxLayers);
  std::uniform_real_distribution<double> seconds(0.1, 2.0), gib(0.5, 4.0);
  PartitionProblem p;
  int64_t layers = layerCount(rng);
  int64_t stages = std::uniform_int_distribution<int64_t>(
      1, std::min(layers, maxStages))(rng);
  for (int64_t l = 0; l < layers; ++l) {
    p.layerSeconds.push_back(seconds(rng));
    p.layerStaticBytes.push_back(gib(rng) * kGiB);
    p.layerActivationBytes.push_back(gib(rng) * kGiB / 4);
  }
  double total = std::accumulate(p.layerStaticBytes.begin(), p.layerStaticBytes.end(), 0.0);
  std::uniform_int_distribution<size_t> kind(0, kinds.size() - 1);
  std::uniform_real_distribution<double> slack(0.8, 2.5);
  for (int64_t s = 0; s < stages; ++s) {
    p.devices.push_back(kinds[kind(rng)]);
    p.devices.back().memoryBytes *= slack(rng) * total / double(stages);
  }
  p.inflight = oneF1B(stages);
  p.stageOverheadSeconds = 0.01;
  return p;
}

/// Independent re-pricing of a solver's answer: it must describe a real
/// partition with the slowest stage it claims.
void expectConsistent(const PartitionProblem &p, const Partition &r) {
  ASSERT_TRUE(r.feasible) << r.error;
  int64_t layers = int64_t(p.layerSeconds.size()), stages = int64_t(p.devices.size());
  ASSERT_EQ(int64_t(r.firstLayer.size()), stages);
  double worst = 0;
  for (int64_t s = 0; s < stages; ++s) {
    int64_t end = s + 1 < stages ? r.firstLayer[s + 1] : layers;
    ASSERT_LT(r.firstLayer[s], end);
    double seconds = 0;
    for (int64_t l = r.firstLayer[s]; l < end; ++l)
      seconds += p.layerSeconds[l];
    worst = std::max(worst, seconds / p.devices[r.deviceOf[s]].speed +
                                p.stageOverheadSeconds);
  }
  EXPECT_NEAR(worst, r.maxStageSeconds, 1e-9 * worst);
}

/// 10 GiB of state + 10 GiB per micro-batch per layer, 1 s each, on a 40 GiB and
/// an 80 GiB device. Given order, the 40 GiB device at position 0 (2 in flight)
/// fits one layer, so the 80 GiB one takes three: 3 s. Swapped, two each: 2 s.
PartitionProblem memoryDecidesOrder() {
  PartitionProblem p;
  p.layerSeconds.assign(4, 1);
  p.layerStaticBytes.assign(4, 10 * kGiB);
  p.layerActivationBytes.assign(4, 10 * kGiB);
  p.devices = {{"a100-40g", 1, 40 * kGiB}, {"a100-80g", 1, 80 * kGiB}};
  p.inflight = oneF1B(2);
  return p;
}

double bf16Tflops(const std::string &gpu) {
  YAML::Node catalog = YAML::LoadFile(LOOM_GPU_CATALOG);
  for (const YAML::Node &g : catalog["gpus"])
    if (g["name"].as<std::string>() == gpu)
      return g["bf16_tflops"].as<double>();
  ADD_FAILURE() << gpu << " is not in " << LOOM_GPU_CATALOG;
  return 0;
}

int64_t layerCount(const Partition &r, int64_t layers, size_t s) {
  return (s + 1 < r.firstLayer.size() ? r.firstLayer[s + 1] : layers) - r.firstLayer[s];
}
} // namespace

TEST(Partition, DynamicProgrammingMatchesEnumeration) {
  std::mt19937 rng(5);
  std::vector<PartitionDevice> kinds = {{"a100", 1, 1}, {"h100", 3.17, 1}, {"l40", 0.6, 0.5}};
  int feasible = 0, infeasible = 0;
  for (int trial = 0; trial < 400; ++trial) {
    PartitionProblem p = randomProblem(rng, 10, 5, kinds);
    double expected = bruteForce(p);
    Partition r = partitionByDynamicProgramming(p);
    SCOPED_TRACE("trial " + std::to_string(trial));
    EXPECT_TRUE(r.proven);
    if (expected == kInf) {
      ++infeasible;
      EXPECT_FALSE(r.feasible);
      EXPECT_NE(r.error.find("GiB over"), std::string::npos) << r.error;
      continue;
    }
    ++feasible;
    expectConsistent(p, r);
    EXPECT_NEAR(r.maxStageSeconds, expected, 1e-9 * expected);
  }
  // Both outcomes must actually have been exercised.
  EXPECT_GT(feasible, 100);
  EXPECT_GT(infeasible, 30);
}

TEST(Partition, Z3MatchesDynamicProgrammingOnHomogeneousClusters) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    PartitionProblem p = randomProblem(rng, 12, 5, {{"h100", 1, 1}});
    for (PartitionDevice &d : p.devices)
      d.memoryBytes = p.devices[0].memoryBytes; // identical devices: one class
    SCOPED_TRACE("trial " + std::to_string(trial));
    Partition dp = partitionByDynamicProgramming(p);
    Partition z3 = partitionByZ3(p);
    EXPECT_TRUE(z3.proven) << z3.error;
    ASSERT_EQ(z3.feasible, dp.feasible) << z3.error << " | " << dp.error;
    if (!dp.feasible)
      continue;
    expectConsistent(p, z3);
    // Same StageCosts arithmetic on both sides: equal to the last bit.
    EXPECT_EQ(z3.maxStageSeconds, dp.maxStageSeconds);
  }
}

TEST(Partition, Z3MatchesDynamicProgrammingOverEveryDeviceOrder) {
  std::mt19937 rng(11);
  std::vector<PartitionDevice> kinds = {{"a100-40g", 1, 0.5}, {"a100-80g", 1, 1},
                                        {"h100", 3.17, 1}};
  int feasible = 0, orderMattered = 0;
  for (int trial = 0; trial < 120; ++trial) {
    PartitionProblem p = randomProblem(rng, 8, 4, kinds);
    SCOPED_TRACE("trial " + std::to_string(trial));
    double expected = dpOverEveryOrder(p);
    Partition z3 = partitionByZ3(p);
    EXPECT_TRUE(z3.proven) << z3.error;
    if (expected == kInf) {
      EXPECT_FALSE(z3.feasible);
      EXPECT_NE(z3.error.find("no order of the devices fits"), std::string::npos)
          << z3.error;
      continue;
    }
    ++feasible;
    expectConsistent(p, z3);
    EXPECT_EQ(z3.maxStageSeconds, expected);
    Partition inOrder = partitionByDynamicProgramming(p);
    orderMattered += !inOrder.feasible || inOrder.maxStageSeconds > expected;
  }
  std::printf("%d of 120 feasible, the given order was not optimal in %d\n", feasible,
              orderMattered);
  EXPECT_GT(feasible, 30);
  EXPECT_GT(orderMattered, 10); // else this test would not exercise placement
}

TEST(Partition, HeterogeneousStagesAreSizedToDeviceSpeed) {
  // Reference device A100 (speed 1); H100 at the ratio of dense bf16 peaks.
  double ratio = bf16Tflops("h100-sxm") / bf16Tflops("a100-80g");
  ASSERT_NEAR(ratio, 989.0 / 312, 1e-9);
  // Llama-like: 32 equal blocks between a heavier embedding and a heavier head.
  PartitionProblem p;
  p.layerSeconds.push_back(0.020);
  p.layerSeconds.insert(p.layerSeconds.end(), 32, 0.010);
  p.layerSeconds.push_back(0.030);
  // The pool is listed slow devices first: Z3 must find its own order.
  p.devices = {{"a100", 1, 80 * kGiB}, {"a100", 1, 80 * kGiB},
               {"h100", ratio, 80 * kGiB}, {"h100", ratio, 80 * kGiB}};
  p.inflight = oneF1B(4);
  int64_t layers = int64_t(p.layerSeconds.size());

  Partition best = partitionByZ3(p);
  ASSERT_TRUE(best.feasible) << best.error;
  EXPECT_TRUE(best.proven);
  expectConsistent(p, best);

  // A perfectly fluid split cannot be beaten, and a greedy fill to that level
  // overshoots by at most one layer on the slowest device.
  double total = std::accumulate(p.layerSeconds.begin(), p.layerSeconds.end(), 0.0);
  double fluid = total / (2 + 2 * ratio), maxLayer = 0.030;
  EXPECT_GE(best.maxStageSeconds, fluid - 1e-12);
  EXPECT_LE(best.maxStageSeconds, fluid + maxLayer);

  // Work tracks speed: the H100 stages carry about `ratio` times the A100 stages'
  // reference seconds. Not exactly: blocks are a fifth of a stage, and the min-max
  // optimum leaves non-pacing stages free to hold a block less. In layer counts the
  // H100s hold even more, because an A100 takes the 3-block head.
  double a100Work = 0, h100Work = 0;
  int64_t a100Layers = 0, h100Layers = 0;
  for (size_t s = 0; s < 4; ++s) {
    bool h100 = p.devices[best.deviceOf[s]].name == "h100";
    (h100 ? h100Work : a100Work) += (best.stageSeconds[s] - p.stageOverheadSeconds) *
                                    p.devices[best.deviceOf[s]].speed;
    (h100 ? h100Layers : a100Layers) += layerCount(best, layers, s);
  }
  EXPECT_GT(h100Work / a100Work, ratio * 0.75);
  EXPECT_LT(h100Work / a100Work, ratio * 1.25);
  EXPECT_GE(double(h100Layers) / double(a100Layers), ratio * 0.75);

  // Megatron's default, equal layer counts (9, 9, 8, 8) in the given order, is paced
  // by an A100 stage holding the embedding and 8 blocks.
  Partition even = evaluatePartition(p, {0, 9, 18, 26}, {0, 1, 2, 3});
  ASSERT_TRUE(even.feasible) << even.error;
  EXPECT_DOUBLE_EQ(even.maxStageSeconds, 0.020 + 8 * 0.010);
  double margin = even.maxStageSeconds / (fluid + maxLayer);
  EXPECT_LE(best.maxStageSeconds * margin, even.maxStageSeconds);
  std::printf("A100+H100 (ratio %.3f): even split %.1f ms, sized %.1f ms (%.2fx)\n",
              ratio, even.maxStageSeconds * 1e3, best.maxStageSeconds * 1e3,
              even.maxStageSeconds / best.maxStageSeconds);
}

TEST(Partition, HeavyEmbeddingAndHeadStagesGetFewerBlocks) {
  PartitionProblem p;
  p.layerSeconds.push_back(3); // embedding
  p.layerSeconds.insert(p.layerSeconds.end(), 24, 1);
  p.layerSeconds.push_back(4); // LM head
  p.devices.assign(4, {"h100", 1});
  p.inflight = oneF1B(4);
  // 31 units over 4 stages; integral stage times make 8 the optimum, which forces
  // at most 5 blocks beside the embedding and at most 4 beside the head.
  for (const Partition &r : {partitionByDynamicProgramming(p), partitionByZ3(p)}) {
    ASSERT_TRUE(r.feasible) << r.error;
    EXPECT_DOUBLE_EQ(r.maxStageSeconds, 8);
    int64_t firstBlocks = layerCount(r, 26, 0) - 1, lastBlocks = layerCount(r, 26, 3) - 1;
    for (size_t s : {1, 2}) {
      EXPECT_LT(firstBlocks, layerCount(r, 26, s));
      EXPECT_LT(lastBlocks, layerCount(r, 26, s));
    }
  }
}

TEST(Partition, MemoryInfeasibleNamesStageAndBytes) {
  // 20 GiB of state and 5 GiB of activations per micro-batch per layer. Position 0
  // holds two micro-batches, so the same two layers cost it 60 GiB and position 1
  // 50 GiB; splitting 2+2 overflows least, by 20 GiB at stage 0.
  PartitionProblem p;
  p.layerSeconds.assign(4, 1);
  p.layerStaticBytes.assign(4, 20 * kGiB);
  p.layerActivationBytes.assign(4, 5 * kGiB);
  p.devices.assign(2, {"a100-40g", 1, 40 * kGiB});
  p.inflight = oneF1B(2);
  Partition dp = partitionByDynamicProgramming(p);
  EXPECT_FALSE(dp.feasible);
  EXPECT_EQ(dp.error, "no split fits in memory; in the least overfull one, stage 0 "
                      "(a100-40g, layers 0-1) needs 60.00 GiB but has 40.00 GiB "
                      "(20.00 GiB over)");
  Partition z3 = partitionByZ3(p);
  EXPECT_FALSE(z3.feasible);
  EXPECT_TRUE(z3.proven);
  EXPECT_EQ(z3.error, "no order of the devices fits in memory (given order: " +
                          dp.error + ")");
  EXPECT_EQ(z3.error.find('\n'), std::string::npos);
}

TEST(Partition, AlternatePositionsPriceTheirLayersTheirOwnWay) {
  // Recomputation on position 0 only: there a layer takes 1.5 s and keeps
  // 1 GiB per micro-batch; on position 1, 1 s and 10 GiB. Six layers. Timed
  // alone, 2+4 would pace at 4 s; but position 1 cannot hold four layers
  // without recomputing (4 x 10 GiB > 35 GiB), so the split is 3+3: 4.5 s
  // and 30 GiB there.
  PartitionProblem p;
  p.layerSeconds.assign(6, 1.5);
  p.layerActivationBytes.assign(6, 1 * kGiB);
  p.alternateLayerSeconds.assign(6, 1);
  p.alternateActivationBytes.assign(6, 10 * kGiB);
  p.alternate = {false, true};
  p.devices.assign(2, {"h100", 1, 35 * kGiB});
  p.inflight = {2, 1};
  Partition dp = partitionByDynamicProgramming(p);
  ASSERT_TRUE(dp.feasible) << dp.error;
  EXPECT_EQ(dp.firstLayer, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(dp.stageSeconds, (std::vector<double>{4.5, 3}));
  EXPECT_EQ(dp.stageBytes, (std::vector<double>{6 * kGiB, 30 * kGiB}));
  // With room for four, the faster rank takes them.
  p.devices.assign(2, {"h100", 1, 45 * kGiB});
  dp = partitionByDynamicProgramming(p);
  ASSERT_TRUE(dp.feasible) << dp.error;
  EXPECT_EQ(dp.firstLayer, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(dp.maxStageSeconds, 4);
  // Z3 permutes positions, which an alternate pricing pins: it refuses.
  EXPECT_FALSE(partitionByZ3(p).feasible);
  p.alternate = {true};
  EXPECT_NE(validateProblem(p), "");
}

TEST(Partition, Z3PutsTheLargeMemoryDeviceWhereMostMicroBatchesWait) {
  PartitionProblem p = memoryDecidesOrder();
  Partition dp = partitionByDynamicProgramming(p);
  ASSERT_TRUE(dp.feasible) << dp.error;
  EXPECT_EQ(dp.maxStageSeconds, 3);
  Partition z3 = partitionByZ3(p);
  ASSERT_TRUE(z3.feasible) << z3.error;
  EXPECT_TRUE(z3.proven);
  EXPECT_EQ(z3.maxStageSeconds, 2);
  EXPECT_EQ(z3.deviceOf, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(z3.stageBytes, (std::vector<double>{60 * kGiB, 40 * kGiB}));
}

TEST(Partition, RejectsMalformedProblems) {
  PartitionProblem p;
  p.layerSeconds.assign(3, 1);
  p.devices.assign(4, {"h100"});
  p.inflight = oneF1B(4);
  EXPECT_EQ(partitionByDynamicProgramming(p).error,
            "3 layers cannot fill 4 stages: every stage needs at least one layer");
  EXPECT_EQ(partitionByZ3(p).error, partitionByDynamicProgramming(p).error);
  p.layerSeconds.assign(5, 1);
  p.inflight.pop_back();
  EXPECT_EQ(validateProblem(p),
            "3 in-flight counts for 4 devices: give one per pipeline position");
  p.inflight = oneF1B(4);
  EXPECT_EQ(validateProblem(p), "");
  EXPECT_EQ(evaluatePartition(p, {0, 2, 2, 4}, {0, 1, 2, 3}).error,
            "stage 1 does not hold a non-empty range continuing the previous stage");
  EXPECT_EQ(evaluatePartition(p, {0, 1, 2, 3}, {0, 1, 1, 3}).error,
            "device 1 at position 2 is out of range or already placed");
}

TEST(Partition, Z3OutOfTimeReturnsTheGivenOrderUnproven) {
  // With no time to bisect, Z3 must hand back the given order (3 s, not the
  // optimal 2 s) and say it is not proven.
  PartitionProblem p = memoryDecidesOrder();
  Partition rushed = partitionByZ3(p, 0);
  ASSERT_TRUE(rushed.feasible) << rushed.error;
  EXPECT_FALSE(rushed.proven);
  EXPECT_EQ(rushed.maxStageSeconds, 3);
  EXPECT_EQ(rushed.deviceOf, (std::vector<int64_t>{0, 1}));
}

TEST(Partition, Z3ResourceBudgetIsDeterministic) {
  // A budget in Z3's resource units stops a check the same way on any
  // machine: a budget too small for one check returns the given order
  // unproven, as running out of time does; a sufficient one proves the
  // optimum, with any time limit.
  PartitionProblem p = memoryDecidesOrder();
  Partition starved = partitionByZ3(p, 10, /*resourcesPerCheck=*/1);
  ASSERT_TRUE(starved.feasible) << starved.error;
  EXPECT_FALSE(starved.proven);
  EXPECT_EQ(starved.maxStageSeconds, 3);
  Partition enough = partitionByZ3(p, 10, /*resourcesPerCheck=*/100000);
  ASSERT_TRUE(enough.feasible) << enough.error;
  EXPECT_TRUE(enough.proven);
  EXPECT_EQ(enough.maxStageSeconds, 2);
  EXPECT_EQ(enough.deviceOf, partitionByZ3(p).deviceOf);
}

TEST(Partition, MergedRunsCostTheirLayersAndSplitNearTheOptimum) {
  // A deep model: 1000 layers on a fast, a slow and two plain devices, the
  // embedding and head layers heavy. Runs of 4 layers (the last of the 250
  // runs as long as the others) must price a stage as its layers do, and
  // the split on runs must be within one run's time of the layer-exact DP.
  // (balanceStages splits models deeper than 256 layers this way.)
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> seconds(0.5, 1.5);
  PartitionProblem p;
  for (int l = 0; l < 1000; ++l) {
    p.layerSeconds.push_back(seconds(rng));
    p.layerStaticBytes.push_back(kGiB);
    p.layerActivationBytes.push_back(kGiB / 8);
  }
  p.layerSeconds.front() += 30;
  p.layerSeconds.back() += 50;
  p.devices = {{"h100", 3, 400 * kGiB}, {"a100", 1, 400 * kGiB}, {"l40", 0.6, 400 * kGiB},
               {"a100", 1, 400 * kGiB}};
  p.inflight = oneF1B(4);
  p.stageOverheadSeconds = 0.01;

  const int64_t width = 4;
  PartitionProblem merged = mergeLayers(p, width);
  ASSERT_EQ(merged.layerSeconds.size(), 250u);
  StageCosts fine(p), coarse(merged);
  for (auto [first, end] : {std::pair<int64_t, int64_t>{0, 1}, {3, 97}, {120, 250}}) {
    EXPECT_NEAR(coarse.seconds(first, end, p.devices[1]),
                fine.seconds(first * width, end * width, p.devices[1]), 1e-9);
    EXPECT_NEAR(coarse.bytes(first, end, 3), fine.bytes(first * width, end * width, 3), 1);
  }

  Partition exact = partitionByDynamicProgramming(p);
  Partition onRuns = partitionByDynamicProgramming(merged);
  ASSERT_TRUE(exact.feasible && onRuns.feasible);
  double run = 0;
  for (double s : merged.layerSeconds)
    run = std::max(run, s);
  // Moving a boundary to the nearest run edge adds at most a run to the stage
  // (on the slowest device: 1 / 0.6 of its time).
  EXPECT_GE(onRuns.maxStageSeconds, exact.maxStageSeconds - 1e-9);
  EXPECT_LE(onRuns.maxStageSeconds, exact.maxStageSeconds + run / 0.6);
  // Mapped back to layers (as balanceStages does), the split costs the same.
  std::vector<int64_t> first = onRuns.firstLayer;
  for (int64_t &f : first)
    f *= width;
  Partition mapped = evaluatePartition(p, first, onRuns.deviceOf);
  ASSERT_TRUE(mapped.feasible) << mapped.error;
  EXPECT_NEAR(mapped.maxStageSeconds, onRuns.maxStageSeconds, 1e-9 * onRuns.maxStageSeconds);
  expectConsistent(p, mapped);
}
