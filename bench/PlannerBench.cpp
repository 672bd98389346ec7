//===- PlannerBench.cpp - time of a full strategy search ------------------===//
//
// Issue #5's budgets: Llama 3 405B on 2048 DGX H100 nodes in two datacenters
// searched in at most 1 s on one core; a 1T-parameter MoE (Kimi K2) on about
// 100,000 GPUs in three datacenters in at most 10 s. Also reports how the search
// grows from 64 to 131,072 GPUs, and candidates priced per second.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Planner.h"

#include <benchmark/benchmark.h>

#include <string>

using namespace loom;

static void BM_Plan_Llama405B(benchmark::State &state) {
  int64_t nodes = state.range(0);
  spec::Model model = spec::loadModel("llama3-405b");
  spec::Cluster cluster = spec::loadCluster(
      "dgx-h100:nodes=" + std::to_string(nodes) + (nodes >= 2048 ? ",dcs=2" : ""));
  spec::Training training = spec::defaultTraining(model);
  // Enough sequences for every data-parallel width the cluster allows.
  training.set_global_batch(std::max<int64_t>(512, nodes));
  int64_t evaluated = 0;
  for (auto _ : state) {
    search::PlanResult r = search::plan(model, cluster, training);
    evaluated = r.evaluated + r.rejected;
    benchmark::DoNotOptimize(r.best.data());
  }
  state.counters["gpus"] = double(nodes * 8);
  state.counters["candidates"] = double(evaluated);
  state.counters["candidates_per_s"] =
      benchmark::Counter(double(evaluated), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Plan_Llama405B)
    ->Arg(8)->Arg(64)->Arg(512)->Arg(2048)->Arg(16384)
    ->Unit(benchmark::kMillisecond);

// 12,288 nodes in three datacenters: 98,304 GPUs (2^15 x 3, so the degrees
// factor richly; 100,000 itself has a prime factor of 5^5 and few layouts).
static void BM_Plan_KimiK2_3DCs(benchmark::State &state) {
  spec::Model model = spec::loadModel("kimi-k2");
  spec::Cluster cluster =
      spec::loadCluster("dgx-h100:nodes=12288,dcs=3,wan-gbps=400,wan-ms=10");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(3 << 13); // 24,576 sequences: room for wide dp
  int64_t evaluated = 0;
  for (auto _ : state) {
    search::PlanResult r = search::plan(model, cluster, training);
    evaluated = r.evaluated + r.rejected;
    benchmark::DoNotOptimize(r.best.data());
  }
  state.counters["gpus"] = 98304;
  state.counters["candidates"] = double(evaluated);
  state.counters["candidates_per_s"] =
      benchmark::Counter(double(evaluated), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Plan_KimiK2_3DCs)->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK_MAIN();
