//===- FromStrategy.cpp - workload of a strategy tuple --------------------===//

#include "loom/CostModel/FromStrategy.h"

#include "loom/CostModel/Groups.h"
#include "loom/Search/AxisMapping.h"
#include "loom/Support/Checked.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

using namespace loom;
using namespace loom::cost;

ComputeModel loom::cost::computeModelFor(const spec::Cluster &cluster,
                                         const spec::Training &training) {
  const spec::GpuType *gpu = spec::findGpu(cluster, cluster.datacenters(0).node_groups(0).gpu());
  return ComputeModel::forGpu(*gpu, spec::peakTflops(*gpu, training.precision()),
                              gpu->hbm_gbytes_per_s());
}

std::vector<ComputeModel> loom::cost::computeModelsFor(const spec::Cluster &cluster,
                                                       const spec::Training &training) {
  std::vector<ComputeModel> out;
  for (const spec::GpuType *gpu : spec::nodeTypes(cluster).gpus)
    out.push_back(ComputeModel::forGpu(*gpu, spec::peakTflops(*gpu, training.precision()),
                                       gpu->hbm_gbytes_per_s()));
  return out;
}

Schedule loom::cost::effectiveSchedule(const StrategyChoice &c) {
  return c.vpp > 1 && c.schedule == Schedule::OneFOneB ? Schedule::Interleaved : c.schedule;
}

bool loom::cost::parseRecompute(const std::string &word, Recompute &out) {
  if (word == "none")
    out = Recompute::None;
  else if (word == "selective")
    out = Recompute::Selective;
  else if (word == "full")
    out = Recompute::Full;
  else
    return false;
  return true;
}

const char *loom::cost::recomputeName(Recompute recompute) {
  switch (recompute) {
  case Recompute::None:
    return "none";
  case Recompute::Selective:
    return "selective";
  case Recompute::Full:
    return "full";
  }
  return "?";
}

const char *loom::cost::scheduleName(Schedule schedule) {
  switch (schedule) {
  case Schedule::GPipe:
    return "gpipe";
  case Schedule::OneFOneB:
    return "1f1b";
  case Schedule::Interleaved:
    return "interleaved";
  case Schedule::ZeroBubbleH1:
    return "zb-h1";
  case Schedule::ZeroBubbleH2:
    return "zb-h2";
  case Schedule::ZeroBubbleAuto:
    return "zb-auto";
  case Schedule::Skip:
    return "skip";
  case Schedule::ZeroBubbleV:
    return "zb-v";
  case Schedule::DualPipe:
    return "dualpipe";
  }
  return "?";
}

namespace {

bool isGated(spec::Activation a) { return a == spec::SWIGLU || a == spec::GEGLU; }

} // namespace

static std::vector<LinkLevel> toLinks(const std::vector<spec::ClusterLevel> &levels) {
  std::vector<LinkLevel> links;
  for (const spec::ClusterLevel &level : levels)
    links.push_back({level.name, level.size, spec::effectiveGbps(*level.tier),
                     level.tier->latency_us(), level.tier->per_node(), level.cellDc});
  return links;
}

std::vector<LinkLevel> loom::cost::linkLevels(const spec::Cluster &cluster) {
  return toLinks(spec::clusterLevels(cluster));
}

