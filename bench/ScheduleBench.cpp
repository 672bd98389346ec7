//===- ScheduleBench.cpp - cost of building and checking a schedule -------===//
//
// The planner prices every candidate plan's pipeline by simulating its
// schedule, so issue #6 budgets generate + verify + simulate of a 64-rank,
// 1024-microbatch 1F1B schedule at 50 ms, and the automatic zero-bubble
// scheduler (which list-schedules and simulates several policies) on 16
// ranks x 128 microbatches at 200 ms. The pieces are timed apart as well.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"
#include "loom/Schedule/Simulator.h"
#include "loom/Schedule/SkipPaths.h"
#include "loom/Schedule/Verifier.h"

#include <benchmark/benchmark.h>

using namespace loom::sched;

namespace {

void checkAndTime(benchmark::State &state, const Schedule &s, const Costs &c) {
  std::vector<Diagnostic> diags = verify(s);
  if (!diags.empty())
    state.SkipWithError(diags.front().str().c_str());
  std::optional<Timeline> t = simulate(s, c);
  benchmark::DoNotOptimize(t);
}

void BM_OneFOneB_GenerateVerifySimulate(benchmark::State &state) {
  const int p = 64, m = 1024;
  Costs c = Costs::uniform(linearLayout(p, m), 1.0, 1.3, 0.8, 0.05);
  for (auto _ : state)
    checkAndTime(state, oneFOneB(p, m), c);
}
BENCHMARK(BM_OneFOneB_GenerateVerifySimulate)->Unit(benchmark::kMillisecond);

void BM_OneFOneB_Verify(benchmark::State &state) {
  Schedule s = oneFOneB(64, 1024);
  for (auto _ : state)
    benchmark::DoNotOptimize(verify(s));
}
BENCHMARK(BM_OneFOneB_Verify)->Unit(benchmark::kMillisecond);

void BM_OneFOneB_Simulate(benchmark::State &state) {
  Schedule s = oneFOneB(64, 1024);
  Costs c = Costs::uniform(s, 1.0, 1.3, 0.8, 0.05);
  for (auto _ : state)
    benchmark::DoNotOptimize(simulate(s, c));
}
BENCHMARK(BM_OneFOneB_Simulate)->Unit(benchmark::kMillisecond);

void BM_ZeroBubbleAuto_GenerateVerifySimulate(benchmark::State &state) {
  const int p = 16, m = 128;
  Schedule layout = linearLayout(p, m);
  Costs c = Costs::uniform(layout, 1.0, 1.3, 0.8, 0.05);
  c.forward[p - 1] += 0.45; // LM head and loss on the last stage
  c.backward[p - 1] += 0.45;
  for (auto _ : state)
    checkAndTime(state, zeroBubbleAuto(layout, c, p), c);
}
BENCHMARK(BM_ZeroBubbleAuto_GenerateVerifySimulate)->Unit(benchmark::kMillisecond);

void BM_ZeroBubbleV(benchmark::State &state) {
  const int p = 16, m = 128;
  Costs c = Costs::uniform(vShapeLayout(p, m), 0.5, 0.65, 0.4, 0.05);
  for (auto _ : state)
    checkAndTime(state, zeroBubbleV(p, m, c), c);
}
BENCHMARK(BM_ZeroBubbleV)->Unit(benchmark::kMillisecond);

void BM_SkipPipe(benchmark::State &state) {
  SkipOptions o;
  o.ranks = 16;
  o.microBatches = 64;
  o.memoryLimit = 16;
  o.rules = {.maxSkipFraction = 0.15, .maxSwaps = 1, .minStageShare = 0.7};
  Costs c = Costs::uniform(linearLayout(o.ranks, o.microBatches), 1, 1, 1, 0.05);
  for (int r = 0; r < o.ranks; ++r) // stage 5 sits across a WAN link
    if (r != 5) {
      c.setLink(r, 5, 1.5);
      c.setLink(5, r, 1.5);
    }
  for (auto _ : state)
    checkAndTime(state, skipPipe(c, o), c);
}
BENCHMARK(BM_SkipPipe)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
