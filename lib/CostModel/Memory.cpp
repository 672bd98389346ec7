//===- Memory.cpp - bytes per rank, by training state ---------------------===//
//
// Activation bytes follow the accounting of Korthikanti et al., "Reducing
// Activation Recomputation in Large Transformer Models" (arXiv 2205.05198,
// section 4): 2 bytes per stored 16-bit element, 1 byte per dropout mask
// element. Their per-layer total, s*b*h*(34 + 5*a*s/h), is the sum of
//   attention: layernorm input 2, QKV input 2, Q and K 4, V 2, softmax output
//              2*a*s/h, its dropout mask a*s/h and output 2*a*s/h, projection
//              input 2, dropout mask 1;
//   MLP:       layernorm input 2, first GEMM input 2, GeLU input 8, GeLU
//              output 8, dropout mask 1.
// Terms inside the tensor-parallel region divide by t; the others divide by t
// only with sequence parallelism. Here each term is written from the part's
// own shape (q/k/v widths for GQA, ffn for any MLP width, gate and up for
// SwiGLU, routed tokens for MoE), so the published closed forms come out
// exactly for GPT shapes and the rest is the same accounting.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Memory.h"

#include <algorithm>
#include <cmath>

using namespace loom::cost;

namespace {
/// Element counts of one micro-batch on one rank.
struct Dims {
  double sbh;       // local tokens x hidden
  double tokens;    // local tokens (s/cp x b)
  double t;         // tensor-parallel divisor
  double replicated; // divisor of terms outside the tensor-parallel region
};

Dims dimsOf(const PartShape &s) {
  Dims d;
  d.tokens = double(s.seq) / double(s.cp) * double(s.microBatch);
  d.sbh = d.tokens * double(s.hidden);
  d.t = double(s.tp);
  d.replicated = s.sequenceParallel ? d.t : 1.0;
  return d;
}

/// The bytes per element of stored activations and of dropout masks.
double elt(const PartShape &s) { return double(s.bytesPerElement); }

/// Stored bytes of the dense MLP computation on `tokens` tokens with width ffn
/// (per rank, already split by t): the first GEMM's output(s) feed the
/// activation function and its output feeds the second GEMM.
double mlpInner(const PartShape &s, double tokens, double ffn) {
  double widths = s.gated ? 3.0 : 2.0; // gate+up and product, or input and output
  return widths * elt(s) * tokens * ffn;
}
} // namespace

double loom::cost::activationBytes(const Part &part, Recompute recompute) {
  const PartShape &s = part.shape;
  bool dropout = s.dropout;
  Dims d = dimsOf(s);
  double e = elt(s);
  double mask = dropout ? 1.0 : 0.0;

  switch (part.kind) {
  case PartKind::Embedding:
    // The embedding output is the first layer's input (counted there); only
    // its dropout mask is extra.
    return mask * d.sbh / d.replicated;
  case PartKind::Head:
    // Final norm input, and the logits the cross-entropy keeps in fp32
    // (Korthikanti: 4*s*b*v/t).
    return e * d.sbh / d.replicated + 4.0 * d.tokens * double(s.vocab) / d.t;
  case PartKind::Attention: {
    // Under full recomputation only the layer input is kept (2*s*b*h per
    // layer in Korthikanti's Table 2, not divided by t).
    if (recompute == Recompute::Full)
      return e * d.sbh;
    // Query/key width includes rope dims (MLA); values may be narrower.
    double qk = double(s.headDim + s.ropeHeadDim);
    double v = double(s.vHeadDim ? s.vHeadDim : s.headDim);
    double heads = double(s.heads), kvHeads = double(s.kvHeads);
    double outside = (2 * e + mask) * d.sbh;          // norm input, QKV input, mask
    // MLA keeps its latents for the up-projections' weight gradients; they are
    // computed whole on every tensor-parallel rank.
    outside += e * d.tokens * double(s.qLoraRank + s.kvLoraRank + (s.kvLoraRank ? s.ropeHeadDim : 0));
    // Q, K, V and the output projection's input.
    double inside = e * d.tokens * (heads * qk + kvHeads * qk + kvHeads * v + heads * v);
    double scores = 0;
    if (!s.flashAttention && recompute == Recompute::None) {
      // Softmax output, plus dropout mask and output; local queries attend to
      // the whole sequence.
      double elems = double(s.heads) * d.tokens * double(s.seq);
      scores = (e + (dropout ? 1.0 + e : 0.0)) * elems;
    }
    return outside / d.replicated + (inside + scores) / d.t;
  }
  case PartKind::Mlp: {
    if (recompute == Recompute::Full)
      return 0; // rebuilt from the layer input the attention part keeps
    double outside = (2 * e + mask) * d.sbh; // norm input, first GEMM input, mask
    return outside / d.replicated + mlpInner(s, d.tokens, double(s.ffn)) / d.t;
  }
  case PartKind::Moe: {
    if (recompute == Recompute::Full)
      return 0;
    double outside = (2 * e + mask) * d.sbh; // norm input, router input, mask
    // Balanced routing: each rank's experts see as many routed tokens as the
    // rank sent out, top_k per token. Dispatched inputs and expert outputs are
    // kept whole (hidden is not split inside an expert's input).
    // A capacity factor pads every expert's buffer to that multiple of its
    // balanced share.
    double routed = d.tokens * double(s.topK) * std::max(1.0, s.capacityFactor);
    double dispatch = 2 * e * routed * double(s.hidden);
    double router = 2 * 4.0 * d.tokens * double(s.experts); // fp32 logits, probs
    double experts = mlpInner(s, routed, double(s.ffn));
    double shared = mlpInner(s, d.tokens, double(s.sharedExperts) * double(s.ffn));
    return outside / d.replicated + dispatch + router + (experts + shared) / d.t;
  }
  }
  return 0;
}

