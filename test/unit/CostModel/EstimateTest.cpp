//===- EstimateTest.cpp - step time against published runs ----------------===//
//
// Megatron-LM on A100-80GB (Narayanan et al., SC'21, Table 1; VALIDATION.md):
// GPT, seq 2048, vocab 51200, fp16, full recomputation, interleaved schedule
// where p > 1. The paper gives t, p, GPU count and batch for each row; the
// micro-batch size and the number of model chunks are not in the table, so
// EveryRowNearThePublishedThroughput takes loom's best of micro-batch 1, 2, 4
// and every valid interleaving depth that fits in memory, with data-parallel
// gradients reduced after the pipeline drains. Megatron-LM's artifact scripts
// state what the authors ran (TheArtifactRunsFitAndArePriced).
//
//===----------------------------------------------------------------------===//

#include "Megatron2021.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

using namespace loom;
using namespace loom::cost;

namespace {

struct Row {
  const char *model;
  int64_t t, p, gpus, batch;
  double tflops; // published, per GPU
};

const Row kTable1[] = {
    {"megatron-1.7b", 1, 1, 32, 512, 137},      {"megatron-3.6b", 2, 1, 64, 512, 138},
    {"megatron-7.5b", 4, 1, 128, 512, 142},     {"megatron-18.4b", 8, 1, 256, 1024, 135},
    {"megatron-39.1b", 8, 2, 512, 1536, 138},   {"megatron-76.1b", 8, 4, 1024, 1792, 140},
    {"megatron-145.6b", 8, 8, 1536, 2304, 148}, {"megatron-310.1b", 8, 16, 1920, 2160, 155},
    {"megatron-529.6b", 8, 35, 2520, 2520, 163}, {"megatron-1t", 8, 64, 3072, 3072, 163},
};

// Issue #4's target: +-10% on every row. loom is optimistic by 1-8%, most on
// the smallest models, where the memory-bound attention kernels weigh most.
constexpr double kTarget = 0.10;

struct Best {
  Estimate estimate;
  int64_t mbs = 0, vpp = 0;
};

/// A row's model, its DGX A100 nodes, and sequences of 2048 tokens in the
/// row's global batch.
struct RowInputs {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
};
RowInputs inputsOf(const Row &row) {
  RowInputs in{spec::loadModel(row.model),
               spec::loadCluster(fmt::format("dgx-a100:nodes={}", row.gpus / 8)), {}};
  in.training = spec::defaultTraining(in.model);
  in.training.set_seq_len(2048);
  in.training.set_global_batch(row.batch);
  return in;
}

Best bestConfiguration(const Row &row) {
  auto [model, cluster, training] = inputsOf(row);
  ComputeModel compute = computeModelFor(cluster, training);
  const EstimateOptions options = published::afterTheDrain();

  Best best;
  int64_t layers = spec::numLayers(model);
  for (int64_t mbs : {1, 2, 4}) {
    // Megatron-LM interleaved only on more than two ranks (arguments.py at
    // de7dc40f88).
    for (int64_t vpp = 1; vpp <= (row.p > 2 ? layers / row.p : 1); ++vpp) {
      WorkloadResult w = fromStrategy(model, cluster, training,
                                    published::megatron2021(row.t, row.p, mbs, vpp));
      if (!w.ok())
        continue;
      Estimate e = estimate(w.workload, compute, options);
      if (e.fits && e.tflopsPerGpu > best.estimate.tflopsPerGpu)
        best = {e, mbs, vpp};
    }
  }
  return best;
}

TEST(MegatronSC21, EveryRowNearThePublishedThroughput) {
  std::string table = "model            t   p  GPUs  batch  mbs vpp  published  loom   error\n";
  int onTarget = 0;
  for (const Row &row : kTable1) {
    Best b = bestConfiguration(row);
    ASSERT_GT(b.mbs, 0) << row.model << ": no configuration fits";
    double err = (b.estimate.tflopsPerGpu - row.tflops) / row.tflops;
    table += fmt::format("{:<16} {:>1} {:>3} {:>5} {:>6} {:>4} {:>3} {:>10.0f} {:>5.1f} {:>+6.1f}%\n",
                         row.model, row.t, row.p, row.gpus, row.batch, b.mbs, b.vpp,
                         row.tflops, b.estimate.tflopsPerGpu, 100 * err);
    EXPECT_LE(std::abs(err), kTarget) << row.model;
    onTarget += std::abs(err) <= kTarget;
  }
  std::printf("%s%d of 10 rows within +-%.0f%%\n", table.c_str(), onTarget, 100 * kTarget);
}

// The runs behind Table 1 as Megatron-LM's artifact scripts set them
// (examples/sc21/run_table_1.sh and CONFIG.sh, Megatron-LM commit de7dc40f88):
// micro-batch size, layers per virtual stage (vpp = layers / (p x that)), and
// the data-parallel implementation: PyTorch DDP (which reduces gradients under
// the last micro-batch's backward) on the four smallest models, Megatron's
// local DDP (after the pipeline drains) on the rest; fp16 with a static loss
// scale and full recomputation everywhere.
struct ArtifactRun {
  int64_t mbs, vpp;
  bool torchDdp;
};
const ArtifactRun kArtifact[] = {{16, 1, true}, {16, 1, true}, {16, 1, true}, {8, 1, true},
                                 {4, 1, false}, {2, 3, false}, {2, 2, false}, {1, 2, false},
                                 {1, 3, false}, {1, 1, false}};

TEST(MegatronSC21, TheArtifactRunsFitAndArePriced) {
  // These configurations ran, so they must fit in loom's memory model; their
  // priced throughput is reported beside the published one. loom prices the
  // large micro-batches of the small models more optimistically than its own
  // best choice (EveryRowNearThePublishedThroughput): the gap there is larger.
  std::string table = "model            mbs vpp  DDP    published  loom   error\n";
  for (size_t i = 0; i < std::size(kTable1); ++i) {
    const Row &row = kTable1[i];
    const ArtifactRun &run = kArtifact[i];
    auto [model, cluster, training] = inputsOf(row);
    WorkloadResult w = fromStrategy(model, cluster, training,
                                    published::megatron2021(row.t, row.p, run.mbs, run.vpp));
    ASSERT_TRUE(w.ok()) << row.model << ": " << w.error;
    EstimateOptions options;
    options.overlapGradReduce = run.torchDdp;
    Estimate e = estimate(w.workload, computeModelFor(cluster, training), options);
    EXPECT_TRUE(e.fits) << row.model << " ran with micro-batch " << run.mbs << ", but loom needs "
                        << e.peakMemoryBytes / double(1ull << 30) << " GiB";
    double err = (e.tflopsPerGpu - row.tflops) / row.tflops;
    table += fmt::format("{:<16} {:>3} {:>3}  {:<5} {:>10.0f} {:>5.1f} {:>+6.1f}%\n", row.model,
                         run.mbs, run.vpp, run.torchDdp ? "torch" : "local", row.tflops,
                         e.tflopsPerGpu, 100 * err);
  }
  std::printf("%s", table.c_str());
}

// Published runs the cost model was not tuned to: Korthikanti et al., "Reducing
// Activation Recomputation in Large Transformer Models" (arXiv 2205.05198),
// Megatron-LM of 2022 on DGX A100 80GB nodes (Selene), s = 2048, V = 51200, t = 8,
// no data parallelism, no flash attention, the backward's tensor-parallel
// reduction asynchronous (since 2021-09), the interleaved schedule with three
// chunks for 175B and 530B (Sec. 6, Table 3). Table 5 gives the iteration time with
// full recomputation and with the paper's sequence parallelism and selective
// recomputation ("present work").
struct KorthikantiRun {
  const char *name;
  int64_t heads, hidden, layers, pp, batch, mbs, vpp;
  double fullSeconds, presentSeconds;
};
const KorthikantiRun kKorthikanti[] = {
    {"22B", 64, 6144, 48, 1, 4, 4, 1, 1.42, 1.10},
    {"175B", 96, 12288, 96, 8, 64, 1, 3, 18.13, 13.75},
    {"530B", 128, 20480, 105, 35, 280, 1, 3, 49.05, 37.83},
    {"1T", 160, 25600, 128, 64, 512, 1, 1, 94.42, 71.49},
};

/// A run's model (Megatron's GPT as in the SC'21 rows, at the run's shape), one DGX
/// A100 node per pipeline stage (t = 8), and its batch of 2048-token sequences.
RowInputs inputsOf(const KorthikantiRun &run) {
  RowInputs in{spec::loadModel("megatron-1t"),
               spec::loadCluster(fmt::format("dgx-a100:nodes={}", run.pp)), {}};
  in.model.set_hidden_size(run.hidden);
  spec::Block &block = *in.model.mutable_blocks(0);
  block.set_count(uint32_t(run.layers));
  block.mutable_attention()->set_heads(uint32_t(run.heads));
  block.mutable_mlp()->set_ffn_hidden(uint64_t(4 * run.hidden));
  in.training = spec::defaultTraining(in.model);
  in.training.set_seq_len(2048);
  in.training.set_global_batch(run.batch);
  return in;
}

TEST(Korthikanti2022, IterationTimesNearTable5) {
  std::string table = "model  recompute          published s  loom s   error\n";
  for (const KorthikantiRun &run : kKorthikanti) {
    auto [model, cluster, training] = inputsOf(run);
    for (bool present : {false, true}) {
      StrategyChoice c;
      c.tp = 8;
      c.pp = run.pp;
      c.vpp = run.vpp;
      c.microBatch = run.mbs;
      c.recompute = present ? Recompute::Selective : Recompute::Full;
      c.sequenceParallel = present;
      c.tpCommOverlap = false;
      c.flashAttention = false;
      WorkloadResult w = fromStrategy(model, cluster, training, c);
      ASSERT_TRUE(w.ok()) << run.name << ": " << w.error;
      Estimate e = estimate(w.workload, computeModelFor(cluster, training));
      double published = present ? run.presentSeconds : run.fullSeconds;
      double err = e.stepTime / published - 1;
      table += fmt::format("{:<6} {:<18} {:>11.2f} {:>7.2f} {:>+6.1f}%\n", run.name,
                           present ? "selective + seq par" : "full", published, e.stepTime,
                           100 * err);
      EXPECT_LE(std::abs(err), kTarget) << run.name << (present ? " present work" : " full");
    }
  }
  std::printf("%s", table.c_str());
}

// The same paper's Table 4: forward plus backward of one 22B layer (t=8, b=4, the
// first row of Table 3), in ms, for its five ways of keeping activations.
TEST(Korthikanti2022, LayerTimesNearTable4) {
  struct Variant {
    const char *name;
    Recompute recompute;
    bool sequenceParallel;
    double combinedMs;
  };
  const Variant variants[] = {{"baseline, no recompute", Recompute::None, false, 19.6},
                              {"sequence parallelism", Recompute::None, true, 19.0},
                              {"baseline with recompute", Recompute::Full, false, 27.2},
                              {"selective recompute", Recompute::Selective, false, 20.9},
                              {"selective + sequence", Recompute::Selective, true, 20.3}};
  const KorthikantiRun &run = kKorthikanti[0];
  auto [model, cluster, training] = inputsOf(run);
  std::string table = "variant                  published ms  loom ms   error\n";
  for (const Variant &v : variants) {
    StrategyChoice c;
    c.tp = 8;
    c.microBatch = run.mbs;
    c.recompute = v.recompute;
    c.sequenceParallel = v.sequenceParallel;
    c.tpCommOverlap = false;
    c.flashAttention = false;
    WorkloadResult w = fromStrategy(model, cluster, training, c);
    ASSERT_TRUE(w.ok()) << v.name << ": " << w.error;
    ComputeModel compute = computeModelFor(cluster, training);
    // One layer: its attention and MLP parts, all their passes and the
    // tensor-parallel communication they expose.
    RankTime t;
    for (const Part &part : w.workload.parts)
      if (part.kind == PartKind::Attention || part.kind == PartKind::Mlp)
        addPartTime(t, w.workload, part, compute);
    double ms = 1e3 * (t.f + t.b + t.w + t.recompute + t.tpComm) / double(run.layers);
    double err = ms / v.combinedMs - 1;
    table += fmt::format("{:<24} {:>12.1f} {:>8.2f} {:>+6.1f}%\n", v.name, v.combinedMs, ms,
                         100 * err);
    EXPECT_LE(std::abs(err), kTarget) << v.name;
  }
  std::printf("%s", table.c_str());
}

TEST(Estimate, ThroughputConventionsAgreeOnADensePlan) {
  // Without recomputation, executed FLOPs = 3 x forward; model FLOPs count the
  // same matmuls (6N) and attention (12 L s h), so MFU x peak = TFLOP/s.
  spec::Model model = spec::loadModel("megatron-7.5b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=16");
  spec::Training training = spec::defaultTraining(model);
  ComputeModel compute = ComputeModel::forGpu("a100-80g", 312, 2039);
  StrategyChoice c;
  c.tp = 4;
  c.flashAttention = false;
  WorkloadResult w = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(w.ok()) << w.error;
  Estimate e = estimate(w.workload, compute);
  EXPECT_NEAR(e.mfu * 312, e.tflopsPerGpu, 0.02 * e.tflopsPerGpu);
  EXPECT_GT(e.stepTime, 0);
  EXPECT_NEAR(e.tokensPerSecond, double(training.global_batch()) * 2048 / e.stepTime, 1e-6);
}

TEST(Estimate, PipelineBubbleShrinksWithInterleaving) {
  spec::Model model = spec::loadModel("megatron-39.1b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=8");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(64);
  ComputeModel compute = ComputeModel::forGpu("a100-80g", 312, 2039);
  StrategyChoice c;
  c.tp = 8;
  c.pp = 8;
  c.recompute = Recompute::Full;
  Estimate plain = estimate(fromStrategy(model, cluster, training, c).workload, compute);
  c.vpp = 2;
  Estimate interleaved = estimate(fromStrategy(model, cluster, training, c).workload, compute);
  EXPECT_GT(plain.bubble, 0);
  // The bubble term is (p-1)/v of a micro-batch's stage time.
  EXPECT_NEAR(interleaved.bubble * 2, plain.bubble, 0.05 * plain.bubble);
  EXPECT_LT(interleaved.stepTime, plain.stepTime);
}

TEST(Estimate, RingAttentionHidesOnlyBehindTheAttentionCore) {
  // Megatron 18.4B (full multi-head attention) at 2048 tokens with cp=8 in
  // one DGX A100: each rank's key/value all-gather outlasts its share of the
  // attention core, though not the whole attention part (projections
  // included), which must finish before the keys exist. The exposed time is
  // at least what the core's cp-1 blocks cannot cover.
  spec::Model model = spec::loadModel("megatron-18.4b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=1");
  spec::Training training = spec::defaultTraining(model);
  training.set_seq_len(2048);
  training.set_global_batch(8);
  StrategyChoice c;
  c.cp = 8;
  WorkloadResult w = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(w.ok()) << w.error;
  ComputeModel compute = computeModelFor(cluster, training);
  const Part *attention = nullptr;
  for (const Part &p : w.workload.parts)
    if (p.kind == PartKind::Attention)
      attention = &p;
  ASSERT_NE(attention, nullptr);
  const PartShape &s = attention->shape;
  PassCost pc = attentionCost(compute, s);
  EXPECT_GT(pc.coreF, 0);
  EXPECT_LT(pc.coreF, pc.f);
  EXPECT_GT(pc.coreB, 0);
  EXPECT_LT(pc.coreB, pc.b);
  double kv = 2.0 * double(s.microBatch * s.seq * s.kvHeads * s.headDim * s.bytesPerElement);
  double gather =
      collectiveTime(Collective::AllGather, kv, w.workload.groups[attention->groups.cp]).seconds;
  double scatter =
      collectiveTime(Collective::ReduceScatter, kv, w.workload.groups[attention->groups.cp])
          .seconds;
  ASSERT_GT(gather, 7.0 / 8.0 * pc.coreF);
  ASSERT_LT(gather, pc.f); // the whole part would have hidden it
  double perLayer = compute.exposedSeconds(gather, 7.0 / 8.0 * pc.coreF) +
                    compute.exposedSeconds(gather + scatter, 7.0 / 8.0 * pc.coreB);
  Estimate e = estimate(w.workload, compute);
  EXPECT_NEAR(e.time[0].cpComm, double(spec::numLayers(model)) * perLayer,
              1e-9 * e.time[0].cpComm);
}

TEST(Estimate, DoesNotFitIsReported) {
  spec::Model model = spec::loadModel("llama3-405b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=1");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(8);
  ComputeModel compute = ComputeModel::forGpu("h100-sxm", 989, 3350);
  StrategyChoice c;
  c.tp = 8;
  Estimate e = estimate(fromStrategy(model, cluster, training, c).workload, compute);
  EXPECT_FALSE(e.fits);
  EXPECT_GT(e.peakMemoryBytes, e.usableBytes);
}

} // namespace

