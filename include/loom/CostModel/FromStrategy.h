//===- FromStrategy.h - workload of a strategy tuple ------------*- C++ -*-===//
//
// The planner's fast path: builds the Workload of (model, cluster, training,
// strategy) without building IR. It lays the logical axes onto the hierarchy
// exactly as place-apply-strategy does (search::carveAxes, tp innermost) and
// shards states by the same rules; a unit test checks it against the workload
// read from IR by place-estimate.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_FROMSTRATEGY_H
#define LOOM_COSTMODEL_FROMSTRATEGY_H

#include "loom/CostModel/Groups.h"
#include "loom/CostModel/Workload.h"
#include "loom/Spec/Spec.h"

#include <string>
#include <vector>

namespace loom::cost {

/// The largest parallel degree or micro-batch a strategy may ask for (the CLI's
/// --dp, --tp, ..., --mbs and the Python module's arguments).
inline constexpr int64_t kMaxDegree = int64_t(1) << 24;

struct StrategyChoice {
  int64_t dp = 0; // 0: whatever the GPUs leave after tp x pp x cp
  int64_t tp = 1, pp = 1, vpp = 1, ep = 1, cp = 1;
  int64_t zero = 0;
  Recompute recompute = Recompute::None;
  /// Only pipeline ranks below this one recompute; 0: all (Workload::recomputeRanks).
  int64_t recomputeRanks = 0;
  int64_t microBatch = 1;
  bool sequenceParallel = false;
  bool flashAttention = true;
  /// See Workload::tpCommOverlap; needs sequence parallelism.
  bool tpCommOverlap = false;
  /// See Workload::fusedGradAccumulation.
  bool fusedGradAccumulation = true;
  /// See Workload::syncTpBackward.
  bool syncTpBackward = false;
  /// ZeRO-Offload: fp32 master weights and moments in host memory, the
  /// optimizer step on the CPU.
  bool offloadOptimizer = false;
  /// OneFOneB becomes Interleaved when vpp > 1.
  Schedule schedule = Schedule::OneFOneB;
  /// ZeroBubbleAuto and Skip: see Workload::inflightLimit (one per pp rank).
  std::vector<int64_t> inflightLimit;
  /// Schedule::Skip only: SkipPipe's rules.
  SkipRules skip;
  /// Whether pipeline or data parallelism spans the outermost links.
  search::RankOrder order = search::RankOrder::PipelineOuter;
  /// Transformer layers per pipeline stage, for uneven partitions: one count
  /// per pp rank with vpp=1, or one per virtual stage (pp x vpp, stage s on
  /// rank s mod pp) when interleaving. Empty: layers split evenly over
  /// pp x vpp stages.
  std::vector<int64_t> stageLayers;
  /// Pipeline position -> pp rank (which device group runs which stage on a
  /// heterogeneous cluster). Empty: stage s on pp rank s.
  std::vector<int64_t> stageOrder;
};

struct WorkloadResult {
  Workload workload;
  std::string error; // one line naming the violated constraint and the numbers
  std::string hint;  // what would fix it, when one change would
  bool ok() const { return error.empty(); }
};

/// The cluster's levels (spec::clusterLevels) as the cost model sees their
/// links; empty when no mesh can be laid over the cluster.
std::vector<LinkLevel> linkLevels(const spec::Cluster &cluster);

/// The schedule `choice` runs: its OneFOneB means interleaved when vpp > 1.
Schedule effectiveSchedule(const StrategyChoice &choice);

WorkloadResult fromStrategy(const spec::Model &model, const spec::Cluster &cluster,
                            const spec::Training &training, const StrategyChoice &choice);

/// The compute model of the cluster's GPU at the training precision (the
/// first GPU type of a heterogeneous cluster).
ComputeModel computeModelFor(const spec::Cluster &cluster, const spec::Training &training);
/// One compute model per GPU type, in spec::nodeTypes order (the indices
/// Workload::stageDevice uses).
std::vector<ComputeModel> computeModelsFor(const spec::Cluster &cluster,
                                           const spec::Training &training);

/// "none", "selective", "full" -> Recompute; false for other words.
bool parseRecompute(const std::string &word, Recompute &out);
const char *recomputeName(Recompute recompute);
const char *scheduleName(Schedule schedule);

} // namespace loom::cost

#endif // LOOM_COSTMODEL_FROMSTRATEGY_H
