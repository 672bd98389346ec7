//===- StageBalance.h - uneven stages from the cost model -------*- C++ -*-===//
//
// An even split of layers over pipeline stages leaves the first stage (the
// embedding) and the last (the LM head and the loss) slower than the rest, and
// on a heterogeneous cluster gives fast and slow GPUs the same work. This
// prices every transformer layer with the cost model (time per micro-batch on
// each GPU type, state bytes, activation bytes per micro-batch in flight),
// hands the split to the exact partitioners of Partition.h — dynamic
// programming when the device order is given, Z3 when it may be permuted — and
// returns the layer counts (and stage order) for cost::StrategyChoice. The
// proposal is re-priced by the full estimate, which has the last word.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_STAGEBALANCE_H
#define LOOM_SEARCH_STAGEBALANCE_H

#include "loom/CostModel/Estimate.h"
#include "loom/Search/Partition.h"

#include <span>

namespace loom::search {

struct StageBalance {
  bool changed = false;                // differs from the split it started from
  std::vector<int64_t> stageLayers;    // transformer layers per pipeline position
  std::vector<int64_t> stageOrder;     // position -> pp rank (empty: identity)
  Partition partition;                 // what the solver said
};

/// Which splits balanceStages may choose.
enum class StageShapes {
  Any,       // any contiguous split, stages on the pp ranks in order (DP)
  Reordered, // and which pp rank runs which stage (Z3; heterogeneous clusters)
  FirstLast, // equal stages but the first and last, as Megatron-LM runs them
             // (--decoder-first/last-pipeline-num-layers): every such split is
             // priced
};

/// Balances the stages of `workload` (built with vpp = 1, whose estimate is
/// `even`). `computes` are indexed by Workload::stageDevice.
StageBalance balanceStages(const cost::Workload &workload,
                           std::span<const cost::ComputeModel> computes,
                           const cost::Estimate &even, const cost::EstimateOptions &options,
                           StageShapes shapes);

} // namespace loom::search

#endif // LOOM_SEARCH_STAGEBALANCE_H