namespace {
TEST(Estimate, OverlappedCommunicationSlowsTheComputeItHidesBehind) {
  // ZeRO-3 gathers hide behind each micro-batch's compute, but the kernels
  // beside them run overlap_slowdown times slower: a GPU type with no
  // slowdown must come out faster by exactly that penalty.
  spec::Model model = spec::loadModel("llama3-8b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  StrategyChoice c;
  c.zero = 3;
  Workload w = fromStrategy(model, cluster, training, c).workload;
  spec::GpuType gpu = *spec::findCatalogGpu("h100-sxm");
  ComputeModel slowed = ComputeModel::forGpu(gpu, 989, 3350);
  gpu.set_overlap_slowdown(0);
  ComputeModel ideal = ComputeModel::forGpu(gpu, 989, 3350);
  Estimate a = estimate(w, slowed), b = estimate(w, ideal);
  EXPECT_GT(a.dpExposed, b.dpExposed);
  EXPECT_NEAR(a.stepTime - b.stepTime, a.dpExposed - b.dpExposed, 1e-9);
  EXPECT_DOUBLE_EQ(slowed.overlapPenalty(1.0), 1.0 - 1.0 / 1.763);
  EXPECT_DOUBLE_EQ(ideal.overlapPenalty(1.0), 0.0);
}

TEST(Estimate, Zero1GatherHidesInTheNextForwardNotTheBackward) {
  // ZeRO-1's gather of updated parameters follows the optimizer step, so it
  // can only hide in the next step's first forward (--overlap-param-gather),
  // the gradients' reduction in the backward: each flag hides its own
  // collective in its own window.
  spec::Model model = spec::loadModel("llama3-8b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(32);
  StrategyChoice c;
  c.zero = 1;
  c.microBatch = 1;
  Workload w = fromStrategy(model, cluster, training, c).workload;
  ComputeModel compute = computeModelFor(cluster, training);
  auto exposed = [&](bool grads, bool params) {
    EstimateOptions o;
    o.overlapGradReduce = grads;
    o.overlapParamGather = params;
    return estimate(w, compute, o);
  };
  Estimate both = exposed(true, true), gradsOnly = exposed(true, false),
           paramsOnly = exposed(false, true), neither = exposed(false, false);
  const RankTime &t = neither.time[0];
  ASSERT_EQ(neither.dpExposed, t.dpComm); // nothing hidden
  // The parameters' share of the traffic, hidden in the forward or not.
  double gatherHidden = gradsOnly.dpExposed - both.dpExposed;
  double reduceHidden = paramsOnly.dpExposed - both.dpExposed;
  EXPECT_GT(gatherHidden, 0);
  EXPECT_GT(reduceHidden, 0);
  EXPECT_NEAR(neither.dpExposed - both.dpExposed, gatherHidden + reduceHidden, 1e-12);
  // Each window hides at most its own length (less the slowdown it pays).
  EXPECT_LE(gatherHidden, t.f + 1e-12);
  EXPECT_LE(reduceHidden, t.b + t.w + 1e-12);
  EXPECT_EQ(both.time[0].dpComm, t.dpComm); // the traffic is the same
}

TEST(Estimate, TorchDdpOverlapsOnlyWithoutAPipeline) {
  // Megatron-LM of 2021 ran PyTorch's DDP (reduction under the last backward)
  // only without a pipeline, its local DDP (after the drain) otherwise.
  spec::Model model = spec::loadModel("megatron-7.5b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(64);
  ComputeModel compute = computeModelFor(cluster, training);
  EstimateOptions rule, always, never = published::afterTheDrain();
  rule.overlapGradReduceOnlyWithoutPipeline = true;
  rule.overlapParamGather = always.overlapParamGather = false;
  for (int64_t pp : {1, 2}) {
    Workload w = fromStrategy(model, cluster, training, published::megatron2021(4, pp, 1)).workload;
    double got = estimate(w, compute, rule).dpExposed;
    double overlapped = estimate(w, compute, always).dpExposed;
    double after = estimate(w, compute, never).dpExposed;
    EXPECT_LT(overlapped, after) << pp;
    EXPECT_EQ(got, pp == 1 ? overlapped : after) << pp;
  }
}

TEST(Estimate, AsyncTpBackwardHidesOnlyTheInputGradientReduction) {
  // Without Transformer Engine's overlap, a column-parallel linear still
  // reduces its input gradient beside its weight-gradient GEMM (Megatron-LM
  // since 2021-09): of a layer part's two all-reduces (forward output,
  // backward input gradient) one hides, in part, and the rest is unchanged.
  spec::Model model = spec::loadModel("llama3-70b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=2");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(16);
  ComputeModel compute = computeModelFor(cluster, training);
  auto tpComm = [&](bool sync, bool sp, bool overlap) {
    StrategyChoice c;
    c.tp = 8;
    c.pp = 2;
    c.zero = 1;
    c.sequenceParallel = sp;
    c.tpCommOverlap = overlap;
    c.syncTpBackward = sync;
    WorkloadResult w = fromStrategy(model, cluster, training, c);
    EXPECT_TRUE(w.ok()) << w.error;
    return estimate(w.workload, compute, EstimateOptions{}).time[0].tpComm;
  };
  for (bool sp : {false, true}) {
    double sync = tpComm(true, sp, false), async = tpComm(false, sp, false);
    EXPECT_LT(async, sync) << "sp=" << sp;
    // The forward's reduction (and, with sequence parallelism, the regather)
    // still waits; only the backward's reduction hides, and pays the
    // slowdown of what it runs beside: over half stays exposed, over two
    // thirds with the regather.
    EXPECT_GT(async, sync * (sp ? 2.0 / 3.0 : 0.5)) << "sp=" << sp;
  }
  // Under Transformer Engine's overlap the flag changes nothing.
  EXPECT_EQ(tpComm(true, true, true), tpComm(false, true, true));
}

/// One strategy on a catalog model and cluster, estimated before and after
/// `change` (default training, the cluster's compute model).
struct BeforeAfter {
  ComputeModel compute;
  WorkloadResult before, after;
  Estimate a, b;
};
BeforeAfter estimateChange(const char *modelName, const char *clusterName, StrategyChoice c,
                           void (*change)(StrategyChoice &)) {
  spec::Model model = spec::loadModel(modelName);
  spec::Cluster cluster = spec::loadCluster(clusterName);
  spec::Training training = spec::defaultTraining(model);
  BeforeAfter r{computeModelFor(cluster, training), fromStrategy(model, cluster, training, c), {},
                {}, {}};
  change(c);
  r.after = fromStrategy(model, cluster, training, c);
  EXPECT_TRUE(r.before.ok() && r.after.ok()) << r.before.error << r.after.error;
  if (r.before.ok() && r.after.ok()) {
    r.a = estimate(r.before.workload, r.compute);
    r.b = estimate(r.after.workload, r.compute);
  }
  return r;
}
} // namespace

TEST(Estimate, OffloadedOptimizerLeavesTheGpuAndStepsOnTheHost) {
  // ZeRO-Offload: no optimizer bytes on the GPU; the step moves this rank's
  // gradient shard down and its weights up over the host link and runs the
  // update through host memory, at the catalog's DGX H100 figures (64 and
  // 77 GB/s per GPU).
  StrategyChoice c;
  c.tp = 8;
  c.zero = 1;
  BeforeAfter r = estimateChange("llama3-8b", "dgx-h100:nodes=1", c,
                                 [](StrategyChoice &s) { s.offloadOptimizer = true; });
  ASSERT_TRUE(r.before.ok() && r.after.ok());
  const Estimate &a = r.a, &b = r.b;
  EXPECT_GT(a.memory[0].optim, 0);
  EXPECT_EQ(b.memory[0].optim, 0);
  EXPECT_LT(b.peakMemoryBytes, a.peakMemoryBytes);
  // dp = 1: the rank updates all of its tp shard.
  double params = double(spec::countParameters(spec::loadModel("llama3-8b")).total()) / 8;
  // Link bytes per parameter: the fp32 gradient down, the bf16 weight up.
  // Host bytes: norm (4), Adam on the fp32 gradient and master + moments
  // (4 + 2 x 12), master to bf16 (4 + 2).
  double expected = params * (4 + 2) / 64e9 + params * (4 + 28 + 6) / 77e9;
  EXPECT_NEAR(b.optimizer, expected, 0.02 * expected);
  EXPECT_GT(b.optimizer, a.optimizer);
}

TEST(Estimate, RecomputationOnTheFirstRanksOnly) {
  // Full recomputation on pipeline ranks 0-1 of 4: they pay the forward again
  // and keep only layer inputs; ranks 2-3 keep everything, as without it.
  spec::Model model = spec::loadModel("llama3-70b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  ComputeModel compute = computeModelFor(cluster, training);
  StrategyChoice c;
  c.tp = 8;
  c.pp = 4;
  c.recompute = Recompute::Full;
  c.recomputeRanks = 2;
  WorkloadResult partial = fromStrategy(model, cluster, training, c);
  c.recomputeRanks = 0;
  WorkloadResult everywhere = fromStrategy(model, cluster, training, c);
  c.recompute = Recompute::None;
  WorkloadResult nowhere = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(partial.ok() && everywhere.ok() && nowhere.ok()) << partial.error;
  Estimate p = estimate(partial.workload, compute), all = estimate(everywhere.workload, compute),
           none = estimate(nowhere.workload, compute);
  for (int r : {0, 1}) {
    EXPECT_DOUBLE_EQ(p.time[r].recompute, all.time[r].recompute) << r;
    EXPECT_DOUBLE_EQ(p.memory[r].activations, all.memory[r].activations) << r;
  }
  for (int r : {2, 3}) {
    EXPECT_EQ(p.time[r].recompute, 0) << r;
    EXPECT_DOUBLE_EQ(p.memory[r].activations, none.memory[r].activations) << r;
  }
  EXPECT_GT(p.time[0].recompute, 0);

  c.recompute = Recompute::Full;
  c.recomputeRanks = 4; // must leave some rank out
  EXPECT_NE(fromStrategy(model, cluster, training, c).error.find("0 < that < pp=4"),
            std::string::npos);
}

TEST(Estimate, UnfusedGradientAccumulationAddsOneBufferPassPerMicroBatch) {
  // Without gradient_accumulation_fusion each micro-batch's weight gradients
  // are added to the buffer by their own kernels: per local parameter, read
  // the buffer and the gradient and write the buffer (2 + 2 + 2 bytes in
  // 16-bit training), charged to the weight-gradient pass.
  StrategyChoice c;
  c.tp = 4;
  BeforeAfter r = estimateChange("megatron-7.5b", "dgx-a100:nodes=4", c,
                                 [](StrategyChoice &s) { s.fusedGradAccumulation = false; });
  ASSERT_TRUE(r.before.ok() && r.after.ok());
  const Estimate &a = r.a, &b = r.b;
  const ComputeModel &compute = r.compute;
  double localParams = 0, tensors = 0;
  for (const Part &p : r.after.workload.parts) {
    localParams += double(p.count) * double(p.params) / p.shards.gatheredParams;
    bool layer = p.kind == PartKind::Attention || p.kind == PartKind::Mlp;
    tensors += p.params > 0 ? double(p.count) * (layer ? 6 : 2) : 0;
  }
  double expected = compute.memorySeconds(localParams * 6) + tensors * compute.kernelLatency();
  EXPECT_NEAR(b.time[0].w - a.time[0].w, expected, 1e-9 * expected);
  EXPECT_EQ(b.time[0].f, a.time[0].f);
  EXPECT_EQ(b.time[0].b, a.time[0].b);
}

TEST(Estimate, LossScalingCostsTheOptimizerAnUnscalePass) {
  // fp16 upcasts its 16-bit gradients (2 + 4 bytes a parameter), then
  // unscales and checks them (read and write, 8) before the step; bf16's
  // gradients are fp32 already and need neither: 52 against 38 bytes.
  spec::Model model = spec::loadModel("megatron-1.7b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=1");
  spec::Training training = spec::defaultTraining(model);
  ComputeModel compute = computeModelFor(cluster, training);
  StrategyChoice c;
  training.set_precision(spec::FP16_MIXED);
  Estimate fp16 = estimate(fromStrategy(model, cluster, training, c).workload, compute);
  training.set_precision(spec::BF16_MIXED);
  Estimate bf16 = estimate(fromStrategy(model, cluster, training, c).workload, compute);
  EXPECT_NEAR(fp16.optimizer / bf16.optimizer, 52.0 / 38.0, 1e-9);
}

// DualPipe (DeepSeek-V3 report, Sec. 3.2.1 and Table 2): rank r holds layer
// chunk r and, for the micro-batches fed from the other end, chunk p - 1 - r;
// p + 1 micro-batches' activations; a forward beside a backward of the other
// direction hides its expert all-to-all.
namespace {
struct DualPipeCase {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
  StrategyChoice choice;
};
DualPipeCase llama8bOnFourPipelineRanks() {
  DualPipeCase d{spec::loadModel("llama3-8b"), spec::loadCluster("dgx-h100:nodes=4"), {}, {}};
  d.training = spec::defaultTraining(d.model);
  d.training.set_global_batch(64); // dp 8 x 8 micro-batches
  d.choice.tp = 1;
  d.choice.pp = 4;
  d.choice.recompute = Recompute::None;
  return d;
}
Workload workloadOf(const DualPipeCase &d, Schedule schedule) {
  StrategyChoice c = d.choice;
  c.schedule = schedule;
  WorkloadResult w = fromStrategy(d.model, d.cluster, d.training, c);
  EXPECT_TRUE(w.ok()) << w.error;
  return w.workload;
}
} // namespace

TEST(DualPipe, RanksHoldBothChunksAndPPlusOneMicroBatches) {
  DualPipeCase d = llama8bOnFourPipelineRanks();
  Workload one = workloadOf(d, Schedule::OneFOneB), dual = workloadOf(d, Schedule::DualPipe);
  const int64_t p = d.choice.pp;
  MemoryOptions options;
  for (int64_t r = 0; r < p; ++r) {
    MemoryBreakdown a = rankMemory(one, r, options), b = rankMemory(one, p - 1 - r, options);
    MemoryBreakdown m = rankMemory(dual, r, options);
    EXPECT_DOUBLE_EQ(m.params, a.params + b.params) << "rank " << r;
    EXPECT_DOUBLE_EQ(m.grads, a.grads + b.grads) << "rank " << r;
    EXPECT_DOUBLE_EQ(m.optim, a.optim + b.optim) << "rank " << r;
    EXPECT_EQ(m.inflight, p + 1);
    // 1F1B's rank r holds p - r micro-batches of its own chunk; DualPipe's
    // p + 1 are of either chunk.
    double perA = a.activations / double(p - r), perB = b.activations / double(r + 1);
    EXPECT_NEAR(m.activations, (perA + perB) / 2 * double(p + 1), 1e-6 * m.activations);
  }
}

TEST(DualPipe, RanksRunTheMeanOfTheirTwoChunks) {
  DualPipeCase d = llama8bOnFourPipelineRanks();
  Workload one = workloadOf(d, Schedule::OneFOneB), dual = workloadOf(d, Schedule::DualPipe);
  ComputeModel compute = computeModelFor(d.cluster, d.training);
  Estimate a = estimate(one, compute), b = estimate(dual, compute);
  const int64_t p = d.choice.pp;
  // The head makes 1F1B's last rank the slowest; DualPipe's end ranks each
  // run the embedding's chunk and the head's, half the time each.
  ASSERT_GT(a.time[p - 1].f, a.time[0].f);
  for (int64_t r = 0; r < p; ++r) {
    const RankTime &x = a.time[r], &y = a.time[p - 1 - r], &t = b.time[r];
    EXPECT_NEAR(t.f, (x.f + y.f) / 2, 1e-12) << "rank " << r;
    EXPECT_NEAR(t.b + t.w, (x.b + x.w + y.b + y.w) / 2, 1e-12) << "rank " << r;
    EXPECT_NEAR(t.optimizer, x.optimizer + y.optimizer, 1e-12) << "rank " << r;
  }
  EXPECT_DOUBLE_EQ(b.time[0].f, b.time[p - 1].f);
  EXPECT_NEAR(b.hardwareFlops, a.hardwareFlops, 1e-9 * a.hardwareFlops);
  // Closed form (Table 2): (p/2 - 1)(F&B + B - 3W), F&B run as F + B, plus
  // the hops' latencies (microseconds) of filling and draining.
  const RankTime &s = b.time[0];
  double fwd = s.f + s.tpComm / 2 + s.epComm / 2 + s.p2p / 2;
  double bwd = s.b + s.recompute + s.tpComm / 2 + s.cpComm + s.epComm / 2 + s.p2p / 2;
  double closed = double(p / 2 - 1) * (fwd + 2 * bwd - s.w);
  EXPECT_GE(b.bubble, closed);
  EXPECT_LT(b.bubble, closed + 1e-4);
}

TEST(DualPipe, PairedChunksHideExpertAllToAll) {
  spec::Model model = spec::loadModel("mixtral-8x7b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=8");
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(256); // dp 8 x 32 micro-batches
  StrategyChoice c;
  c.tp = 2;
  c.pp = 4;
  c.ep = 8;
  WorkloadResult one = fromStrategy(model, cluster, training, c);
  c.schedule = Schedule::DualPipe;
  WorkloadResult dual = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(one.ok() && dual.ok()) << one.error << dual.error;
  ComputeModel compute = computeModelFor(cluster, training);
  Estimate a = estimate(one.workload, compute), b = estimate(dual.workload, compute);
  ASSERT_GT(a.time[1].epComm, 0);
  // The p unpaired micro-batches of 32 expose all of theirs; the rest only
  // what the overlap slows the compute by.
  EXPECT_LT(b.time[1].epComm, 0.75 * a.time[1].epComm);
  EXPECT_GT(b.time[1].epComm, 4.0 / 32 * a.time[1].epComm);
}

TEST(DualPipe, RefusesShapesItCannotRun) {
  DualPipeCase d = llama8bOnFourPipelineRanks();
  auto refused = [&](StrategyChoice c, const spec::Training &t, const char *needle) {
    c.schedule = Schedule::DualPipe;
    WorkloadResult w = fromStrategy(d.model, d.cluster, t, c);
    EXPECT_FALSE(w.ok());
    EXPECT_NE(w.error.find(needle), std::string::npos) << w.error;
    EXPECT_FALSE(w.hint.empty()) << w.error;
  };
  StrategyChoice c = d.choice;
  c.vpp = 2;
  refused(c, d.training, "even pp and vpp=1, not pp=4 vpp=2");
  c = d.choice;
  c.pp = 1;
  c.tp = 8;
  refused(c, d.training, "even pp and vpp=1, not pp=1");
  spec::Training few = d.training;
  few.set_global_batch(48); // 6 micro-batches < 2p
  refused(d.choice, few, "at least 2 x pp = 8; got 6");
  spec::Training odd = d.training;
  odd.set_global_batch(72); // 9 micro-batches
  refused(d.choice, odd, "even number of micro-batches per step");
}
