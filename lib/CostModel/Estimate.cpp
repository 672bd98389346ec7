//===- Estimate.cpp - step time, throughput and memory of a workload ------===//
//
// Communication per part and micro-batch (Megatron-LM's patterns, Narayanan et
// al. SC'21 and Korthikanti et al. 2022):
//  * tensor parallel: one all-reduce of the part's output in forward and one
//    of its input gradient in backward (sequence parallelism swaps each for a
//    reduce-scatter + all-gather of the same volume); recomputation repeats the
//    forward one. Exposed: Megatron runs them on the compute stream.
//  * context parallel: keys and values of the whole sequence gathered in
//    forward, gathered again and their gradients reduce-scattered in backward;
//    hidden behind the attention part's own compute where it fits.
//  * expert parallel: all-to-all dispatch and combine, forward and backward.
//  * pipeline: the part's output activations sent forward and their gradient
//    sent back at every stage boundary.
// Data-parallel gradient reduction is bucketed per reduction group (one
// collective per group per step); ZeRO-1/2 reduce-scatter gradients and
// all-gather updated parameters, ZeRO-3 also gathers parameters for forward and
// backward of every micro-batch.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Estimate.h"

#include <algorithm>

using namespace loom::cost;

namespace {

PassCost partCost(const ComputeModel &model, const Part &part) {
  switch (part.kind) {
  case PartKind::Attention:
    return attentionCost(model, part.shape);
  case PartKind::Mlp:
    return mlpCost(model, part.shape);
  case PartKind::Moe:
    return moeCost(model, part.shape);
  case PartKind::Head:
    return headCost(model, part.shape);
  case PartKind::Embedding:
    return {}; // a gather: negligible next to the layers
  }
  return {};
}

/// Bytes of one rank's activations at a part boundary for one micro-batch.
double boundaryBytes(const PartShape &s) {
  return double(s.microBatch) * double(s.seq) / double(s.cp) * double(s.hidden) *
         double(s.bytesPerElement);
}

/// Bytes one rank of `group` sends across datacenters in `op` on a `bytes`
/// buffer: the minimal volume, which the hierarchical algorithms reach — the
/// inner levels reduce (or gather) first, so only a 1/inner shard crosses.
double crossDcBytes(Collective op, double bytes, const GroupShape &group, bool multiDc) {
  if (!multiDc || group.levels.empty() || bytes == 0)
    return 0;
  double k = double(group.levels.back().size);
  if (k <= 1)
    return 0;
  double inner = double(group.size()) / k;
  double share = (k - 1) / k;
  switch (op) {
  case Collective::AllReduce:
    return 2 * share * bytes / inner;
  case Collective::ReduceScatter:
  case Collective::AllGather:
    return share * bytes / inner;
  case Collective::AllToAll:
    return share * bytes;
  }
  return 0;
}

/// Bytes the optimizer step moves per parameter it updates, kernel by kernel
/// as Megatron-LM's mixed-precision optimizer runs them
/// (megatron/optimizer/optimizer.py, step()):
///  * 16-bit gradients are upcast to fp32 (read, write 4);
///  * fp16 only: unscale in place and check for inf/NaN (read 4, write 4);
///  * the global gradient norm for clipping (read 4);
///  * Adam (or SGD) reads the fp32 gradient, the weight and its state and
///    writes the weight and state back; under mixed precision the weight is
///    the fp32 master, counted in optimBytesPerParam;
///  * the master is copied to the 16-bit weight (read 4, write 2).
double optimizerBytesPerParam(const Workload &w) {
  const double state = double(w.optimBytesPerParam), weight = double(w.weightBytes);
  const bool master = w.weightBytes < 4; // the fp32 weight lives in the state
  double upcast = w.gradBytes < 4 ? double(w.gradBytes) + 4 : 0;
  double unscale = w.lossScaling ? 8 : 0;
  double norm = 4;
  double step = 4 + 2 * state + (master ? 0 : 2 * weight);
  double copyBack = master ? 4 + weight : 0;
  return upcast + unscale + norm + step + copyBack;
}

} // namespace

double loom::cost::pipelineMessageBytes(const Workload &w) {
  const PartShape &s = w.parts.front().shape;
  return boundaryBytes(s) / (s.sequenceParallel ? double(s.tp) : 1.0);
}

