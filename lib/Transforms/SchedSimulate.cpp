//===- SchedSimulate.cpp - sched-simulate ---------------------------------===//
//
// Records the simulator's figures on each schedule so that passes and tools
// further down (the planner's search, the launch-plan emitters) read one
// number instead of simulating again.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Simulator.h"
#include "loom/Transforms/SchedPasses.h"
#include "sched/Sched.h"

namespace loom {
#define GEN_PASS_DEF_SCHEDSIMULATE
#include "loom/Transforms/SchedPasses.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::sched;

namespace {
struct SchedSimulatePass : loom::impl::SchedSimulateBase<SchedSimulatePass> {
  using SchedSimulateBase::SchedSimulateBase;
  void runOnOperation() override;
};
} // namespace

void SchedSimulatePass::runOnOperation() {
  std::string error;
  std::optional<std::array<double, 4>> perRank = parseCosts(costs, error);
  if (!perRank) {
    getOperation().emitError("sched-simulate: ") << error;
    return signalPassFailure();
  }
  Builder builder(&getContext());
  for (ScheduleOp op : getOperation().getOps<ScheduleOp>()) {
    Schedule schedule = readSchedule(op).schedule;
    // The verifier has accepted the IR, so the programs run to completion.
    Costs priced = stageCosts(schedule, *perRank);
    // The links the schedule was made for, when it records them.
    if (auto links = op.getLinks())
      priced.p2p.assign(links->begin(), links->end());
    Timeline t = *simulate(schedule, priced);
    op->setAttr("sched.makespan", builder.getF64FloatAttr(t.makespan));
    op->setAttr("sched.span", builder.getF64FloatAttr(t.span));
    op->setAttr("sched.bubble_ratio", builder.getDenseF64ArrayAttr(t.bubbleRatio));
    op->setAttr("sched.peak_in_flight", builder.getDenseF64ArrayAttr(t.peakActivations));
  }
}
