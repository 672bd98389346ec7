//===- EstimateBench.cpp - cost of one estimate ---------------------------===//
//
// The planner search calls the cost model for every candidate, so one full
// estimate (strategy tuple -> workload -> memory and step time) has a budget of
// 50 us on one core (issue #4). Measured on Llama 3 405B (254 parts) placed on
// 16,384 H100s in two datacenters, and on Mixtral 8x7B with experts.
//
// The compute model remembers GEMM prices by shape, as a search reuses them
// across tuples: the plain cases run warm, `Cold` clears that memory before
// every estimate (a compute model built afresh each time).
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"

#include <benchmark/benchmark.h>

using namespace loom;
using namespace loom::cost;

namespace {
struct Case {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
  StrategyChoice choice;
  ComputeModel compute;
};

Case makeCase(const char *model, const char *cluster, StrategyChoice choice) {
  Case c{spec::loadModel(model), spec::loadCluster(cluster), {}, choice, {}};
  c.training = spec::defaultTraining(c.model);
  c.training.set_global_batch(2048);
  c.compute = computeModelFor(c.cluster, c.training);
  return c;
}

const Case &llama405b() {
  static Case c = [] {
    StrategyChoice s;
    s.tp = 8;
    s.pp = 16; // 126 layers: uneven stages, so no interleaving
    s.zero = 1;
    s.recompute = Recompute::Selective;
    s.sequenceParallel = true;
    return makeCase("llama3-405b", "dgx-h100:nodes=2048,dcs=2", s);
  }();
  return c;
}

const Case &mixtral() {
  static Case c = [] {
    StrategyChoice s;
    s.tp = 2;
    s.ep = 8;
    s.pp = 4;
    s.zero = 1;
    return makeCase("mixtral-8x7b", "dgx-h100:nodes=64", s);
  }();
  return c;
}

void runFull(benchmark::State &state, const Case &c) {
  for (auto _ : state) {
    WorkloadResult w = fromStrategy(c.model, c.cluster, c.training, c.choice);
    if (!w.ok())
      return state.SkipWithError(w.error.c_str());
    Estimate e = estimate(w.workload, c.compute);
    benchmark::DoNotOptimize(e.stepTime);
  }
}

void runFullCold(benchmark::State &state, const Case &c) {
  for (auto _ : state) {
    ComputeModel fresh = computeModelFor(c.cluster, c.training);
    WorkloadResult w = fromStrategy(c.model, c.cluster, c.training, c.choice);
    if (!w.ok())
      return state.SkipWithError(w.error.c_str());
    Estimate e = estimate(w.workload, fresh);
    benchmark::DoNotOptimize(e.stepTime);
  }
}

void runWorkloadOnly(benchmark::State &state, const Case &c) {
  for (auto _ : state) {
    WorkloadResult w = fromStrategy(c.model, c.cluster, c.training, c.choice);
    benchmark::DoNotOptimize(w.workload.parts.data());
  }
}

void runEstimateOnly(benchmark::State &state, const Case &c) {
  WorkloadResult w = fromStrategy(c.model, c.cluster, c.training, c.choice);
  if (!w.ok())
    return state.SkipWithError(w.error.c_str());
  for (auto _ : state) {
    Estimate e = estimate(w.workload, c.compute);
    benchmark::DoNotOptimize(e.stepTime);
  }
}
} // namespace

static void BM_Llama405B_Full(benchmark::State &s) { runFull(s, llama405b()); }
static void BM_Llama405B_FullCold(benchmark::State &s) { runFullCold(s, llama405b()); }
static void BM_Llama405B_EstimateOnly(benchmark::State &s) { runEstimateOnly(s, llama405b()); }
static void BM_Llama405B_WorkloadOnly(benchmark::State &s) { runWorkloadOnly(s, llama405b()); }
static void BM_Mixtral_Full(benchmark::State &s) { runFull(s, mixtral()); }
static void BM_Mixtral_EstimateOnly(benchmark::State &s) { runEstimateOnly(s, mixtral()); }
BENCHMARK(BM_Llama405B_Full)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Llama405B_FullCold)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Llama405B_EstimateOnly)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Llama405B_WorkloadOnly)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mixtral_Full)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mixtral_EstimateOnly)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
