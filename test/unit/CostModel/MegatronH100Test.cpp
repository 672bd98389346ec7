//===- MegatronH100Test.cpp - Megatron-Core's H100 weak-scaling table ------===//
//
// Megatron-LM's README (commit f2e5db402c, 2024-07, images/model_table.png)
// gives nine GPT runs of Megatron-Core r0.8.0 on DGX H100 nodes, weak-scaled
// from 48 to 6144 GPUs: vocabulary 131072, sequences of 4096 tokens, hidden
// size, heads, layers, t, p and batch per row, d = 48 throughout, and the
// measured TFLOP/s per GPU (bf16, MFU against 989) by Megatron's own count
// (num_floating_point_operations in megatron/training/training.py: 6N plus
// 12 L s h a token, the same as loom's). The runs overlap data-parallel
// (--overlap-grad-reduce, --overlap-param-gather, so the distributed
// optimizer) and tensor-parallel communication (--tp-comm-overlap, so
// sequence parallelism). The parameter counts (12 L h^2 plus two 131072 x h
// embeddings: 1.75B for "1.7B", 7.11B for "7.1B") say GeLU MLPs of 4h and
// untied embeddings. Micro-batch size and recomputation are not given: each
// row takes loom's best of micro-batch 1, 2 and 4, interleaving depths, and
// no or selective recomputation, as EstimateTest does for SC'21.
//
// loom was not tuned to these runs. They are its first end-to-end H100 check
// and show where its H100 pricing stands (docs/cost-model.md, "Megatron-Core
// on H100"): 13-30% optimistic on seven rows, most on the smallest models.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Spec/Spec.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>

using namespace loom;
using namespace loom::cost;

namespace {

struct Row {
  const char *name;
  int64_t heads, hidden, layers, t, p, gpus, batch;
  double tflops; // measured, per GPU
};

const Row kTable[] = {
    {"1.7B", 16, 2048, 24, 1, 1, 48, 192, 408.8},
    {"7.1B", 32, 4096, 30, 2, 1, 96, 192, 465.9},
    {"16B", 48, 6144, 32, 4, 1, 192, 192, 489.1},
    {"32B", 56, 7168, 48, 8, 1, 384, 192, 459.6},
    {"70B", 64, 8192, 84, 8, 2, 768, 384, 419.7},
    {"119B", 80, 10240, 92, 8, 4, 1536, 768, 420.5},
    {"177B", 96, 12288, 96, 8, 6, 2304, 1152, 432.8},
    {"314B", 128, 16384, 96, 8, 8, 3072, 1536, 474.4},
    {"462B", 144, 18432, 112, 8, 16, 6144, 3072, 459.9},
};

/// The catalog's megatron-1.7b (GPT: LayerNorm, biases, GeLU, dropout) at a
/// row's shape, bf16, with untied 131072-token embeddings.
spec::Model modelOf(const Row &row) {
  spec::Model m = spec::loadModel("megatron-1.7b");
  m.set_name(std::string("megatron-core-") + row.name);
  m.set_vocab_size(131072);
  m.set_hidden_size(uint32_t(row.hidden));
  m.set_max_seq_len(4096);
  m.set_dtype(spec::BF16);
  m.set_tied_embeddings(false);
  spec::Block *block = m.mutable_blocks(0);
  block->set_count(uint32_t(row.layers));
  block->mutable_attention()->set_heads(uint32_t(row.heads));
  block->mutable_mlp()->set_ffn_hidden(uint32_t(4 * row.hidden));
  return m;
}

struct Priced {
  Estimate estimate;
  int64_t mbs = 0, vpp = 0;
  Recompute recompute = Recompute::None;
};

Priced best(const Row &row) {
  spec::Model model = modelOf(row);
  spec::Cluster cluster = spec::loadCluster(fmt::format("dgx-h100:nodes={}", row.gpus / 8));
  spec::Training training = spec::defaultTraining(model);
  training.set_seq_len(4096);
  training.set_global_batch(uint64_t(row.batch));
  ComputeModel compute = computeModelFor(cluster, training);
  Priced out;
  for (Recompute recompute : {Recompute::None, Recompute::Selective})
    for (int64_t mbs : {1, 2, 4})
      for (int64_t vpp = 1; vpp <= (row.p > 1 ? row.layers / row.p : 1); ++vpp) {
        StrategyChoice c;
        c.tp = row.t;
        c.pp = row.p;
        c.vpp = vpp;
        c.zero = 1;
        c.microBatch = mbs;
        c.recompute = recompute;
        c.sequenceParallel = row.t > 1;
        c.tpCommOverlap = row.t > 1;
        WorkloadResult w = fromStrategy(model, cluster, training, c);
        if (!w.ok())
          continue;
        Estimate e = estimate(w.workload, compute, EstimateOptions{});
        if (e.fits && e.tflopsPerGpu > out.estimate.tflopsPerGpu)
          out = {e, mbs, vpp, recompute};
      }
  return out;
}

TEST(MegatronCoreH100, WeakScalingTable) {
  std::string table = "model   t   p  GPUs  batch  mbs vpp  recompute  measured   loom   error\n";
  int within10 = 0;
  double worst = 0;
  for (const Row &row : kTable) {
    Priced b = best(row);
    // Every row ran, so loom must find a configuration of it that fits.
    ASSERT_GT(b.mbs, 0) << row.name << ": nothing fits";
    double err = b.estimate.tflopsPerGpu / row.tflops - 1;
    table += fmt::format("{:<5} {:>3} {:>3} {:>5} {:>6} {:>4} {:>3}  {:<9} {:>8.1f} {:>6.1f} {:>+6.1f}%\n",
                         row.name, row.t, row.p, row.gpus, row.batch, b.mbs, b.vpp,
                         recomputeName(b.recompute), row.tflops, b.estimate.tflopsPerGpu, 100 * err);
    within10 += std::abs(err) <= 0.10;
    worst = std::max(worst, std::abs(err));
  }
  std::printf("%s%d of 9 rows within +-10%%, worst %.1f%%\n", table.c_str(), within10,
              100 * worst);
  // A record, not a target met: loom is optimistic on 7 of the 9 rows, by
  // 21-30% on the two smallest. Raise these bounds as the H100 pricing
  // improves; never loosen them.
  EXPECT_GE(within10, 2);
  EXPECT_LE(worst, 0.31);
}

} // namespace