double loom::cost::recomputeWorkingBytes(const Part &part) {
  if (part.kind == PartKind::Embedding || part.kind == PartKind::Head)
    return 0;
  return activationBytes(part, Recompute::None);
}

int64_t loom::cost::inflightMicroBatches(Schedule schedule, int64_t pp, int64_t vpp,
                                         int64_t rank, int64_t microBatches) {
  switch (schedule) {
  case Schedule::GPipe:
    return microBatches;
  case Schedule::OneFOneB:
    // Rank r runs p - r forwards before its first backward (Narayanan et al.
    // SC'21).
    return std::min(pp - rank, microBatches);
  case Schedule::ZeroBubbleH1:
  case Schedule::ZeroBubbleAuto:
  case Schedule::Skip:
    // ZB-H1 keeps 1F1B's peak, p on the first rank (Qi et al. 2024), but
    // later ranks defer their W passes and hold a micro-batch's inputs until
    // its W: p on every rank (loom's generator; docs/schedules.md). zb-auto
    // without limits of its own (Workload::inflightLimit) gets the same, and
    // so do skip paths (list-scheduled under that limit).
    return std::min(pp, microBatches);
  case Schedule::ZeroBubbleV:
    // 1F1B's memory in chunks of half a rank's layers: 2p of them (Qi et al.,
    // "Pipeline Parallelism with Controllable Memory", 2024), on every rank.
    return std::min(2 * pp, 2 * microBatches);
  case Schedule::ZeroBubbleH2:
    // Up to 2p - 1 micro-batches in flight (Qi et al. 2024), on every rank.
    return std::min(2 * pp - 1, microBatches);
  case Schedule::DualPipe:
    // p + 1 stage activations (DeepSeek-V3 report, Table 2), on every rank.
    return std::min(pp + 1, microBatches);
  case Schedule::Interleaved:
    // Megatron-LM's interleaved warm-up runs (p - r - 1) * 2 + (v - 1) * p
    // chunk forwards before the first backward, then one more in flight.
    return std::min(microBatches * vpp, (pp - rank - 1) * 2 + (vpp - 1) * pp + 1);
  }
  return microBatches;
}

void loom::cost::addStateBytes(MemoryBreakdown &m, const Workload &w, const Part &part) {
  const StateShards &sh = part.shards;
  double p = double(part.params) * double(part.count);
  if (!sh.paramsOffloaded)
    m.params += p * double(w.weightBytes) / sh.params;
  if (!sh.gradsOffloaded)
    m.grads += p * double(w.gradBytes) / sh.grads;
  if (!sh.optimOffloaded)
    m.optim += p * double(w.optimBytesPerParam + w.mainGradBytes) / sh.optim;
}

