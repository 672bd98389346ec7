//===- Megatron2021.h - strategies as the 2021-22 Megatron stacks ran ------===//
//
// The published runs the cost-model tests price from 2021-22 (SC'21 with
// Megatron-LM, BigScience with Megatron-DeepSpeed) recomputed every layer
// (--checkpoint-activations), had no flash attention, added each
// micro-batch's weight gradients with a separate kernel (fused accumulation
// came to Megatron-LM in commit 83b1e42, 2022-02) and waited for the
// backward's tensor-parallel all-reduces (asynchronous from Megatron-LM
// commit 16c90445e7, 2021-09, after SC'21's de7dc40f88); their data-parallel
// communication ran after the pipeline drained (Megatron-LM's local DDP,
// DeepSpeed's ZeRO-1 gather after the step).
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_TEST_COSTMODEL_MEGATRON2021_H
#define LOOM_TEST_COSTMODEL_MEGATRON2021_H

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"

namespace loom::cost::published {

/// (tp, pp) with vpp model chunks a rank and micro-batch `mbs`, as 2021 ran it.
inline StrategyChoice megatron2021(int64_t tp, int64_t pp, int64_t mbs, int64_t vpp = 1) {
  StrategyChoice c;
  c.tp = tp;
  c.pp = pp;
  c.vpp = vpp;
  c.microBatch = mbs;
  c.recompute = Recompute::Full;
  c.flashAttention = false;
  c.fusedGradAccumulation = false;
  c.syncTpBackward = true;
  return c;
}

/// Data-parallel reduction and ZeRO gathers after the pipeline drains.
inline EstimateOptions afterTheDrain() {
  EstimateOptions options;
  options.overlapGradReduce = options.overlapParamGather = false;
  return options;
}

} // namespace loom::cost::published

#endif // LOOM_TEST_COSTMODEL_MEGATRON2021_H