WorkloadResult loom::cost::fromStrategy(const spec::Model &model,
                                        const spec::Cluster &cluster,
                                        const spec::Training &training,
                                        const StrategyChoice &c) {
  WorkloadResult result;
  auto fail = [&](std::string message, std::string hint = {}) {
    result.error = std::move(message);
    result.hint = std::move(hint);
    return result;
  };
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  if (levels.empty())
    return fail(fmt::format("cluster '{}' has nodes with different GPU counts; estimates "
                            "need one GPU count per node for now",
                            cluster.name()));
  spec::ClusterSize size = spec::clusterSize(cluster);
  int64_t gpus = int64_t(size.gpus);
  for (auto [name, value] : {std::pair<const char *, int64_t>{"tp", c.tp}, {"pp", c.pp},
                             {"vpp", c.vpp}, {"ep", c.ep}, {"cp", c.cp},
                             {"micro batch", c.microBatch}})
    if (value < 1)
      return fail(fmt::format("{}={} must be >= 1", name, value));
  if (c.zero < 0 || c.zero > 3)
    return fail(fmt::format("zero={} must be 0, 1, 2 or 3", c.zero));
  int64_t dp = c.dp;
  if (dp == 0) {
    int64_t others = productUpTo({c.tp, c.pp, c.cp});
    if (others == 0 || gpus % others != 0)
      return fail(fmt::format("tp x pp x cp = {} does not divide the {} GPUs", productText(others),
                              gpus));
    dp = gpus / others;
  }
  if (int64_t total = productUpTo({dp, c.tp, c.pp, c.cp}); total != gpus)
    return fail(fmt::format("dp x tp x pp x cp = {} x {} x {} x {} = {} ranks, but the "
                            "cluster has {} GPUs",
                            dp, c.tp, c.pp, c.cp, productText(total), gpus));
  if (dp % c.ep != 0)
    return fail(fmt::format("ep={} must divide dp={}", c.ep, dp));
  if (c.vpp > 1 && c.pp == 1)
    return fail(fmt::format("vpp={} needs pp > 1", c.vpp));
  if (c.recomputeRanks < 0 || (c.recomputeRanks > 0 && c.recomputeRanks >= c.pp))
    return fail(fmt::format("recomputation on the first {} pipeline ranks needs 0 < that < "
                            "pp={}",
                            c.recomputeRanks, c.pp));
  if (c.sequenceParallel && c.tp == 1)
    return fail("sequence parallelism needs tp > 1");

  int64_t layers = spec::numLayers(model);
  int64_t stages = c.pp * c.vpp;
  if (!c.stageLayers.empty()) {
    if (int64_t(c.stageLayers.size()) != stages ||
        (c.vpp > 1 && effectiveSchedule(c) != Schedule::Interleaved))
      return fail(fmt::format("an uneven partition needs one layer count per stage, pp x vpp "
                              "of them with interleaving: {} counts for pp={} vpp={}",
                              c.stageLayers.size(), c.pp, c.vpp));
    int64_t sum = 0;
    for (int64_t n : c.stageLayers) {
      if (n < 1)
        return fail("every pipeline stage needs at least one layer");
      sum += n;
    }
    if (sum != layers)
      return fail(fmt::format("stage layer counts add up to {}, the model has {} layers", sum,
                              layers));
  }
  if (!c.stageOrder.empty()) {
    std::vector<int64_t> sorted = c.stageOrder;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < int64_t(sorted.size()); ++i)
      if (sorted[i] != i || int64_t(sorted.size()) != c.pp)
        return fail(fmt::format("the stage order must be a permutation of the {} pp ranks",
                                c.pp));
  }
  if (!c.inflightLimit.empty()) {
    if ((c.schedule != Schedule::ZeroBubbleAuto && c.schedule != Schedule::Skip) ||
        int64_t(c.inflightLimit.size()) != c.pp)
      return fail(fmt::format("in-flight limits are zb-auto's or skip's, one per pipeline rank: {} "
                              "limits for schedule {} with pp={}",
                              c.inflightLimit.size(), scheduleName(c.schedule), c.pp));
    for (int64_t n : c.inflightLimit)
      if (n < 1)
        return fail("every pipeline rank must hold at least one micro-batch in flight");
  }
  if ((c.schedule == Schedule::ZeroBubbleAuto || c.schedule == Schedule::Skip) && c.vpp > 1)
    return fail(fmt::format("{} runs one stage per pipeline rank, not vpp={}",
                            scheduleName(c.schedule), c.vpp));
  if (c.schedule == Schedule::ZeroBubbleV && (c.pp < 2 || c.vpp != 2))
    return fail(fmt::format("zb-v runs two stages per pipeline rank in a V: it needs pp > 1 and "
                            "vpp=2, not pp={} vpp={}",
                            c.pp, c.vpp));
  if (c.schedule == Schedule::DualPipe && (c.pp < 2 || c.pp % 2 != 0 || c.vpp != 1))
    return fail(fmt::format("dualpipe feeds the pipeline from both ends: it needs an even pp "
                            "and vpp=1, not pp={} vpp={}",
                            c.pp, c.vpp),
                "use an even pp with vpp=1, or another schedule");
  if (c.schedule == Schedule::Skip) {
    const SkipRules &k = c.skip;
    if (!(k.maxSkipFraction >= 0 && k.maxSkipFraction <= 1 && k.minStageShare >= 0 &&
          k.minStageShare <= 1 && k.maxSwaps >= 0))
      return fail(fmt::format("skip rules need max-skip and min-share in [0, 1] and "
                              "max-swaps >= 0, got {}, {} and {}",
                              k.maxSkipFraction, k.minStageShare, k.maxSwaps));
    if (c.pp < 3)
      return fail(fmt::format("skip paths skip or reorder middle stages: pp={} has none",
                              c.pp));
  }
  if (c.pp > 1 && layers < stages)
    return fail(fmt::format("pp x vpp = {} stages but the model has {} layers", stages, layers));
  if (c.vpp > 1 && c.stageLayers.empty() && layers % stages != 0)
    return fail(fmt::format("{} needs layers ({}) divisible by pp x vpp ({})",
                            c.schedule == Schedule::ZeroBubbleV ? "zb-v" : "interleaving",
                            layers, stages));
  int64_t seq = training.seq_len();
  if (seq % c.cp != 0)
    return fail(fmt::format("seq_len ({}) is not divisible by cp={}", seq, c.cp));
  if (c.sequenceParallel && (seq / c.cp) % c.tp != 0)
    return fail(fmt::format("sequence parallelism needs seq_len/cp ({}) divisible by tp={}",
                            seq / c.cp, c.tp));
  int64_t globalBatch = training.global_batch();
  if (globalBatch % (dp * c.microBatch) != 0)
    return fail(fmt::format("global batch ({}) is not divisible by dp x micro batch = {} x {}",
                            globalBatch, dp, c.microBatch),
                fmt::format("use a global batch that is a multiple of {}, or another micro batch",
                            dp * c.microBatch));
  // Megatron-LM's interleaved schedule runs the micro-batches in groups of pp
  // through each virtual stage: it refused other counts in 2021
  // (megatron/schedules.py, commit de7dc40f88) and still does unless the group
  // size is changed (microbatch_group_size_per_vp_stage, default pp, in
  // megatron/core/pipeline_parallel/schedules.py). loom's schedule generator
  // builds the same order.
  if (int64_t microBatches = globalBatch / (dp * c.microBatch);
      effectiveSchedule(c) == Schedule::Interleaved && microBatches % c.pp != 0)
    return fail(fmt::format("the interleaved schedule needs the micro-batches per step ({} = "
                            "global batch {} / (dp {} x micro batch {})) divisible by pp={}",
                            microBatches, globalBatch, dp, c.microBatch, c.pp),
                fmt::format("use a global batch that is a multiple of dp x micro batch x pp = {}, "
                            "or vpp=1",
                            dp * c.microBatch * c.pp));
  // DualPipe splits the micro-batches between its two directions, and each
  // direction must fill the pipeline (deepseek-ai/DualPipe asserts both).
  if (int64_t microBatches = globalBatch / (dp * c.microBatch);
      c.schedule == Schedule::DualPipe && (microBatches % 2 != 0 || microBatches < 2 * c.pp))
    return fail(fmt::format("dualpipe needs an even number of micro-batches per step, at least "
                            "2 x pp = {}; got {} = global batch {} / (dp {} x micro batch {})",
                            2 * c.pp, microBatches, globalBatch, dp, c.microBatch),
                fmt::format("use a global batch that is a multiple of 2 x dp x micro batch = {} "
                            "and at least {}",
                            2 * dp * c.microBatch, 2 * c.pp * dp * c.microBatch));
  bool hasMoe = false;
  for (const spec::Block &block : model.blocks()) {
    spec::AttentionShape shape = spec::attentionShape(model, block);
    if (shape.heads % c.tp != 0)
      return fail(fmt::format("heads ({}) are not divisible by tp={}", shape.heads, c.tp));
    if (!shape.mla && shape.kvHeads % c.tp != 0)
      return fail(fmt::format("kv heads ({}) are not divisible by tp={}", shape.kvHeads, c.tp));
    if (block.has_moe()) {
      hasMoe = true;
      if (block.moe().experts() % c.ep != 0)
        return fail(fmt::format("experts ({}) are not divisible by ep={}",
                                block.moe().experts(), c.ep));
    } else if (block.mlp().ffn_hidden() % c.tp != 0) {
      return fail(fmt::format("ffn ({}) is not divisible by tp={}", block.mlp().ffn_hidden(), c.tp));
    }
  }
  if (c.ep > 1 && !hasMoe)
    return fail(fmt::format("ep={} needs a model with experts", c.ep));

  std::vector<search::PhysicalAxis> physical;
  for (const spec::ClusterLevel &level : levels)
    physical.push_back({level.name, level.size});
  search::Carving carving =
      search::carveAxes(physical, search::strategyAxes(c.tp, c.cp, c.ep, dp, c.pp, c.order));
  if (!carving.ok())
    return fail(carving.error);
  std::vector<LinkLevel> links = toLinks(levels);
  result.workload.mesh = carving.axes;

  Workload &w = result.workload;
  w.pp = c.pp;
  w.vpp = c.vpp;
  w.dp = dp;
  w.tp = c.tp;
  w.cp = c.cp;
  w.ep = c.ep;
  w.gpus = gpus;
  w.globalBatch = globalBatch;
  w.microBatch = c.microBatch;
  w.seq = seq;
  w.recompute = c.recompute;
  w.recomputeRanks = c.recomputeRanks;
  w.tpCommOverlap = c.tpCommOverlap && c.sequenceParallel;
  w.fusedGradAccumulation = c.fusedGradAccumulation;
  w.syncTpBackward = c.syncTpBackward;
  w.zero = c.zero;
  w.schedule = effectiveSchedule(c);
  w.inflightLimit = c.inflightLimit;
  w.skip = c.skip;
  bool fp32 = training.precision() == spec::FP32_FULL;
  w.setStateBytes(fp32, training.precision() == spec::FP16_MIXED,
                  training.optimizer() == spec::SGD, training.grad_reduce_in_bf16());
  w.hops = axisHops(links, carving.axes, "pp", c.stageOrder);
  w.multiDc = spansDatacenters(links);
  const spec::GpuType *gpu = spec::findGpu(cluster, cluster.datacenters(0).node_groups(0).gpu());
  w.hbmBytes = gpu->hbm_gib() * double(1ull << 30);
  // Only a cluster that is not regular can mix GPU types; listing every
  // node's type is not work for the search's hot path otherwise.
  spec::NodeTypes types;
  if (!size.regular)
    types = spec::nodeTypes(cluster);
  if (types.gpus.size() > 1) {
    // A pipeline rank spanning several GPU types runs at the pace of the
    // slowest and must fit in the smallest.
    std::vector<std::vector<int64_t>> nodes = search::axisNodes(physical, carving.axes, "pp");
    for (int64_t s = 0; s < c.pp; ++s) {
      int64_t rank = c.stageOrder.empty() ? s : c.stageOrder[s];
      int slowest = -1;
      double hbm = 0;
      for (int64_t node : nodes[rank]) {
        const spec::GpuType *g = types.gpus[types.nodeType[node]];
        if (slowest < 0 || spec::peakTflops(*g, training.precision()) <
                               spec::peakTflops(*types.gpus[slowest], training.precision()))
          slowest = types.nodeType[node];
        double bytes = g->hbm_gib() * double(1ull << 30);
        hbm = hbm == 0 ? bytes : std::min(hbm, bytes);
      }
      w.stageDevice.push_back(slowest);
      w.stageHbmBytes.push_back(hbm);
    }
  }

  PartShape base;
  base.microBatch = c.microBatch;
  base.seq = seq;
  base.hidden = model.hidden_size();
  base.vocab = int64_t(model.vocab_size());
  base.tp = c.tp;
  base.cp = c.cp;
  base.ep = c.ep;
  base.sequenceParallel = c.sequenceParallel;
  base.flashAttention = c.flashAttention;
  base.bytesPerElement = fp32 ? 4 : 2;
  base.dropout = model.dropout();

  // Data-parallel reduction: dense parts over dp (which includes ep) and cp;
  // experts over the dp ranks outside ep, and cp.
  double denseReduce = double(dp * c.cp);
  double expertReduce = double(dp / c.ep * c.cp);
  auto addGroup = [&](std::initializer_list<std::string_view> names) {
    w.groups.push_back(groupOver(links, carving.axes, {names.begin(), names.size()}));
    return int(w.groups.size() - 1);
  };
  int denseGroup = addGroup({"dp", "ep", "cp"});
  int expertGroup = addGroup({"dp", "cp"});
  int tpGroup = addGroup({"tp"});
  int cpGroup = addGroup({"cp"});
  int epGroup = addGroup({"ep"});

  // ZeRO shards optimizer state (>= 1), gradients (>= 2) and parameters (3)
  // over the reduction ranks; `model` is the sharding by tp/ep alone.
  auto shardsFor = [&](double modelShard, double reduce) {
    StateShards s;
    s.params = s.optim = s.grads = s.gatheredParams = modelShard;
    if (c.zero >= 1)
      s.optim = modelShard * reduce;
    if (c.zero >= 2)
      s.grads = modelShard * reduce;
    if (c.zero >= 3) {
      s.params = modelShard * reduce;
      s.paramsGathered = true;
    }
    s.optimOffloaded = c.offloadOptimizer;
    return s;
  };

  std::vector<int64_t> stageEnd; // uneven partition: first layer after each stage
  for (int64_t n : c.stageLayers)
    stageEnd.push_back((stageEnd.empty() ? 0 : stageEnd.back()) + n);
  auto stageOf = [&](int64_t layer) -> int64_t {
    if (!stageEnd.empty())
      return std::upper_bound(stageEnd.begin(), stageEnd.end(), layer) - stageEnd.begin();
    return c.pp > 1 ? layer * stages / layers : 0;
  };
  spec::ParamCount counts = spec::countParameters(model);

  Part embedding;
  embedding.kind = PartKind::Embedding;
  embedding.name = "embedding";
  embedding.params = embedding.activeParams = int64_t(counts.embedding);
  embedding.shape = base;
  embedding.shards = shardsFor(double(c.tp), denseReduce);
  embedding.groups = {tpGroup, cpGroup, epGroup, denseGroup};
  w.parts.push_back(embedding);

  // One attention part and one MLP/MoE part per run of identical layers on a
  // stage: the cost model prices each once and multiplies by `count`.
  int64_t layer = 0;
  for (const spec::Block &block : model.blocks()) {
    spec::AttentionShape shape = spec::attentionShape(model, block);
    const spec::Attention &a = block.attention();
    Part attn;
    attn.kind = PartKind::Attention;
    attn.params = attn.activeParams = int64_t(spec::attentionParameters(model, block));
    attn.shape = base;
    attn.shape.heads = shape.heads;
    attn.shape.kvHeads = shape.kvHeads;
    attn.shape.headDim = shape.headDim;
    attn.shape.inBias = a.qkv_bias();
    attn.shape.outBias = a.out_bias();
    if (shape.mla) {
      attn.shape.headDim = a.qk_nope_head_dim(); // the cost model adds rope itself
      attn.shape.qLoraRank = a.q_lora_rank();
      attn.shape.kvLoraRank = a.kv_lora_rank();
      attn.shape.ropeHeadDim = a.qk_rope_head_dim();
      attn.shape.vHeadDim = a.v_head_dim();
    }
    attn.shards = shardsFor(double(c.tp), denseReduce);
    attn.groups = {tpGroup, cpGroup, epGroup, denseGroup};

    int64_t ffnParams = int64_t(spec::ffnParameters(model, block));
    Part ffn;
    ffn.params = ffnParams;
    ffn.activeParams = int64_t(spec::ffnActiveParameters(model, block));
    ffn.shape = base;
    if (block.has_moe()) {
      const spec::Moe &moe = block.moe();
      ffn.kind = PartKind::Moe;
      ffn.shape.ffn = int64_t(moe.expert_ffn_hidden());
      ffn.shape.gated = isGated(moe.activation());
      ffn.shape.experts = moe.experts();
      ffn.shape.topK = moe.top_k();
      ffn.shape.sharedExperts = moe.shared_experts();
      ffn.shape.capacityFactor = moe.capacity_factor();
      ffn.shape.inBias = ffn.shape.outBias = moe.bias();
      // Routed experts split over tp x ep and reduce over the ranks outside
      // ep; the router, shared experts and norm split over tp and reduce over
      // all data ranks. Effective divisors keep the byte counts exact.
      double routed = double(spec::routedExpertParameters(model, block));
      double other = double(ffnParams) - routed;
      StateShards experts = shardsFor(double(c.tp * c.ep), expertReduce);
      StateShards dense = shardsFor(double(c.tp), denseReduce);
      auto blend = [&](double StateShards::*field) {
        return double(ffnParams) / (routed / experts.*field + other / dense.*field);
      };
      ffn.shards = experts;
      for (double StateShards::*field : {&StateShards::params, &StateShards::optim,
                                         &StateShards::grads, &StateShards::gatheredParams})
        ffn.shards.*field = blend(field);
      // Gradient traffic is dominated by the experts' reduction group.
      ffn.groups = {tpGroup, cpGroup, epGroup, expertGroup};
    } else {
      ffn.kind = PartKind::Mlp;
      ffn.shape.ffn = int64_t(block.mlp().ffn_hidden());
      ffn.shape.gated = isGated(block.mlp().activation());
      ffn.shape.inBias = ffn.shape.outBias = block.mlp().bias();
      ffn.shards = shardsFor(double(c.tp), denseReduce);
      ffn.groups = {tpGroup, cpGroup, epGroup, denseGroup};
    }

    int64_t end = layer + block.count();
    while (layer < end) {
      int64_t stage = stageOf(layer);
      int64_t first = layer;
      while (layer < end && stageOf(layer) == stage)
        ++layer;
      attn.stage = ffn.stage = stage;
      attn.count = ffn.count = layer - first;
      attn.firstLayer = ffn.firstLayer = first;
      attn.name = fmt::format("layers.{}-{}.attention", first, layer - 1);
      ffn.name = fmt::format("layers.{}-{}.{}", first, layer - 1, block.has_moe() ? "moe" : "mlp");
      w.parts.push_back(attn);
      w.parts.push_back(ffn);
    }
  }

  Part head;
  head.kind = PartKind::Head;
  head.name = "head";
  head.params = head.activeParams = int64_t(counts.lmHead + counts.finalNorm);
  head.stage = stages - 1;
  head.shape = base;
  head.shards = shardsFor(double(c.tp), denseReduce);
  head.groups = {tpGroup, cpGroup, epGroup, denseGroup};
  w.parts.push_back(head);
  w.tiedEmbeddings = model.tied_embeddings();
  addTiedEmbeddingCopy(w);
  return result;
}

void loom::cost::addTiedEmbeddingCopy(Workload &w) {
  if (!w.tiedEmbeddings || w.tiedCopyParams > 0 || w.schedule == Schedule::DualPipe)
    return;
  auto find = [&](PartKind kind) {
    return std::find_if(w.parts.begin(), w.parts.end(),
                        [&](const Part &p) { return p.kind == kind; });
  };
  auto embedding = find(PartKind::Embedding), head = find(PartKind::Head);
  if (embedding == w.parts.end() || head == w.parts.end() ||
      w.rankOf(embedding->stage) == w.rankOf(head->stage))
    return;
  w.tiedCopyParams = head->shape.vocab * head->shape.hidden;
  head->params += w.tiedCopyParams;
}
