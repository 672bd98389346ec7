//===- PartitionBench.cpp - layer->stage partitioning solvers -------------===//
//
// The planner calls the DP once per (pp, virtual stage) candidate, so it must stay
// in the millisecond range at the largest pipelines (128 layers over 64 stages);
// Z3 runs only for heterogeneous clusters, at tens of layers over a few device
// groups (32 layers, 8 groups of A100 and H100 here).
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Partition.h"

#include <benchmark/benchmark.h>

using namespace loom::search;

namespace {
constexpr double kGiB = double(int64_t(1) << 30);

/// A Llama-like stack: embedding, `blocks` equal blocks with a little jitter so
/// ties do not make the instance trivial, LM head. Memory is tight enough that
/// the front stages (most micro-batches in flight) must hold fewer layers.
PartitionProblem stack(int64_t blocks, std::vector<PartitionDevice> devices) {
  PartitionProblem p;
  int64_t stages = int64_t(devices.size());
  p.layerSeconds.push_back(0.012);
  for (int64_t b = 0; b < blocks; ++b)
    p.layerSeconds.push_back(0.010 + 0.0001 * double(b % 7));
  p.layerSeconds.push_back(0.018);
  int64_t layers = int64_t(p.layerSeconds.size());
  p.layerStaticBytes.assign(layers, 2 * kGiB);
  p.layerActivationBytes.assign(layers, 0.5 * kGiB);
  p.devices = std::move(devices);
  for (int64_t s = 0; s < stages; ++s)
    p.inflight.push_back(stages - s);
  p.stageOverheadSeconds = 0.0005;
  return p;
}
} // namespace

static void BM_Partition_DP(benchmark::State &state) {
  PartitionProblem p = stack(state.range(0) - 2,
                             std::vector<PartitionDevice>(state.range(1), {"h100", 1, 80 * kGiB}));
  Partition r;
  for (auto _ : state) {
    r = partitionByDynamicProgramming(p);
    benchmark::DoNotOptimize(r.firstLayer.data());
  }
  if (!r.feasible)
    state.SkipWithError(r.error.c_str());
  state.counters["layers"] = double(p.layerSeconds.size());
  state.counters["stages"] = double(p.devices.size());
  state.counters["max_stage_ms"] = r.maxStageSeconds * 1e3;
}
BENCHMARK(BM_Partition_DP)
    ->Args({32, 8})->Args({128, 16})->Args({128, 64})
    ->Unit(benchmark::kMillisecond);

static void BM_Partition_Z3(benchmark::State &state) {
  // Half A100-40GB, half H100-80GB, listed slow first; speed = ratio of dense bf16
  // peaks in lib/Spec/catalog/gpus.yaml (989 / 312).
  int64_t groups = state.range(1);
  std::vector<PartitionDevice> devices;
  for (int64_t g = 0; g < groups; ++g)
    devices.push_back(g < groups / 2 ? PartitionDevice{"a100-40g", 1, 40 * kGiB}
                                     : PartitionDevice{"h100", 989.0 / 312, 80 * kGiB});
  PartitionProblem p = stack(state.range(0) - 2, devices);
  Partition r;
  for (auto _ : state) {
    r = partitionByZ3(p, 60);
    benchmark::DoNotOptimize(r.firstLayer.data());
  }
  if (!r.feasible)
    state.SkipWithError(r.error.c_str());
  Partition inOrder = partitionByDynamicProgramming(p);
  state.counters["layers"] = double(p.layerSeconds.size());
  state.counters["groups"] = double(groups);
  state.counters["proven"] = r.proven;
  state.counters["max_stage_ms"] = r.maxStageSeconds * 1e3;
  state.counters["given_order_ms"] = inOrder.feasible ? inOrder.maxStageSeconds * 1e3 : -1;
}
BENCHMARK(BM_Partition_Z3)
    ->Args({16, 4})->Args({32, 8})
    ->Unit(benchmark::kMillisecond)->Iterations(3);

BENCHMARK_MAIN();