void loom::cost::addPartTime(RankTime &t, const Workload &w, const Part &part,
                             const ComputeModel &compute) {
  double n = double(part.count);
  PassCost pc = partCost(compute, part);
  t.f += n * pc.f;
  t.b += n * pc.b;
  t.w += n * pc.w;
  t.flops += n * (pc.flopsF + pc.flopsB + pc.flopsW);
  bool layer = part.kind == PartKind::Attention || part.kind == PartKind::Mlp ||
               part.kind == PartKind::Moe;
  Recompute recompute = w.recomputeOf(part);
  if (layer && recompute == Recompute::Full) {
    t.recompute += n * pc.f;
    t.flops += n * pc.flopsF;
  }
  // Selective recomputation reruns the attention core's forward: Q K^T, the
  // scale-mask-softmax, dropout and the product with V, the kernels and score
  // traffic the forward's core took (pc.coreF), not its two matmuls alone.
  // Korthikanti et al. (arXiv 2205.05198) Table 4 measures it on a 22B layer at
  // t=8, b=4: backward 13.2 ms with it against 11.9 ms without, 1.3 ms; coreF
  // prices it at 1.25 ms. Flash attention already recomputes the
  // scores in its backward (charged in B), so it adds nothing then.
  if (part.kind == PartKind::Attention && recompute == Recompute::Selective &&
      !part.shape.flashAttention) {
    t.recompute += n * pc.coreF;
    t.flops += n * pc.coreFlopsF;
  }
  // Unfused gradient accumulation: per weight tensor one kernel that reads the
  // buffer and the fresh 16-bit gradient and writes the buffer back.
  if (!w.fusedGradAccumulation && part.params > 0) {
    double local = n * double(part.params) / part.shards.gatheredParams;
    int tensors = layer ? 6 : 2; // two matrices, two biases, a norm's two vectors
    t.w += compute.memorySeconds(local * double(2 * w.gradBytes + w.weightBytes)) +
           n * tensors * compute.kernelLatency();
  }

  const PartShape &s = part.shape;
  double act = boundaryBytes(s);
  if (s.tp > 1) {
    double allReduce = collectiveTime(Collective::AllReduce, act, w.groups[part.groups.tp]).seconds;
    // Layers: forward output and backward input gradient (and the forward
    // again under full recomputation); embedding: its forward output; head:
    // the input gradient of the vocabulary-parallel projection.
    double count = 1;
    if (layer)
      count = recompute == Recompute::Full ? 3 : 2;
    // Sequence parallelism keeps the input of a block's column-parallel linear
    // (QKV, fc1) as this rank's 1/t of the tokens and gathers it again in the
    // backward for the weight gradient (LinearWithGradAccumulationAndAsync-
    // Communication.backward, megatron/core/tensor_parallel/layers.py): one more
    // all-gather per block. Korthikanti et al. (arXiv 2205.05198) Table 4: a
    // 22B layer's backward takes 11.8 ms with sequence parallelism against
    // 11.9 ms without, though its norms and dropouts shrink t-fold.
    double regather = 0;
    if (s.sequenceParallel && (part.kind == PartKind::Attention || part.kind == PartKind::Mlp))
      regather = collectiveTime(Collective::AllGather, act, w.groups[part.groups.tp]).seconds;
    double comm = count * allReduce + regather;
    // Overlapped, each all-gather/reduce-scatter hides behind the GEMM it
    // feeds or drains (the layer's forward for the forward ones, its backward
    // for the rest; the regather runs under the input-gradient GEMM) and
    // slows it instead.
    if (w.tpCommOverlap && layer)
      comm = compute.exposedSeconds(allReduce, pc.f) +
             (count - 1) * compute.exposedSeconds(allReduce, (pc.b + pc.w) / (count - 1)) +
             compute.exposedSeconds(regather, pc.b);
    // Otherwise the forward's wait, but the backward's reduction does not:
    // the column-parallel linear's input gradient is all-reduced (reduce-
    // scattered) beside its weight-gradient GEMM (Workload::syncTpBackward).
    // The regather is launched before the input-gradient GEMM too, but
    // Korthikanti et al.'s Table 4 (arXiv 2205.05198) measures the
    // sequence-parallel backward of a 22B layer no faster than the plain one
    // (11.8 against 11.9 ms), where a hidden regather would take off 0.6 ms
    // more than the norms and dropouts it shrinks: loom keeps it exposed.
    else if (!w.syncTpBackward && layer && pc.columnW > 0)
      comm = (count - 1) * allReduce + compute.exposedSeconds(allReduce, pc.columnW) + regather;
    t.tpComm += n * comm;
    t.crossDcBytes +=
        n * (count * crossDcBytes(Collective::AllReduce, act, w.groups[part.groups.tp], w.multiDc) +
             (regather > 0 ? crossDcBytes(Collective::AllGather, act, w.groups[part.groups.tp],
                                          w.multiDc)
                           : 0));
  }
  if (s.cp > 1 && part.kind == PartKind::Attention) {
    double kv = 2.0 * double(s.microBatch) * double(s.seq) * double(s.kvHeads) *
                double(s.headDim) * double(s.bytesPerElement) / double(s.tp);
    double gather = collectiveTime(Collective::AllGather, kv, w.groups[part.groups.cp]).seconds;
    double scatter = collectiveTime(Collective::ReduceScatter, kv, w.groups[part.groups.cp]).seconds;
    // Ring attention: while a rank works on one block of keys it receives
    // the next, so the exchange hides behind all but the first of the cp
    // blocks of the attention core (not the projections, which must finish
    // before the keys exist); the backward sends key/value gradients too.
    // Full recomputation runs the forward exchange again.
    double share = double(s.cp - 1) / double(s.cp);
    double forward = compute.exposedSeconds(gather, share * pc.coreF);
    t.cpComm += n * (forward * (recompute == Recompute::Full ? 2 : 1) +
                     compute.exposedSeconds(gather + scatter, share * pc.coreB));
    const GroupShape &g = w.groups[part.groups.cp];
    t.crossDcBytes += n * (2 * crossDcBytes(Collective::AllGather, kv, g, w.multiDc) +
                           crossDcBytes(Collective::ReduceScatter, kv, g, w.multiDc));
  }
  if (s.ep > 1 && part.kind == PartKind::Moe) {
    double routed = act * double(s.topK) * std::max(1.0, s.capacityFactor);
    const GroupShape &g = w.groups[part.groups.ep];
    double allToAll = n * 4 * collectiveTime(Collective::AllToAll, routed, g).seconds;
    // DualPipe runs a forward of one direction beside a backward of the other
    // and each one's all-to-all under the other's compute (DeepSeek-V3 report,
    // Sec. 3.2.1). Only the chunks without a partner, about p of the m
    // micro-batches (filling and draining), expose theirs.
    if (w.schedule == Schedule::DualPipe) {
      double unpaired = std::min(1.0, double(w.pp) / double(w.microBatches()));
      allToAll = unpaired * allToAll +
                 (1 - unpaired) * compute.exposedSeconds(allToAll, n * (pc.f + pc.b + pc.w));
    }
    t.epComm += allToAll;
    t.crossDcBytes += n * 4 * crossDcBytes(Collective::AllToAll, routed, g, w.multiDc);
  }
}

