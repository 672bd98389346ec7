//===- Search.cpp - place-search ------------------------------------------===//
//
// The planner as a pass: specs are read back from the IR, search::plan picks
// the fastest fitting strategy, and place-apply-strategy (run as a nested
// pipeline) materialises it, so the placements are exactly those
// `loom plan --emit-mlir` prints for the same inputs.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/PlaceToSpec.h"
#include "loom/Support/Table.h"
#include "loom/Transforms/ApplyCandidate.h"
#include "place/Place.h"

#include "mlir/IR/Builders.h"
#include "mlir/Pass/PassManager.h"

namespace loom {
#define GEN_PASS_DEF_PLACESEARCH
#include "loom/Transforms/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::place;

namespace {

struct SearchPass : loom::impl::PlaceSearchBase<SearchPass> {
  using PlaceSearchBase::PlaceSearchBase;
  void runOnOperation() override;
};

} // namespace

PlaceApplyStrategyOptions loom::applyOptionsFor(const search::Candidate &candidate) {
  const cost::StrategyChoice &s = candidate.choice;
  PlaceApplyStrategyOptions apply;
  apply.dp = candidate.dp;
  apply.tp = s.tp;
  apply.pp = s.pp;
  apply.vpp = s.vpp;
  apply.vShape = s.schedule == cost::Schedule::ZeroBubbleV;
  apply.dualPipe = s.schedule == cost::Schedule::DualPipe;
  apply.ep = s.ep;
  apply.cp = s.cp;
  apply.zero = s.zero;
  apply.recompute = cost::recomputeName(s.recompute);
  apply.mbs = s.microBatch;
  apply.sp = s.sequenceParallel;
  apply.order = search::rankOrderName(s.order);
  apply.stageLayers = s.stageLayers;
  apply.pipelineRanks = s.stageOrder;
  return apply;
}

void SearchPass::runOnOperation() {
  ModuleOp module = getOperation();
  FailureOr<SpecInputs> in = specFromPlace(module);
  if (failed(in))
    return signalPassFailure();
  ModelOp modelOp = *module.getOps<ModelOp>().begin();

  search::PlannerOptions options;
  options.topK = 1;
  options.flashAttention = flash;
  options.tpCommOverlap = tpOverlap;
  options.estimate.overlapGradReduce = options.estimate.overlapParamGather = overlap;
  options.estimate.memory.headroom = headroom;
  search::PlanResult r = search::plan(in->model, in->cluster, in->training, options);
  if (!r.anyFits) {
    InFlightDiagnostic diag = modelOp.emitOpError("fits no strategy on this cluster");
    if (r.evaluated > 0)
      diag << ": the closest (" << search::describe(r.closest) << ") needs "
           << gib(r.closest.estimate.peakMemoryBytes, 1) << " GiB per GPU, "
           << gib(r.closest.estimate.usableBytes, 1) << " GiB usable";
    for (const search::FitFix &fix : r.closestFixes)
      diag.attachNote() << "it fits with "
                        << search::describeFix(fix, r.closest, "the optimizer in host memory");
    return signalPassFailure();
  }

  const search::Candidate &best = r.best.front();
  OpPassManager pipeline(ModuleOp::getOperationName());
  pipeline.addPass(createPlaceApplyStrategy(applyOptionsFor(best)));
  if (failed(runPipeline(pipeline, module)))
    return signalPassFailure();

  Builder b(&getContext());
  const cost::Estimate &e = best.estimate;
  NamedAttribute entries[] = {
      b.getNamedAttr("strategy", b.getStringAttr(search::describe(best))),
      b.getNamedAttr("evaluated", b.getI64IntegerAttr(r.evaluated)),
      b.getNamedAttr("step_time_s", b.getF64FloatAttr(e.stepTime)),
      b.getNamedAttr("mfu", b.getF64FloatAttr(e.mfu)),
      b.getNamedAttr("peak_memory_bytes", b.getI64IntegerAttr(int64_t(e.peakMemoryBytes))),
  };
  modelOp->setAttr("place.search", b.getDictionaryAttr(entries));
}
