//===- MemoryTest.cpp - memory against the published closed forms ---------===//
//
// Activations: Korthikanti et al. 2022 (VALIDATION.md), per transformer layer
// (attention part + MLP part), GPT shapes with dropout and no flash attention.
// Model states: Rajbhandari et al. 2020 (ZeRO), bytes per parameter.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/CostModel/Memory.h"

#include <gtest/gtest.h>

using namespace loom;
using namespace loom::cost;

namespace {

struct GptShape {
  int64_t s, b, h, a, t;
};

/// The attention and MLP parts of one GPT layer (4h GELU MLP, MHA).
std::pair<Part, Part> gptLayer(const GptShape &g, bool sp, bool flash) {
  PartShape s;
  s.microBatch = g.b;
  s.seq = g.s;
  s.hidden = g.h;
  s.heads = s.kvHeads = g.a;
  s.headDim = g.h / g.a;
  s.ffn = 4 * g.h;
  s.tp = g.t;
  s.sequenceParallel = sp;
  s.flashAttention = flash;
  s.dropout = true;
  Part attn, mlp;
  attn.kind = PartKind::Attention;
  attn.shape = s;
  mlp.kind = PartKind::Mlp;
  mlp.shape = s;
  return {attn, mlp};
}

double layerBytes(const GptShape &g, bool sp, bool flash, Recompute rc) {
  auto [attn, mlp] = gptLayer(g, sp, flash);
  return activationBytes(attn, rc) + activationBytes(mlp, rc);
}

// 24 shapes: SC'21 rows and Korthikanti's Table 3 models at several t, b.
const GptShape kShapes[] = {
    {2048, 1, 2304, 24, 1},  {2048, 1, 2304, 24, 2},   {2048, 4, 3072, 32, 2},
    {2048, 1, 4096, 32, 4},  {2048, 2, 4096, 32, 8},   {2048, 1, 6144, 48, 8},
    {2048, 1, 8192, 64, 8},  {2048, 1, 10240, 80, 8},  {2048, 1, 12288, 96, 8},
    {2048, 1, 16384, 128, 8},{2048, 1, 20480, 128, 8}, {2048, 1, 25600, 160, 8},
    {4096, 1, 8192, 64, 8},  {4096, 2, 12288, 96, 4},  {8192, 1, 8192, 64, 8},
    {1024, 8, 2048, 16, 1},  {1024, 8, 2048, 16, 2},   {512, 16, 1024, 16, 4},
    {2048, 1, 12288, 96, 16},{2048, 3, 5120, 40, 4},   {2048, 1, 18432, 144, 8},
    {2048, 1, 14336, 112, 8},{2048, 1, 25600, 160, 4}, {128, 32, 768, 12, 2},
};

class KorthikantiClosedForms : public ::testing::TestWithParam<GptShape> {};

TEST_P(KorthikantiClosedForms, EveryVariantMatches) {
  const GptShape g = GetParam();
  double s = g.s, b = g.b, h = g.h, a = g.a, t = g.t;
  double sbh = s * b * h;
  // No parallelism (t = 1 rows) and tensor parallelism.
  EXPECT_DOUBLE_EQ(layerBytes(g, false, false, Recompute::None),
                   sbh * (10 + 24 / t + 5 * a * s / (h * t)));
  if (g.t == 1)
    EXPECT_DOUBLE_EQ(layerBytes(g, false, false, Recompute::None), sbh * (34 + 5 * a * s / h));
  // Tensor + sequence parallel.
  EXPECT_DOUBLE_EQ(layerBytes(g, true, false, Recompute::None), sbh / t * (34 + 5 * a * s / h));
  // Selective recomputation, with and without sequence parallelism.
  EXPECT_DOUBLE_EQ(layerBytes(g, true, false, Recompute::Selective), 34 * sbh / t);
  EXPECT_DOUBLE_EQ(layerBytes(g, false, false, Recompute::Selective), sbh * (10 + 24 / t));
  // Flash attention removes the 5as/h term as selective recomputation does.
  EXPECT_DOUBLE_EQ(layerBytes(g, true, true, Recompute::None), 34 * sbh / t);
  // Full recomputation keeps the layer input only.
  EXPECT_DOUBLE_EQ(layerBytes(g, true, false, Recompute::Full), 2 * sbh);
  EXPECT_DOUBLE_EQ(layerBytes(g, false, false, Recompute::Full), 2 * sbh);
}

INSTANTIATE_TEST_SUITE_P(Shapes, KorthikantiClosedForms, ::testing::ValuesIn(kShapes));

TEST(Activations, ContextParallelSplitsEverything) {
  GptShape g{8192, 1, 8192, 64, 8};
  auto [attn, mlp] = gptLayer(g, true, true);
  double whole = activationBytes(attn, Recompute::None) + activationBytes(mlp, Recompute::None);
  attn.shape.cp = mlp.shape.cp = 4;
  double split = activationBytes(attn, Recompute::None) + activationBytes(mlp, Recompute::None);
  EXPECT_DOUBLE_EQ(split * 4, whole);
}

TEST(Activations, GqaAndSwigluFollowTheirWidths) {
  // Llama 3 70B layer, t = 8, SP, flash, no dropout: attention keeps norm
  // input, QKV input (2 each, /t), Q and projection input (2 x 8192), K and V
  // (2 x 1024 each), all /t; the SwiGLU MLP keeps its input pair and
  // 3 x 2 x 28672 / t.
  PartShape s;
  s.microBatch = 1;
  s.seq = 8192;
  s.hidden = 8192;
  s.heads = 64;
  s.kvHeads = 8;
  s.headDim = 128;
  s.ffn = 28672;
  s.gated = true;
  s.tp = 8;
  s.sequenceParallel = true;
  Part attn{PartKind::Attention};
  attn.shape = s;
  Part mlp{PartKind::Mlp};
  mlp.shape = s;
  double tokens = 8192;
  EXPECT_DOUBLE_EQ(activationBytes(attn, Recompute::None),
                   tokens * (4 * 8192 + 2 * (8192 + 2 * 1024 + 8192)) / 8);
  EXPECT_DOUBLE_EQ(activationBytes(mlp, Recompute::None),
                   tokens * (4 * 8192 + 6 * 28672) / 8);
}

TEST(Pipeline, InflightMicroBatches) {
  // 1F1B: rank r holds p - r; never more than the micro-batches there are.
  EXPECT_EQ(inflightMicroBatches(Schedule::OneFOneB, 8, 1, 0, 64), 8);
  EXPECT_EQ(inflightMicroBatches(Schedule::OneFOneB, 8, 1, 7, 64), 1);
  EXPECT_EQ(inflightMicroBatches(Schedule::OneFOneB, 8, 1, 0, 4), 4);
  EXPECT_EQ(inflightMicroBatches(Schedule::GPipe, 8, 1, 3, 64), 64);
  EXPECT_EQ(inflightMicroBatches(Schedule::ZeroBubbleH1, 4, 1, 0, 16), 4);
  EXPECT_EQ(inflightMicroBatches(Schedule::ZeroBubbleH2, 4, 1, 0, 16), 7);
  // Interleaved, p = 4, v = 2: rank 0 warms up (4-0-1)*2 + (2-1)*4 = 10 chunks.
  EXPECT_EQ(inflightMicroBatches(Schedule::Interleaved, 4, 2, 0, 16), 11);
  EXPECT_EQ(inflightMicroBatches(Schedule::Interleaved, 4, 2, 3, 16), 5);
}

/// Model-state bytes per parameter on rank 0 of a pure data-parallel plan.
double stateBytesPerParam(int64_t zero, int64_t dp, spec::Precision precision) {
  spec::Model model = spec::loadModel("megatron-1.7b");
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=" + std::to_string(dp / 8));
  spec::Training training = spec::defaultTraining(model);
  training.set_global_batch(dp * 4);
  training.set_precision(precision);
  StrategyChoice c;
  c.zero = zero;
  WorkloadResult r = fromStrategy(model, cluster, training, c);
  EXPECT_TRUE(r.ok()) << r.error;
  MemoryBreakdown m = rankMemory(r.workload, 0);
  double params = double(spec::countParameters(model).total());
  return (m.params + m.grads + m.optim) / params;
}

TEST(ModelStates, MegatronBytesPerParameter) {
  // Megatron-LM's table (docs/user-guide/features/dist_optimizer.md): without
  // and with its distributed optimizer (ZeRO-1), fp16 20 and 4 + 16/d, bf16
  // with fp32 gradients 18 and 6 + 12/d, fp32 16 and 8 + 8/d. ZeRO-2 shards
  // the gradients as well, ZeRO-3 everything.
  struct Row {
    spec::Precision precision;
    double weights, grads, optimizer; // optimizer: with the fp32 gradient copy of fp16
  };
  for (Row row : {Row{spec::FP16_MIXED, 2, 2, 16}, Row{spec::BF16_MIXED, 2, 4, 12},
                  Row{spec::FP32_FULL, 4, 4, 8}})
    for (int64_t nd : {8, 64}) {
      double d = double(nd), w = row.weights, g = row.grads, o = row.optimizer;
      auto bytes = [&](int64_t zero) { return stateBytesPerParam(zero, nd, row.precision); };
      EXPECT_DOUBLE_EQ(bytes(0), w + g + o) << spec::Precision_Name(row.precision);
      EXPECT_DOUBLE_EQ(bytes(1), w + g + o / d) << spec::Precision_Name(row.precision);
      EXPECT_DOUBLE_EQ(bytes(2), w + (g + o) / d) << spec::Precision_Name(row.precision);
      EXPECT_DOUBLE_EQ(bytes(3), (w + g + o) / d) << spec::Precision_Name(row.precision);
    }
  EXPECT_DOUBLE_EQ(stateBytesPerParam(0, 8, spec::FP16_MIXED), 20.0);
  EXPECT_DOUBLE_EQ(stateBytesPerParam(1, 8, spec::BF16_MIXED), 6.0 + 12.0 / 8);
  EXPECT_DOUBLE_EQ(stateBytesPerParam(1, 8, spec::FP32_FULL), 8.0 + 8.0 / 8);
}

TEST(ModelStates, TensorAndPipelineDivideTheWeights) {
  spec::Model model = spec::loadModel("llama3-70b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=8");
  spec::Training training = spec::defaultTraining(model);
  StrategyChoice c;
  c.tp = 8;
  c.pp = 4;
  WorkloadResult r = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(r.ok()) << r.error;
  double total = 0;
  for (int64_t rank = 0; rank < 4; ++rank)
    total += rankMemory(r.workload, rank).params;
  // All weights, 2 bytes each, split 8 ways by tp (every part is tp-sharded).
  EXPECT_DOUBLE_EQ(total * 8, 2.0 * double(spec::countParameters(model).total()));
}

// Tied embeddings over a pipeline: the head's rank keeps a copy of the word
// embedding, with gradients and optimizer state of its own, and the embedding's
// and the head's ranks all-reduce its gradients after the data-parallel
// reduction (Megatron-LM's embedding group). Untied, that rank has the output
// layer instead; on one rank (no pipeline, ZB-V's V) there is no copy.
TEST(ModelStates, TiedEmbeddingCopyOnTheHeadsRank) {
  spec::Model tied = spec::loadModel("megatron-18.4b");
  ASSERT_TRUE(tied.tied_embeddings());
  spec::Cluster cluster = spec::loadCluster("dgx-a100:nodes=4");
  spec::Training training = spec::defaultTraining(tied);
  training.set_global_batch(64);
  auto price = [&](const spec::Model &model, int64_t pp, cost::Schedule schedule) {
    StrategyChoice c;
    c.tp = 8;
    c.pp = pp;
    c.schedule = schedule;
    c.vpp = schedule == Schedule::ZeroBubbleV ? 2 : 1;
    WorkloadResult r = fromStrategy(model, cluster, training, c);
    EXPECT_TRUE(r.ok()) << r.error;
    return std::pair{r.workload, estimate(r.workload, computeModelFor(cluster, training))};
  };
  const double copy = double(tied.vocab_size() * tied.hidden_size()) / 8; // per tp rank
  auto [w, e] = price(tied, 4, Schedule::OneFOneB);
  EXPECT_EQ(w.tiedCopyParams, int64_t(tied.vocab_size() * tied.hidden_size()));
  // 10 layers on each rank; the last holds the copy (2 bytes a weight) and
  // the final norm besides.
  MemoryBreakdown middle = rankMemory(w, 2), last = rankMemory(w, 3);
  EXPECT_GT(last.params - middle.params, 2 * copy);
  EXPECT_LT(last.params - middle.params, 1.001 * 2 * copy);
  EXPECT_DOUBLE_EQ(last.optim / last.params, middle.optim / middle.params);

  // The same model untied holds the output layer there: the same bytes.
  spec::Model untied = tied;
  untied.set_tied_embeddings(false);
  auto [uw, ue] = price(untied, 4, Schedule::OneFOneB);
  EXPECT_EQ(uw.tiedCopyParams, 0);
  EXPECT_DOUBLE_EQ(rankMemory(uw, 3).params, last.params);
  // Its step has no embedding all-reduce: the two end ranks wait for the
  // tied one, the middle ones do not.
  EXPECT_GT(e.time[0].dpExposed, ue.time[0].dpExposed);
  EXPECT_GT(e.time[3].dpExposed, ue.time[3].dpExposed);
  EXPECT_DOUBLE_EQ(e.time[2].dpExposed, ue.time[2].dpExposed);
  // fp16 gradients of the rank's 1/8 of the copy between two ranks on
  // different nodes (pp spans nodes): at least their bytes over HDR's 25 GB/s.
  EXPECT_GT(e.time[0].dpExposed - ue.time[0].dpExposed, 2 * copy / 25e9);

  for (auto [pp, schedule] : {std::pair{int64_t(1), Schedule::OneFOneB},
                              std::pair{int64_t(2), Schedule::ZeroBubbleV}}) {
    auto [one, unused] = price(tied, pp, schedule);
    EXPECT_EQ(one.tiedCopyParams, 0) << pp;
  }
}

TEST(ModelStates, ExpertsShardOverEpAndReduceOutsideIt) {
  spec::Model model = spec::loadModel("mixtral-8x7b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  StrategyChoice c;
  c.ep = 8;
  c.zero = 1;
  WorkloadResult r = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(r.ok()) << r.error;
  const spec::Block &block = model.blocks(0);
  double routed = double(spec::routedExpertParameters(model, block));
  double ffn = double(spec::ffnParameters(model, block));
  double dp = 32, ep = 8;
  for (const Part &part : r.workload.parts) {
    if (part.kind != PartKind::Moe)
      continue;
    // Weights: experts over ep, the rest whole. Optimizer: experts over all
    // 32 ranks (ep x the 4 outside it), the rest over the 32 dp ranks.
    EXPECT_DOUBLE_EQ(ffn / part.shards.params, routed / ep + (ffn - routed));
    EXPECT_DOUBLE_EQ(ffn / part.shards.optim, routed / (ep * (dp / ep)) + (ffn - routed) / dp);
  }
}

TEST(Memory, LastStageHoldsTheLogitsFirstHoldsTheMostMicroBatches) {
  spec::Model model = spec::loadModel("llama3-8b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=4");
  spec::Training training = spec::defaultTraining(model);
  StrategyChoice c;
  c.tp = 4;
  c.pp = 4;
  WorkloadResult r = fromStrategy(model, cluster, training, c);
  ASSERT_TRUE(r.ok()) << r.error;
  MemoryBreakdown first = rankMemory(r.workload, 0);
  MemoryBreakdown last = rankMemory(r.workload, 3);
  EXPECT_EQ(first.inflight, 4);
  EXPECT_EQ(last.inflight, 1);
  EXPECT_GT(first.activations, last.activations);
  // The last stage's activations include fp32 logits: 4 * s * b * v / t.
  EXPECT_GT(last.activations, 4.0 * 4096 * 128256 / 4);
}

TEST(Strategy, BadDegreesNameTheConstraint) {
  spec::Model model = spec::loadModel("llama3-70b");
  spec::Cluster cluster = spec::loadCluster("dgx-h100:nodes=8");
  spec::Training training = spec::defaultTraining(model);
  auto err = [&](StrategyChoice c) { return fromStrategy(model, cluster, training, c).error; };
  StrategyChoice c;
  c.tp = 16;
  EXPECT_EQ(err(c), "kv heads (8) are not divisible by tp=16");
  c = {};
  c.tp = 3;
  EXPECT_EQ(err(c), "tp x pp x cp = 3 does not divide the 64 GPUs");
  c = {};
  c.dp = 4;
  c.tp = 8;
  EXPECT_EQ(err(c), "dp x tp x pp x cp = 4 x 8 x 1 x 1 = 32 ranks, but the cluster has 64 GPUs");
  c = {};
  c.pp = 64;
  c.vpp = 2;
  EXPECT_EQ(err(c), "pp x vpp = 128 stages but the model has 80 layers");
  c = {};
  c.pp = 8;
  c.vpp = 3;
  EXPECT_EQ(err(c), "interleaving needs layers (80) divisible by pp x vpp (24)");
  c = {};
  c.ep = 2;
  EXPECT_EQ(err(c), "ep=2 needs a model with experts");
}

} // namespace

namespace {
TEST(Activations, CapacityFactorPadsExpertBuffers) {
  PartShape s;
  s.microBatch = 1;
  s.seq = 4096;
  s.hidden = 4096;
  s.ffn = 14336;
  s.gated = true;
  s.experts = 8;
  s.topK = 2;
  Part moe{PartKind::Moe};
  moe.shape = s;
  double dropless = activationBytes(moe, Recompute::None);
  moe.shape.capacityFactor = 1.25;
  double padded = activationBytes(moe, Recompute::None);
  // Only the routed terms grow: dispatch (2 x 2 x routed x h) and expert
  // activations (6 x routed x ffn), routed = tokens x top_k.
  double routed = 4096.0 * 2;
  EXPECT_DOUBLE_EQ(padded - dropless, 0.25 * routed * (4.0 * 4096 + 6.0 * 14336));
}
} // namespace
