//===- SchedConversion.cpp - sched.schedule <-> loom::sched::Schedule ------===//
//
// The dialect's own verifier reads the IR into the library's data model, so
// both directions live with the dialect rather than in lib/Conversion (which
// depends on the dialect). A path equal to 0..S-1 is the default and is not
// written out, so linear, interleaved and V-shape schedules carry no
// sched.path ops and the IR shows only what is unusual.
//
//===----------------------------------------------------------------------===//

#include "sched/Sched.h"

#include <cmath>
#include <numeric>

using namespace mlir;

namespace loom::sched {

ScheduleFromIR readSchedule(ScheduleOp op) {
  ScheduleFromIR out;
  Schedule &s = out.schedule;
  s.name = op.getSymName().str();
  s.numRanks = static_cast<int32_t>(op.getNumRanksAttr().getInt());
  s.stageRank.assign(op.getStageRanks().begin(), op.getStageRanks().end());
  s.activationUnits.assign(op.getActivationUnits().begin(), op.getActivationUnits().end());
  std::vector<int32_t> full(s.stageRank.size());
  std::iota(full.begin(), full.end(), 0);
  s.paths.assign(op.getNumMicrobatchesAttr().getInt(), full);
  for (PathOp path : op.getPaths())
    s.paths[path.getMicrobatchAttr().getInt()].assign(path.getStages().begin(),
                                                      path.getStages().end());
  for (RankOp rank : op.getRanks()) {
    auto &program = s.programs.emplace_back();
    auto &ops = out.actionOps.emplace_back();
    for (Operation &action : *rank.getBodyBlock()) {
      program.push_back(cast<ActionOpInterface>(action).getAction());
      ops.push_back(&action);
    }
  }
  if (auto limit = op.getMemLimitAttr())
    out.options.memoryLimit = limit.getValueAsDouble();
  if (op.getMaxSkipFractionAttr() && op.getMaxSwapsAttr() && op.getMinStageShareAttr())
    out.options.pathRules = PathRules{op.getMaxSkipFractionAttr().getValueAsDouble(),
                                      static_cast<int32_t>(op.getMaxSwapsAttr().getInt()),
                                      op.getMinStageShareAttr().getValueAsDouble()};
  return out;
}

static void buildAction(OpBuilder &b, Location loc, const Action &a) {
  IntegerAttr mb = b.getI32IntegerAttr(a.microBatch), stage = b.getI32IntegerAttr(a.stage),
              peer = b.getI32IntegerAttr(a.peerStage);
  switch (a.op) {
  case Op::F:
    b.create<FOp>(loc, mb, stage);
    return;
  case Op::B:
    b.create<BOp>(loc, mb, stage);
    return;
  case Op::W:
    b.create<WOp>(loc, mb, stage);
    return;
  case Op::BW:
    b.create<BWOp>(loc, mb, stage);
    return;
  case Op::SendAct:
    b.create<SendActOp>(loc, mb, stage, peer);
    return;
  case Op::RecvAct:
    b.create<RecvActOp>(loc, mb, stage, peer);
    return;
  case Op::SendGrad:
    b.create<SendGradOp>(loc, mb, stage, peer);
    return;
  case Op::RecvGrad:
    b.create<RecvGradOp>(loc, mb, stage, peer);
    return;
  case Op::Optimizer:
    b.create<OptimizerOp>(loc);
    return;
  }
}

ScheduleOp buildSchedule(OpBuilder &b, Location loc, StringRef name, const Schedule &s,
                         const VerifyOptions &options, ArrayRef<double> links) {
  auto f64 = [&](double v) { return b.getF64FloatAttr(v); };
  FloatAttr limit = std::isinf(options.memoryLimit) ? FloatAttr() : f64(options.memoryLimit);
  FloatAttr skip, share;
  IntegerAttr swaps;
  if (options.pathRules) {
    skip = f64(options.pathRules->maxSkipFraction);
    swaps = b.getI32IntegerAttr(options.pathRules->maxSwaps);
    share = f64(options.pathRules->minStageShare);
  }
  auto op = b.create<ScheduleOp>(
      loc, b.getStringAttr(name), b.getI32IntegerAttr(s.numRanks),
      b.getI32IntegerAttr(s.numMicroBatches()), b.getDenseI32ArrayAttr(s.stageRank),
      b.getDenseF64ArrayAttr(s.activationUnits), limit, skip, swaps, share,
      links.empty() ? DenseF64ArrayAttr() : b.getDenseF64ArrayAttr(links));

  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&op.getBody().emplaceBlock());
  std::vector<int32_t> full(s.stageRank.size());
  std::iota(full.begin(), full.end(), 0);
  for (int32_t mb = 0; mb < s.numMicroBatches(); ++mb)
    if (s.paths[mb] != full)
      b.create<PathOp>(loc, b.getI32IntegerAttr(mb), b.getDenseI32ArrayAttr(s.paths[mb]));
  for (int32_t r = 0; r < s.numRanks; ++r) {
    auto rank = b.create<RankOp>(loc, b.getI32IntegerAttr(r));
    OpBuilder::InsertionGuard inRank(b);
    b.setInsertionPointToStart(&rank.getBody().emplaceBlock());
    for (const Action &a : s.programs[r])
      buildAction(b, loc, a);
  }
  return op;
}

} // namespace loom::sched
