//===- LoweringBench.cpp - cost of lowering and placing a model ----------===//
//
// The planner lowers once and places many times; these numbers are the floor
// under every candidate the search will try through IR. Reports the time to
// lower Llama 3 405B (254 layer ops) and to place it on 16,384 H100s across two
// datacenters, and the ratio of the two.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/SpecToPlace.h"
#include "loom/Spec/Spec.h"
#include "loom/Transforms/Passes.h"

#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

#include <benchmark/benchmark.h>

using namespace mlir;
using namespace loom;

namespace {
struct Inputs {
  spec::Model model = spec::loadModel("llama3-405b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=2048,dcs=2");
  spec::Training training = spec::defaultTraining(model);
};
const Inputs &inputs() {
  static Inputs in;
  return in;
}
} // namespace

static void BM_Lower(benchmark::State &state) {
  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  const Inputs &in = inputs();
  for (auto _ : state) {
    auto module = lowerSpecToPlace(&ctx, in.model, in.cluster, in.training,
                                   UnknownLoc::get(&ctx));
    benchmark::DoNotOptimize(module.get());
  }
}
BENCHMARK(BM_Lower)->Unit(benchmark::kMicrosecond);

static void BM_LowerPlaceVerify(benchmark::State &state) {
  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  const Inputs &in = inputs();
  PlaceApplyStrategyOptions apply;
  apply.dp = 128;
  apply.tp = 8;
  apply.pp = 16;
  apply.zero = 1;
  apply.recompute = "selective";
  for (auto _ : state) {
    auto module = lowerSpecToPlace(&ctx, in.model, in.cluster, in.training,
                                   UnknownLoc::get(&ctx));
    PassManager pm(&ctx);
    pm.addPass(createPlaceApplyStrategy(apply));
    if (failed(pm.run(*module)) || failed(verify(*module)))
      state.SkipWithError("placing llama3-405b failed");
  }
}
BENCHMARK(BM_LowerPlaceVerify)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
