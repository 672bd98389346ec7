//===- BigScienceTest.cpp - layouts measured side by side ------------------===//
//
// Before training BLOOM, BigScience timed one model under many layouts on the
// same 48 nodes of Jean Zay (A100 80GB, four 100 Gb/s Omni-Path links a node),
// with Megatron-DeepSpeed of early 2022: DeepSpeed's pipeline (one stage per
// rank), full activation checkpointing, ZeRO-1, no flash attention, no
// sequence parallelism, gradients reduced after the pipeline drains
// (bigscience-workshop/bigscience, train/tr11-176B-ml/chronicles-prequel.md,
// the tables of 2022-02-25). The runs were not used to tune loom. They measure
// what SC'21 Table 1 leaves open: whether a tensor-parallel size below the
// node's eight GPUs is faster when the model fits with it.
//
//===----------------------------------------------------------------------===//

#include "Megatron2021.h"
#include "loom/Spec/Spec.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

using namespace loom;
using namespace loom::cost;

namespace {

struct Timing {
  int64_t dp, tp, pp, mbs, batch;
  double seconds; // per iteration; 0: out of memory
};

// 2022-02-25: 72 layers, hidden 14336, 64 heads, fp16 ("some more configs with
// lower PP" and "Tweaking TP", one day, after that day's PCIe/NUMA fix). Of the
// two (8, 4, 12, mbs 2) runs listed, the first.
const Timing kFebruary25[] = {
    {8, 4, 12, 4, 2048, 111.89},  {8, 4, 12, 2, 2048, 110.48},  {16, 4, 6, 4, 2048, 117.11},
    {16, 4, 6, 2, 2048, 111.71},  {16, 2, 12, 2, 2048, 112.50}, {32, 2, 6, 2, 2048, 0},
    {32, 2, 6, 1, 2048, 0},       {8, 2, 24, 1, 2048, 119.53},  {8, 2, 24, 2, 2048, 122.75},
    {4, 4, 24, 1, 2048, 130.60},  {8, 8, 6, 4, 2048, 114.11},   {4, 8, 12, 4, 2048, 117.07},
    {4, 8, 12, 2, 2048, 128.82},  {6, 8, 8, 4, 2016, 113.16},   {12, 8, 4, 2, 2016, 125.52},
    {12, 8, 4, 4, 2016, 114.81},  {24, 8, 2, 1, 2016, 145.45},  {24, 8, 2, 2, 2016, 136.13},
    {48, 8, 1, 1, 2016, 0},
};

/// BLOOM's shape (the catalog's bloom-176b: hidden 14336, vocabulary 250880,
/// ALiBi, tied embeddings) as the runs had it: 72 layers, 64 heads, fp16.
spec::Model benchmarkedShape() {
  spec::Model m = spec::loadModel("bloom-176b");
  m.set_name("bloom-72-layers");
  m.set_dtype(spec::FP16);
  m.mutable_blocks(0)->set_count(72);
  m.mutable_blocks(0)->mutable_attention()->set_heads(64);
  return m;
}

struct Priced {
  bool fits = false;
  double seconds = 0;
};

Priced price(const spec::Model &model, const Timing &run) {
  spec::Cluster cluster = spec::loadCluster(LOOM_TEST_INPUTS "/jean-zay-a100.yaml");
  spec::Training training = spec::defaultTraining(model);
  training.set_seq_len(2048);
  training.set_global_batch(uint64_t(run.batch));
  StrategyChoice c = published::megatron2021(run.tp, run.pp, run.mbs);
  c.dp = run.dp;
  c.zero = 1;
  WorkloadResult w = fromStrategy(model, cluster, training, c);
  EXPECT_TRUE(w.ok()) << w.error;
  if (!w.ok())
    return {};
  Estimate e = estimate(w.workload, computeModelFor(cluster, training), published::afterTheDrain());
  return {e.fits, e.stepTime};
}

/// A layout's measured and priced step time, per sequence.
struct Compared {
  const Timing *run;
  double measured, priced;
};

std::vector<Compared> compareFebruary25(bool print) {
  spec::Model model = benchmarkedShape();
  std::vector<Compared> out;
  std::string table = "dp  tp  pp  mbs  batch  measured s  loom s\n";
  for (const Timing &run : kFebruary25) {
    Priced p = price(model, run);
    table += fmt::format("{:>2}  {:>2}  {:>2}  {:>3}  {:>5}  {:>10}  {:>6}\n", run.dp, run.tp,
                         run.pp, run.mbs, run.batch,
                         run.seconds > 0 ? fmt::format("{:.2f}", run.seconds) : "OOM",
                         p.fits ? fmt::format("{:.2f}", p.seconds) : "OOM");
    // Memory: what ran fits in loom's model, what ran out does not.
    EXPECT_EQ(p.fits, run.seconds > 0)
        << fmt::format("dp={} tp={} pp={} mbs={}", run.dp, run.tp, run.pp, run.mbs);
    if (run.seconds > 0 && p.fits)
      out.push_back({&run, run.seconds / double(run.batch), p.seconds / double(run.batch)});
  }
  if (print)
    std::printf("%s", table.c_str());
  return out;
}

const Compared &find(const std::vector<Compared> &all, int64_t tp, int64_t pp, int64_t mbs) {
  for (const Compared &c : all)
    if (c.run->tp == tp && c.run->pp == pp && c.run->mbs == mbs)
      return c;
  ADD_FAILURE() << "no run tp=" << tp << " pp=" << pp << " mbs=" << mbs;
  return all.front();
}

TEST(BigScience2022, MemoryAndTheLayoutLoomWouldPick) {
  std::vector<Compared> all = compareFebruary25(true);
  ASSERT_FALSE(all.empty());
  auto byMeasured = [](const Compared &a, const Compared &b) { return a.measured < b.measured; };
  auto byPriced = [](const Compared &a, const Compared &b) { return a.priced < b.priced; };
  const Compared &fastest = *std::min_element(all.begin(), all.end(), byMeasured);
  const Compared &pick = *std::min_element(all.begin(), all.end(), byPriced);
  double behind = pick.measured / fastest.measured - 1;
  std::printf("loom's pick dp=%ld tp=%ld pp=%ld mbs=%ld was measured %.1f%% behind the "
              "fastest, dp=%ld tp=%ld pp=%ld mbs=%ld\n",
              long(pick.run->dp), long(pick.run->tp), long(pick.run->pp), long(pick.run->mbs),
              100 * behind, long(fastest.run->dp), long(fastest.run->tp),
              long(fastest.run->pp), long(fastest.run->mbs));
  EXPECT_LT(behind, 0.02);
}

// Runs whose GPUs execute the same kernels (layers per stage x micro-batches
// per step) and differ in the tensor-parallel size. The runs' costs that grow
// with the kernels a GPU runs (the document sets CUDA_LAUNCH_BLOCKING=1 against
// hangs on Jean Zay) then weigh alike on both.
TEST(BigScience2022, TensorParallelFourBeatsEightAsMeasured) {
  std::vector<Compared> all = compareFebruary25(false);
  struct Pair {
    int64_t pp, mbsAtFour, mbsAtEight;
  };
  for (Pair p : {Pair{12, 2, 4}, Pair{6, 2, 4}}) {
    const Compared &four = find(all, 4, p.pp, p.mbsAtFour);
    const Compared &eight = find(all, 8, p.pp, p.mbsAtEight);
    double measured = eight.measured / four.measured, priced = eight.priced / four.priced;
    std::printf("pp=%ld: tp=8 / tp=4 step time measured %.3f, loom %.3f\n", long(p.pp),
                measured, priced);
    // The same direction; loom puts tp=8 5-8 points further behind than
    // measured (docs/cost-model.md).
    EXPECT_GT(measured, 1.0);
    EXPECT_GT(priced, 1.0);
    EXPECT_LT(priced - measured, 0.10);
  }
}

} // namespace
