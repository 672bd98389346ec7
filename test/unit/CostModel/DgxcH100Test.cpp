//===- DgxcH100Test.cpp - NVIDIA's tuned H100 recipes, priced as they ran -===//
//
// The step times of NVIDIA's DGX Cloud benchmarking recipes (DgxcRecipes.h).
// Unlike Megatron-LM's README table (MegatronH100Test), nothing is left for
// loom to choose, so they test the pricing alone. They also test the memory
// model: every one of these ran, so each must fit.
//
// What they show (docs/cost-model.md, "NVIDIA's tuned H100 recipes"): loom is
// fast on every row, by 3-14%, t = 1 as much as t = 8.
//
//===----------------------------------------------------------------------===//

#include "DgxcRecipes.h"
#include "loom/CostModel/Estimate.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

using namespace loom;
using namespace loom::cost;
using namespace loom::cost::published;

namespace {

Estimate price(const Recipe &r) {
  spec::Model model = modelOf(r);
  spec::Cluster cluster = clusterOf(r);
  spec::Training training = trainingOf(r, model);
  StrategyChoice c;
  c.tp = r.t;
  c.pp = r.p;
  c.cp = r.cp;
  c.vpp = r.vpp;
  c.zero = 1; // the distributed optimizer
  c.microBatch = r.mbs;
  c.recompute = r.recompute;
  c.sequenceParallel = r.t > 1;
  c.tpCommOverlap = r.tpOverlap;
  WorkloadResult w = fromStrategy(model, cluster, training, c);
  EXPECT_TRUE(w.ok()) << r.name << ": " << w.error;
  if (!w.ok())
    return {};
  return estimate(w.workload, computeModelFor(cluster, training), EstimateOptions{});
}

TEST(DgxcH100, TunedRecipesFitAndArePricedAlike) {
  std::string table = "recipe                GPUs   t   p  cp  vpp  measured s  loom s   error  peak GiB\n";
  double lo = INFINITY, hi = -INFINITY, errT1 = 0, errT8 = 0;
  std::map<std::string, double> loomStep;
  for (const Recipe &r : kRecipes) {
    Estimate e = price(r);
    // Each ran on 80 GB GPUs: loom must not call it out of memory.
    EXPECT_TRUE(e.fits) << r.name << " ran, but loom needs "
                        << e.peakMemoryBytes / double(1ull << 30) << " GiB";
    ASSERT_GT(e.stepTime, 0) << r.name;
    double err = r.stepSeconds / e.stepTime - 1; // + : loom fast
    table += fmt::format("{:<20} {:>5} {:>3} {:>3} {:>3} {:>4}  {:>10.2f} {:>7.2f} {:>+6.1f}%  {:>8.1f}\n",
                         r.name, r.gpus, r.t, r.p, r.cp, r.vpp, r.stepSeconds, e.stepTime,
                         100 * err, e.peakMemoryBytes / double(1ull << 30));
    loomStep[r.name] = e.stepTime;
    lo = std::min(lo, err);
    hi = std::max(hi, err);
    if (std::string(r.name) == "llama3.1-8b")
      errT1 = err;
    if (std::string(r.name) == "llama3.1-405b")
      errT8 = err;
  }
  std::printf("%sloom fast by %.1f%% to %.1f%%\n", table.c_str(), 100 * lo, 100 * hi);
  // A record of where H100 pricing stands, not a target: optimistic on every
  // row, by no more than 15%. Tighten as the pricing improves; never loosen.
  EXPECT_GT(lo, 0.0);
  EXPECT_LT(hi, 0.15);
  // The finding: no lean with t. Llama 3.1 8B without tensor parallelism and
  // 405B at t = 8 (both cp = 2, tuned by NVIDIA) are priced alike, within 5
  // points, unlike the +30 against -5 points of Megatron-LM's README rows.
  EXPECT_LT(std::abs(errT1 - errT8), 0.05) << table;
  // NVIDIA's retune of Nemotron-4 15B from t = 4 to t = 2 measured 5.7%
  // faster (with a newer container); loom orders the two alike.
  EXPECT_LT(loomStep["nemotron4-15b@v25.04"], loomStep["nemotron4-15b"]) << table;
}

} // namespace
