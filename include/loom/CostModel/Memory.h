//===- Memory.h - bytes per rank, by training state --------------*- C++ -*-===//
//
// Parameters, gradients and optimizer state follow from how each is sharded
// (ZeRO's 2 + 2 + 12 bytes per parameter for mixed-precision Adam, divided by
// the shard counts); activations follow Korthikanti et al. 2022, generalised
// part by part (GQA, gated MLPs, MoE, context parallelism, flash attention), so
// the published closed forms are special cases. Peaks are per pipeline rank:
// the first stage keeps the most micro-batches in flight, the last holds the
// logits.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_MEMORY_H
#define LOOM_COSTMODEL_MEMORY_H

#include "loom/CostModel/Workload.h"

namespace loom::cost {

/// Allowances beyond what tensors need, stated rather than hidden.
struct MemoryOptions {
  double contextBytes = 1.0 * (1ull << 30);  // CUDA context, cuBLAS/cuDNN workspaces
  double ncclBytes = 0.5 * (1ull << 30);     // NCCL channel buffers, all communicators
  double fragmentation = 0.05;               // caching-allocator slack on tensors
  double headroom = 0.05;                    // share of HBM a fitting plan leaves free
};

/// Bytes one part keeps from forward to backward for one micro-batch on one
/// rank (stored activations only).
double activationBytes(const Part &part, Recompute recompute);

/// Bytes of a part's activations rebuilt during its backward under full
/// recomputation (the working set of one recomputed part).
double recomputeWorkingBytes(const Part &part);

/// Micro-batches whose activations a pipeline rank holds at its peak, counted
/// in units of one virtual-stage chunk (interleaved, ZB-V) or one stage.
int64_t inflightMicroBatches(Schedule schedule, int64_t pp, int64_t vpp, int64_t rank,
                             int64_t microBatches);

struct MemoryBreakdown {
  double params = 0, grads = 0, optim = 0;
  double gatheredParams = 0; // ZeRO-3: whole layers gathered around their use
  double activations = 0;
  double commBuffers = 0;
  double allowances = 0;     // context + NCCL + fragmentation
  int64_t inflight = 0;
  double total() const {
    return params + grads + optim + gatheredParams + activations + commBuffers +
           allowances;
  }
};

/// Adds the parameters, gradients and optimizer state that `part` (all
/// `count` of them) keeps on one rank; offloaded states add nothing.
void addStateBytes(MemoryBreakdown &m, const Workload &w, const Part &part);

/// Peak memory of pipeline rank `rank` (0 = first stage).
MemoryBreakdown rankMemory(const Workload &w, int64_t rank,
                           const MemoryOptions &options = {});

/// How many micro-batches pipeline rank `rank` could hold in flight and still
/// fit in its GPU less the headroom (at most the step's micro-batches; 0 when
/// not even its states fit): the room a memory-bounded scheduler has there.
int64_t inflightCapacity(const Workload &w, int64_t rank, const MemoryOptions &options = {});

} // namespace loom::cost

#endif // LOOM_COSTMODEL_MEMORY_H