Estimate loom::cost::estimate(const Workload &w, const ComputeModel &compute,
                              const EstimateOptions &options) {
  return estimate(w, std::span<const ComputeModel>(&compute, 1), options);
}

Estimate loom::cost::estimate(const Workload &w, std::span<const ComputeModel> computes,
                              const EstimateOptions &options) {
  // One model for a mixed workload prices every rank on it (the caller asked
  // for that GPU); otherwise each rank gets its own type's.
  auto computeOf = [&](int64_t rank) -> const ComputeModel & {
    size_t type = w.stageDevice.empty() ? 0 : size_t(w.stageDevice[rank]);
    return computes[type < computes.size() ? type : 0];
  };
  Estimate e;
  int64_t m = w.microBatches();
  e.microBatches = m;
  e.time.assign(w.pp, RankTime{});

  // Gradient bytes per reduction group, per pipeline rank (ZeRO buckets).
  struct Bucket {
    double gradBytes = 0, paramBytes = 0;
  };
  std::vector<std::vector<Bucket>> buckets(w.pp, std::vector<Bucket>(w.groups.size()));

  for (const Part &part : w.parts) {
    int64_t r = w.rankOf(part.stage);
    const ComputeModel &compute = computeOf(r);
    RankTime &t = e.time[r];
    double n = double(part.count);
    addPartTime(t, w, part, compute);
    Bucket &bucket = buckets[r][part.groups.reduce];
    double localParams = n * double(part.params) / part.shards.gatheredParams;
    bucket.gradBytes += localParams * double(w.gradBytes);
    bucket.paramBytes += localParams * double(w.weightBytes);
    double updated = n * double(part.params) / part.shards.optim; // this rank's shard
    if (part.shards.optimOffloaded) // ZeRO-Offload: gradients down, a CPU step, weights up
      t.optimizer += compute.hostLinkSeconds(updated * double(w.gradBytes + w.weightBytes)) +
                     compute.hostMemorySeconds(updated * optimizerBytesPerParam(w));
    else
      t.optimizer += compute.memorySeconds(updated * optimizerBytesPerParam(w));
  }
  // DualPipe: rank r holds chunk r and, for the other direction, chunk
  // p - 1 - r, and runs each for half of the micro-batches; so its time per
  // micro-batch is the two chunks' mean, and it reduces and updates both
  // copies (loom does not assume the copies share gradients or optimizer
  // state).
  if (w.schedule == Schedule::DualPipe) {
    std::vector<RankTime> chunk = e.time;
    std::vector<std::vector<Bucket>> own = buckets;
    for (int64_t r = 0; r < w.pp; ++r) {
      const RankTime &a = chunk[r], &b = chunk[w.pp - 1 - r];
      RankTime &t = e.time[r];
      for (double RankTime::*field :
           {&RankTime::f, &RankTime::b, &RankTime::w, &RankTime::recompute, &RankTime::tpComm,
            &RankTime::cpComm, &RankTime::epComm, &RankTime::flops, &RankTime::crossDcBytes})
        t.*field = (a.*field + b.*field) / 2;
      t.optimizer = a.optimizer + b.optimizer;
      for (size_t g = 0; g < w.groups.size(); ++g) {
        buckets[r][g].gradBytes = own[r][g].gradBytes + own[w.pp - 1 - r][g].gradBytes;
        buckets[r][g].paramBytes = own[r][g].paramBytes + own[w.pp - 1 - r][g].paramBytes;
      }
    }
  }

  // Pipeline sends. Rank r sends activations over hop r and gradients back
  // over hop r-1, once per chunk it owns; the wrap hop (last rank to first)
  // carries the vpp-1 chunk changes of interleaved schedules. ZB-V's V turns
  // on the last rank: every other hop carries both chunks, the wrap hop none.
  // Transfers take the rank's time; hop latencies are paid along the pipeline
  // (below).
  double roundTripLatency = 0; // one micro-batch down all chunks and back
  if (w.pp > 1) {
    double bytes = pipelineMessageBytes(w);
    bool vShape = w.schedule == Schedule::ZeroBubbleV;
    auto uses = [&](int64_t hop) {
      return hop == w.pp - 1 ? (vShape ? 0 : w.vpp - 1) : w.vpp;
    };
    for (int64_t r = 0; r < w.pp; ++r) {
      int64_t in = (r + w.pp - 1) % w.pp;
      for (int64_t hop : {r, in}) {
        const GroupLevel &link = w.hops[hop].link;
        double transfer = link.bandwidth > 0 ? bytes / link.bandwidth : 0;
        e.time[r].p2p += double(uses(hop)) * transfer;
        if (hop == r && w.hops[hop].crossesDc) // counted once per hop: at its sender
          e.time[r].crossDcBytes += 2.0 * double(uses(hop)) * bytes;
      }
      roundTripLatency += 2.0 * double(uses(r)) * w.hops[r].link.latency;
    }
  }

  // Data-parallel reduction per rank and step.
  for (int64_t r = 0; r < w.pp; ++r) {
    RankTime &t = e.time[r];
    const ComputeModel &compute = computeOf(r);
    double perMicroBatchGather = 0;
    double afterStep = 0; // ZeRO-1/2: the updated parameters
    for (size_t gi = 0; gi < w.groups.size(); ++gi) {
      const Bucket &bucket = buckets[r][gi];
      const GroupShape &g = w.groups[gi];
      if (bucket.gradBytes == 0)
        continue;
      if (w.zero == 0) {
        t.dpComm += collectiveTime(Collective::AllReduce, bucket.gradBytes, g).seconds;
        t.dpCrossDcBytes += crossDcBytes(Collective::AllReduce, bucket.gradBytes, g, w.multiDc);
        continue;
      }
      t.dpComm += collectiveTime(Collective::ReduceScatter, bucket.gradBytes, g).seconds;
      double gather = collectiveTime(Collective::AllGather, bucket.paramBytes, g).seconds;
      double gatherDc = crossDcBytes(Collective::AllGather, bucket.paramBytes, g, w.multiDc);
      t.dpCrossDcBytes +=
          crossDcBytes(Collective::ReduceScatter, bucket.gradBytes, g, w.multiDc) +
          (w.zero == 3 ? 2.0 * double(m) : 1.0) * gatherDc;
      if (w.zero == 3)
        perMicroBatchGather += 2 * gather; // forward and backward, every micro-batch
      else
        afterStep += gather;
    }
    // ZeRO-3 gathers prefetch behind the micro-batch's own compute; gradient
    // reduction runs under the last micro-batch's backward, and the gather of
    // updated parameters under the next step's first forward.
    double compute1 = t.f + t.b + t.w + t.recompute;
    t.dpExposed = double(m) * compute.exposedSeconds(perMicroBatchGather, compute1);
    bool overlap = options.overlapGradReduce &&
                   !(options.overlapGradReduceOnlyWithoutPipeline && w.pp > 1);
    t.dpExposed += compute.exposedSeconds(t.dpComm, overlap ? t.b + t.w : 0.0);
    t.dpExposed += compute.exposedSeconds(afterStep, options.overlapParamGather ? t.f : 0.0);
    t.dpComm += afterStep;
  }
  // Tied embeddings on two ranks (Workload::tiedCopyParams): once the
  // data-parallel reduction is done, the embedding's rank and the head's
  // all-reduce the word embedding's gradients over the hop that joins them
  // (Megatron-LM's finalize_model_grads: _allreduce_word_embedding_grads after
  // finish_grad_sync), and both wait for it.
  if (w.tiedCopyParams > 0 && !w.hops.empty()) {
    for (const Part &part : w.parts)
      if (part.kind == PartKind::Head) {
        double bytes =
            double(w.tiedCopyParams) / part.shards.gatheredParams * double(w.gradBytes);
        const PipelineHop &wrap = w.hops.back();
        GroupShape pair{{GroupLevel{2, wrap.link.bandwidth, wrap.link.latency}}};
        double seconds = collectiveTime(Collective::AllReduce, bytes, pair).seconds;
        for (int64_t r : {int64_t(0), w.rankOf(part.stage)}) {
          e.time[r].dpComm += seconds;
          e.time[r].dpExposed += seconds;
          if (wrap.crossesDc)
            e.time[r].dpCrossDcBytes += bytes;
        }
      }
  }

  // Pipeline critical path: the slowest rank paces every micro-batch, unless
  // the round trip of one micro-batch through every rank and hop latency is
  // longer than pp of those: then, after the first pp micro-batches, every
  // further one waits on that round trip (1F1B keeps at most pp in flight).
  int64_t slowest = 0;
  double sumTotal = 0;
  for (int64_t r = 0; r < w.pp; ++r) {
    sumTotal += e.time[r].total();
    if (e.time[r].total() > e.time[slowest].total())
      slowest = r;
  }
  const RankTime &st = e.time[slowest];
  double perMicroBatch = st.total();
  double latencyBound =
      std::max(0.0, (sumTotal + roundTripLatency) / double(w.pp) - perMicroBatch);
  double fwd = st.f + st.tpComm / 2 + st.epComm / 2 + st.p2p / 2;
  double bwd = st.b + st.recompute + st.tpComm / 2 + st.cpComm + st.epComm / 2 + st.p2p / 2;
  double bubble = 0;
  double fill = double(w.pp - 1);
  switch (w.schedule) {
  case Schedule::GPipe:
  case Schedule::OneFOneB:
  case Schedule::Skip: // bounded by the full path's; the planner simulates it
    bubble = fill * perMicroBatch;
    break;
  case Schedule::Interleaved:
    bubble = fill * perMicroBatch / double(w.vpp);
    break;
  case Schedule::ZeroBubbleH1:
    bubble = std::max(0.0, fill * (fwd + bwd - st.w));
    break;
  case Schedule::ZeroBubbleH2:
    bubble = std::max(0.0, fill * (fwd + bwd - 2 * st.w));
    break;
  case Schedule::ZeroBubbleV:
    // Each fill step is one chunk (half a rank's layers): the last rank waits
    // (p - 1) chunk forwards for its first input, the lower bound ZB-V reaches
    // when W can fill the rest (Qi et al. 2024; docs/schedules.md).
    bubble = fill * std::max(fwd, fwd + bwd - 2 * st.w) / 2;
    break;
  case Schedule::DualPipe:
    // (p/2 - 1)(F&B + B - 3W) with B the whole backward (DeepSeek-V3 report,
    // Table 2); loom runs F&B, a forward beside a backward, as F + B.
    bubble = std::max(0.0, double(w.pp / 2 - 1) * (fwd + 2 * bwd - st.w));
    break;
  case Schedule::ZeroBubbleAuto: {
    // The automatic scheduler matches ZB-H2 when every rank may hold 2p - 1
    // micro-batches and ZB-H1 with p (docs/schedules.md); with less, 1F1B's
    // bubble bounds it. The planner simulates its finalists' schedules.
    int64_t least = w.pp;
    if (!w.inflightLimit.empty())
      least = *std::min_element(w.inflightLimit.begin(), w.inflightLimit.end());
    if (least >= 2 * w.pp - 1)
      bubble = std::max(0.0, fill * (fwd + bwd - 2 * st.w));
    else if (least >= w.pp)
      bubble = std::max(0.0, fill * (fwd + bwd - st.w));
    else
      bubble = fill * perMicroBatch;
    break;
  }
  }
  // Filling and draining the pipeline pay every hop's latency once.
  bubble += roundTripLatency;
  bubble += double(std::max<int64_t>(0, m - w.pp)) * latencyBound;
  e.bubble = bubble;
  e.pipeline = double(m) * perMicroBatch + bubble;
  double ranksPerStage = double(w.gpus) / double(w.pp);
  for (const RankTime &t : e.time) {
    e.dpExposed = std::max(e.dpExposed, t.dpExposed);
    e.optimizer = std::max(e.optimizer, t.optimizer);
    e.crossDcBytes += ranksPerStage * (double(m) * t.crossDcBytes + t.dpCrossDcBytes);
  }
  e.stepTime = e.pipeline + e.dpExposed + e.optimizer;

  // Throughput.
  for (const RankTime &t : e.time)
    e.hardwareFlops += t.flops * double(m) * ranksPerStage;
  double tokens = double(w.globalBatch) * double(w.seq);
  double matmulParams = 0, attentionWidth = 0;
  for (const Part &part : w.parts) {
    const PartShape &s = part.shape;
    switch (part.kind) {
    case PartKind::Embedding:
      break;
    case PartKind::Head:
      matmulParams += double(s.vocab) * double(s.hidden);
      break;
    case PartKind::Attention:
      matmulParams += double(part.count) * double(part.activeParams);
      attentionWidth += double(part.count) * double(s.heads) * double(s.headDim);
      break;
    case PartKind::Mlp:
    case PartKind::Moe:
      matmulParams += double(part.count) * double(part.activeParams);
      break;
    }
  }
  e.modelFlops = tokens * (6.0 * matmulParams + 12.0 * double(w.seq) * attentionWidth);
  e.tokensPerSecond = tokens / e.stepTime;
  e.tflopsPerGpu = e.hardwareFlops / e.stepTime / double(w.gpus) / 1e12;
  double peakFlops = 0; // all GPUs together
  for (int64_t r = 0; r < w.pp; ++r)
    peakFlops += ranksPerStage * computeOf(r).peakFlops();
  e.mfu = e.modelFlops / e.stepTime / peakFlops;

  // Memory. With GPUs of several sizes, the rank with the least room left is
  // the one reported (on one GPU type, the one that needs the most).
  double leastRoom = 0;
  for (int64_t r = 0; r < w.pp; ++r) {
    e.memory.push_back(rankMemory(w, r, options.memory));
    double capacity = w.stageHbmBytes.empty() ? w.hbmBytes : w.stageHbmBytes[r];
    double room = capacity * (1.0 - options.memory.headroom) - e.memory.back().total();
    if (r == 0 || room < leastRoom) {
      leastRoom = room;
      e.peakRank = r;
      e.peakMemoryBytes = e.memory.back().total();
      e.capacityBytes = capacity;
      e.usableBytes = capacity * (1.0 - options.memory.headroom);
    }
  }
  e.fits = leastRoom >= 0;
  return e;
}