namespace {

/// Peak memory of pipeline rank `rank` holding `inflight` micro-batches (or
/// chunks, under interleaving and ZB-V).
MemoryBreakdown memoryHolding(const Workload &w, int64_t rank, const MemoryOptions &options,
                              int64_t inflight) {
  using namespace loom::cost;
  MemoryBreakdown m;
  double perMicroBatch = 0, working = 0, largestGathered = 0;
  double tpBuffer = 0, p2pBuffer = 0, epBuffer = 0;
  // DualPipe's rank r also holds chunk p - 1 - r for the other direction,
  // with its own gradients and optimizer state.
  const int64_t mirror = w.schedule == Schedule::DualPipe ? w.pp - 1 - rank : rank;
  for (const Part &part : w.parts) {
    if (w.rankOf(part.stage) != rank && w.rankOf(part.stage) != mirror)
      continue;
    const StateShards &sh = part.shards;
    double n = double(part.count);
    addStateBytes(m, w, part);
    if (sh.paramsGathered)
      largestGathered = std::max(largestGathered, double(part.params) * double(w.weightBytes) /
                                                      sh.gatheredParams);

    perMicroBatch += n * activationBytes(part, w.recomputeOf(part));
    if (w.recomputeOf(part) == Recompute::Full)
      working = std::max(working, recomputeWorkingBytes(part));

    const PartShape &s = part.shape;
    double tokensHidden = double(s.seq) / double(s.cp) * double(s.microBatch) *
                          double(s.hidden) * double(s.bytesPerElement);
    if (s.tp > 1) // sequence-parallel all-gather output / all-reduce buffer
      tpBuffer = std::max(tpBuffer, tokensHidden);
    if (w.pp > 1) // a send and a receive buffer in each direction
      p2pBuffer = std::max(p2pBuffer, 4 * tokensHidden / (s.sequenceParallel ? s.tp : 1));
    if (part.kind == PartKind::Moe && s.ep > 1) // dispatch and combine buffers
      epBuffer = std::max(epBuffer, 2 * tokensHidden * double(s.topK));
  }
  // ZeRO-3 prefetches the next part while the current one runs.
  m.gatheredParams = 2 * largestGathered;
  m.inflight = inflight;
  // Interleaving counts in-flight chunks; each chunk holds 1/v of the rank's
  // parts. DualPipe's in-flight micro-batches are of either direction: the
  // mean of its two chunks.
  double chunks = w.schedule == Schedule::Interleaved || w.schedule == Schedule::ZeroBubbleV
                      ? double(w.vpp)
                  : w.schedule == Schedule::DualPipe ? 2.0
                                                     : 1.0;
  m.activations = perMicroBatch / chunks * double(m.inflight) + working;
  m.commBuffers = tpBuffer + p2pBuffer + epBuffer;
  double tensors = m.params + m.grads + m.optim + m.gatheredParams + m.activations +
                   m.commBuffers;
  m.allowances = options.contextBytes + options.ncclBytes + options.fragmentation * tensors;
  return m;
}

} // namespace

MemoryBreakdown loom::cost::rankMemory(const Workload &w, int64_t rank,
                                       const MemoryOptions &options) {
  int64_t inflight = inflightMicroBatches(w.schedule, w.pp, w.vpp, rank, w.microBatches());
  if ((w.schedule == Schedule::ZeroBubbleAuto || w.schedule == Schedule::Skip) &&
      size_t(rank) < w.inflightLimit.size())
    inflight = std::min(w.inflightLimit[rank], w.microBatches());
  return memoryHolding(w, rank, options, inflight);
}

int64_t loom::cost::inflightCapacity(const Workload &w, int64_t rank,
                                     const MemoryOptions &options) {
  double capacity = w.stageHbmBytes.empty() ? w.hbmBytes : w.stageHbmBytes[rank];
  double usable = capacity * (1.0 - options.headroom);
  // Memory grows linearly with the micro-batches held (the allowance for
  // fragmentation is a share of the tensors).
  double none = memoryHolding(w, rank, options, 0).total();
  double each = memoryHolding(w, rank, options, 1).total() - none;
  if (none > usable)
    return 0;
  if (each <= 0)
    return w.microBatches();
  return std::min(w.microBatches(), int64_t(std::floor((usable - none) / each)));
}
