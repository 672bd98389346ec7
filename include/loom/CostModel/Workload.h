//===- Workload.h - what one training step asks of each rank ----*- C++ -*-===//
//
// The cost model's input: the model's parts (embedding, attention, MLP/MoE,
// head) as one rank sees them under a placement — how finely each training
// state is sharded, which process groups it talks to, which pipeline stage it
// runs on — plus the training shape. Two producers build it: the strategy-tuple
// path the planner search uses (fromStrategy) and the place IR path
// (place-estimate); a test checks they agree. Plain C++.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_WORKLOAD_H
#define LOOM_COSTMODEL_WORKLOAD_H

#include "loom/CostModel/Collectives.h"
#include "loom/CostModel/Compute.h"
#include "loom/CostModel/Groups.h"
#include "loom/Search/AxisMapping.h"

#include <cstdint>
#include <string>
#include <vector>

namespace loom::cost {

enum class PartKind { Embedding, Attention, Mlp, Moe, Head };

/// How activations are kept between forward and backward.
enum class Recompute { None, Selective, Full };

/// Divisors of a part's full state size on one rank, and where states live.
struct StateShards {
  double params = 1, optim = 1, grads = 1;
  /// ZeRO-3/FSDP: parameters are gathered to `gatheredParams` divisor (the
  /// non-ZeRO sharding, e.g. tp) around each use.
  bool paramsGathered = false;
  double gatheredParams = 1;
  bool optimOffloaded = false, paramsOffloaded = false, gradsOffloaded = false;
};

/// Process groups a part communicates in: indices into Workload::groups, whose
/// entry 0 is the trivial group of one rank.
struct PartGroups {
  int tp = 0;     // tensor-parallel all-reduce / reduce-scatter + all-gather
  int cp = 0;     // context-parallel key/value exchange
  int ep = 0;     // expert all-to-all
  int reduce = 0; // gradient reduction (dp, ep for dense parts, cp)
};

/// `count` identical consecutive parts on one stage (the planner's fast path
/// groups a model's repeated layers, so costs are priced once per stage).
struct Part {
  PartKind kind = PartKind::Attention;
  std::string name;
  int64_t count = 1;
  int64_t firstLayer = -1; // transformer layer of the first of `count` (-1: embedding, head)
  int64_t params = 0;      // full parameter count
  int64_t activeParams = 0; // touched per token (MoE: router, top_k and shared experts)
  int64_t stage = 0;       // virtual pipeline stage
  PartShape shape;         // one rank's share of one micro-batch
  StateShards shards;
  PartGroups groups;
};

/// ZeroBubbleV: ZB-V (sched::zeroBubbleV; Qi et al., "Pipeline Parallelism
/// with Controllable Memory", 2024): vpp = 2 chunks per rank laid out in a V,
/// stage s < pp on rank s and stage s >= pp on rank 2pp - 1 - s, so the first
/// rank holds both the embedding and the head; 1F1B's activation memory.
/// ZeroBubbleAuto: the automatic zero-bubble scheduler (sched::zeroBubbleAuto)
/// under per-rank limits on the micro-batches in flight (Workload::inflightLimit).
/// Skip: SkipPipe paths (sched::skipPipe) under Workload::skip, list-scheduled
/// with p micro-batches in flight per rank; a micro-batch may skip middle
/// stages, so a step trains each layer on fewer of its tokens.
/// DualPipe: DeepSeek-V3's bidirectional pipeline (sched::dualPipe): every
/// rank holds its stage twice, one copy per direction, and half of the
/// micro-batches enter from each end; a forward of one direction runs beside
/// a backward of the other, whose expert all-to-all it hides. pp even, vpp 1,
/// at least 2pp micro-batches, an even number of them.
enum class Schedule {
  GPipe,
  OneFOneB,
  Interleaved,
  ZeroBubbleH1,
  ZeroBubbleH2,
  ZeroBubbleAuto,
  Skip,
  ZeroBubbleV,
  DualPipe
};

/// SkipPipe's convergence rules (Blagoev et al. 2025): a path may skip at most
/// maxSkipFraction of the middle stages and invert at most maxSwaps pairs of
/// them; every stage sees at least minStageShare of the step's micro-batches.
/// First and last stage are always visited, none twice.
struct SkipRules {
  double maxSkipFraction = 0.25;
  int64_t maxSwaps = 0;
  double minStageShare = 0.5;
};

struct Workload {
  std::vector<Part> parts;  // in layer order
  /// Process-group shapes over the link hierarchy; parts refer to them by
  /// index, so parts sharing a group share its gradient buckets.
  std::vector<GroupShape> groups{GroupShape{}};
  /// The logical axes laid onto the cluster, outermost first (from the
  /// strategy path; empty when read from IR).
  std::vector<search::LogicalAxis> mesh;
  int64_t pp = 1, vpp = 1;  // pipeline ranks and virtual stages per rank
  int64_t dp = 1;           // data-parallel ranks (including ep)
  int64_t tp = 1, cp = 1, ep = 1;
  int64_t globalBatch = 1, microBatch = 1, seq = 0;
  int64_t gpus = 1;
  Recompute recompute = Recompute::None;
  /// With `recompute`, only pipeline ranks below this one recompute (the
  /// first stages hold the most micro-batches in flight); 0: every rank.
  int64_t recomputeRanks = 0;
  /// Sequence-parallel all-gathers and reduce-scatters pipelined with the
  /// GEMMs beside them (Megatron-Core with Transformer Engine's
  /// --tp-comm-overlap; Wang et al., ASPLOS'23): they hide behind those GEMMs
  /// and slow them instead of running exposed.
  bool tpCommOverlap = false;
  /// Without tpCommOverlap: whether the backward's tensor-parallel
  /// communication waits for its GEMMs. By default it does not (Megatron-LM
  /// since 2021-09, --async-tensor-model-parallel-allreduce, and Megatron-Core's
  /// LinearWithGradAccumulationAndAsyncCommunication; Transformer Engine's
  /// Linear alike): a column-parallel linear launches its input gradient's
  /// all-reduce (reduce-scatter under sequence parallelism) before its
  /// weight-gradient GEMM and waits after it (it also launches sequence
  /// parallelism's regather early, which loom still charges in full:
  /// Estimate.cpp says why). The 2021 stacks waited for both.
  bool syncTpBackward = false;
  /// Weight-gradient GEMMs accumulate straight into the gradient buffer
  /// (Megatron-LM's gradient_accumulation_fusion, on by default since
  /// 2022-02). Without it every micro-batch's weight gradient lands in a fresh
  /// tensor that a separate kernel adds to the buffer: Megatron-LM 2021
  /// (megatron/model/distributed.py: param.main_grad.add_(param.grad)) or
  /// plain PyTorch accumulation into .grad.
  bool fusedGradAccumulation = true;
  Schedule schedule = Schedule::OneFOneB;
  /// ZeroBubbleAuto and Skip: micro-batches each pipeline rank may hold at
  /// once (the list scheduler's memory limit there, in one micro-batch's
  /// activations on that rank; skip paths take the least of them); memory is
  /// priced at these. Empty: ZB-H1's p.
  std::vector<int64_t> inflightLimit;
  SkipRules skip; // Schedule::Skip only
  int64_t zero = 0;
  /// Bytes per parameter of the weights, of the gradient buffer and of the
  /// optimizer's state (fp32 master + Adam's two moments: 12; 8 for fp32
  /// training, 4 less with SGD), plus the fp32 copy of 16-bit gradients the
  /// optimizer keeps beside them (mainGradBytes), as setStateBytes sets them.
  int64_t weightBytes = 2, gradBytes = 4, optimBytesPerParam = 12, mainGradBytes = 0;
  /// Megatron-LM's bytes per parameter (docs/user-guide/features/
  /// dist_optimizer.md): bf16 (and fp8) weights with fp32 gradients, which it
  /// accumulates and reduces in fp32, 2 + 4 + 12 = 18; fp16 weights and
  /// gradients, whose fp32 copy the optimizer holds with its state, 2 + 2 + 16
  /// = 20; fp32, 4 + 4 + 8 = 16. Sharded by ZeRO-1 as its distributed
  /// optimizer does: 6 + 12/d, 4 + 16/d and 8 + 8/d. `bf16Grads`
  /// (--grad-reduce-in-bf16) keeps bf16 gradients as fp16 training keeps
  /// fp16 ones: 2 + 2 + 16, the optimizer upcasting its shard to fp32.
  void setStateBytes(bool fp32, bool fp16, bool sgd, bool bf16Grads = false) {
    bool halfGrads = fp16 || (bf16Grads && !fp32);
    weightBytes = fp32 ? 4 : 2;
    gradBytes = halfGrads ? 2 : 4;
    mainGradBytes = halfGrads ? 4 : 0;
    optimBytesPerParam = 4 * (sgd ? 1 : 2) + (fp32 ? 0 : 4);
    lossScaling = fp16;
  }
  /// The output projection is the word embedding (tied weights). When the
  /// embedding and the head run on different pipeline ranks, the head's rank
  /// keeps a copy of the word embedding with its own gradients and optimizer
  /// state, and the two ranks all-reduce the copies' gradients after the
  /// data-parallel reduction (Megatron-LM's embedding group; DeepSpeed's tied
  /// modules): addTiedEmbeddingCopy sets tiedCopyParams, the copy's full
  /// parameter count (vocab x hidden), and adds it to the head part.
  bool tiedEmbeddings = false;
  int64_t tiedCopyParams = 0;
  /// fp16 mixed precision: the optimizer unscales the loss-scaled gradients
  /// and checks them for inf/NaN before stepping (bf16 needs no scaling).
  bool lossScaling = false;
  /// Hop r joins pipeline rank r to r+1; the last one wraps from the final
  /// rank to the first (interleaved chunks). Empty without pipelining.
  std::vector<PipelineHop> hops;
  /// The cluster spans datacenters: the outermost level of every group is the
  /// link between them (cross-datacenter traffic is reported).
  bool multiDc = false;
  double hbmBytes = 0;      // capacity of one GPU
  /// Heterogeneous clusters: the GPU type of each pipeline rank (an index
  /// into the compute models estimate() is given) and its capacity. Empty:
  /// every rank has type 0 and `hbmBytes`.
  std::vector<int> stageDevice;
  std::vector<double> stageHbmBytes;

  /// Micro-batches per step on one pipeline (gradient accumulation steps).
  int64_t microBatches() const { return globalBatch / (dp * microBatch); }
  /// The pipeline rank that runs virtual stage `stage`: round robin (stage mod
  /// pp), or ZB-V's V (down the ranks, then back up).
  int64_t rankOf(int64_t stage) const {
    if (schedule == Schedule::ZeroBubbleV && stage >= pp)
      return 2 * pp - 1 - stage;
    return stage % pp;
  }
  /// How the activations of `part` are kept (recomputeRanks applied).
  Recompute recomputeOf(const Part &part) const {
    return recomputeRanks == 0 || rankOf(part.stage) < recomputeRanks ? recompute
                                                                      : Recompute::None;
  }
};

/// With tied embeddings, gives the head's pipeline rank its copy of the word
/// embedding when the embedding lives on another rank (Workload::
/// tiedEmbeddings). Both workload producers call it once their parts are
/// built. DualPipe's end ranks hold both the first and the last stage, and
/// ZB-V's V puts them on one rank: no copy there.
void addTiedEmbeddingCopy(Workload &w);

} // namespace loom::cost

#endif // LOOM_COSTMODEL_WORKLOAD_H
