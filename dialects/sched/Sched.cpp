//===- Sched.cpp - sched dialect: registration, syntax and verifiers ------===//
//
// Each op checks what it can see locally (indices against the enclosing
// schedule's attributes). Whether the programs mean training and can run —
// F before B before W, sends matched, no deadlock, memory, path rules — is
// the library verifier's job (lib/Schedule/Verifier.cpp): sched.schedule's
// region verifier runs it once its children are known to be well formed, and
// puts each diagnostic on the action, rank or schedule it names.
//
//===----------------------------------------------------------------------===//

#include "sched/Sched.h"

#include <cmath>

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallSet.h"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace mlir;
using namespace loom::sched;

#include "sched/SchedDialect.cpp.inc"
#include "sched/SchedInterfaces.cpp.inc"

void SchedDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "sched/SchedOps.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "sched/SchedOps.cpp.inc"

/// The shortest decimal that reads back as `value`, always with a '.', which
/// the MLIR lexer needs to see a float ("1.0", "0.25", "0.3333333333333333").
static std::string formatNumber(double value) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value)
      break;
  }
  std::string text = buf;
  if (text.find_first_of(".ein") == std::string::npos)
    text += ".0";
  else if (size_t e = text.find('e'); e != std::string::npos && text.find('.') == std::string::npos)
    text.insert(e, ".0");
  return text;
}

//===----------------------------------------------------------------------===//
// sched.schedule syntax:
//   @name ranks R microbatches M stage_ranks [..] units [..]
//   (mem_limit X)? (path_rules(max_skip F, max_swaps N, min_share G))?
//   (links [..])? attr-dict-with-keyword region
//===----------------------------------------------------------------------===//

ParseResult ScheduleOp::parse(OpAsmParser &parser, OperationState &result) {
  Builder &b = parser.getBuilder();
  OperationName opName = result.name;
  StringAttr name;
  int32_t ranks = 0, microBatches = 0;
  SmallVector<int32_t> stageRanks;
  SmallVector<double> units;
  if (parser.parseSymbolName(name, getSymNameAttrName(opName), result.attributes) ||
      parser.parseKeyword("ranks") || parser.parseInteger(ranks) ||
      parser.parseKeyword("microbatches") || parser.parseInteger(microBatches) ||
      parser.parseKeyword("stage_ranks") ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                     [&] { return parser.parseInteger(stageRanks.emplace_back()); }) ||
      parser.parseKeyword("units") ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                     [&] { return parser.parseFloat(units.emplace_back()); }))
    return failure();
  result.addAttribute(getNumRanksAttrName(opName), b.getI32IntegerAttr(ranks));
  result.addAttribute(getNumMicrobatchesAttrName(opName), b.getI32IntegerAttr(microBatches));
  result.addAttribute(getStageRanksAttrName(opName), b.getDenseI32ArrayAttr(stageRanks));
  result.addAttribute(getActivationUnitsAttrName(opName), b.getDenseF64ArrayAttr(units));

  double value = 0;
  if (succeeded(parser.parseOptionalKeyword("mem_limit"))) {
    if (parser.parseFloat(value))
      return failure();
    result.addAttribute(getMemLimitAttrName(opName), b.getF64FloatAttr(value));
  }
  if (succeeded(parser.parseOptionalKeyword("path_rules"))) {
    double skip = 0, share = 0;
    int32_t swaps = 0;
    if (parser.parseLParen() || parser.parseKeyword("max_skip") || parser.parseFloat(skip) ||
        parser.parseComma() || parser.parseKeyword("max_swaps") || parser.parseInteger(swaps) ||
        parser.parseComma() || parser.parseKeyword("min_share") || parser.parseFloat(share) ||
        parser.parseRParen())
      return failure();
    result.addAttribute(getMaxSkipFractionAttrName(opName), b.getF64FloatAttr(skip));
    result.addAttribute(getMaxSwapsAttrName(opName), b.getI32IntegerAttr(swaps));
    result.addAttribute(getMinStageShareAttrName(opName), b.getF64FloatAttr(share));
  }
  if (succeeded(parser.parseOptionalKeyword("links"))) {
    SmallVector<double> links;
    if (parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                       [&] { return parser.parseFloat(links.emplace_back()); }))
      return failure();
    result.addAttribute(getLinksAttrName(opName), b.getDenseF64ArrayAttr(links));
  }
  Region *body = result.addRegion();
  if (parser.parseOptionalAttrDictWithKeyword(result.attributes) || parser.parseRegion(*body))
    return failure();
  if (body->empty())
    body->emplaceBlock();
  return success();
}

void ScheduleOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printSymbolName(getSymName());
  p << " ranks " << getNumRanksAttr().getInt() << " microbatches "
    << getNumMicrobatchesAttr().getInt() << " stage_ranks [";
  llvm::interleaveComma(getStageRanks(), p);
  p << "] units [";
  llvm::interleaveComma(getActivationUnits(), p, [&](double u) { p << formatNumber(u); });
  p << "]";
  SmallVector<StringRef> elided{getSymNameAttrName(), getNumRanksAttrName(),
                                getNumMicrobatchesAttrName(), getStageRanksAttrName(),
                                getActivationUnitsAttrName()};
  if (auto limit = getMemLimitAttr()) {
    p << " mem_limit " << formatNumber(limit.getValueAsDouble());
    elided.push_back(getMemLimitAttrName());
  }
  // Partial rules (possible in generic form) stay in the attribute dictionary,
  // where the verifier reports them.
  if (getMaxSkipFractionAttr() && getMaxSwapsAttr() && getMinStageShareAttr()) {
    p << " path_rules(max_skip " << formatNumber(getMaxSkipFractionAttr().getValueAsDouble())
      << ", max_swaps " << getMaxSwapsAttr().getInt() << ", min_share "
      << formatNumber(getMinStageShareAttr().getValueAsDouble()) << ")";
    elided.append({getMaxSkipFractionAttrName(), getMaxSwapsAttrName(),
                   getMinStageShareAttrName()});
  }
  if (auto links = getLinks()) {
    p << " links [";
    llvm::interleaveComma(*links, p, [&](double t) { p << formatNumber(t); });
    p << "]";
    elided.push_back(getLinksAttrName());
  }
  p.printOptionalAttrDictWithKeyword((*this)->getAttrs(), elided);
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false, /*printBlockTerminators=*/false);
}

//===----------------------------------------------------------------------===//
// Verifiers
//===----------------------------------------------------------------------===//

LogicalResult ScheduleOp::verify() {
  int64_t ranks = getNumRanksAttr().getInt();
  int64_t microBatches = getNumMicrobatchesAttr().getInt();
  if (ranks < 1)
    return emitOpError("needs at least one rank, got ") << ranks;
  if (microBatches < 1)
    return emitOpError("needs at least one microbatch, got ") << microBatches;
  if (getStageRanks().empty())
    return emitOpError("needs at least one stage in stage_ranks");
  for (auto [stage, rank] : llvm::enumerate(getStageRanks()))
    if (rank < 0 || rank >= ranks)
      return emitOpError("stage ") << stage << " is hosted on rank " << rank
                                   << ", which does not exist (ranks 0.." << ranks - 1 << ")";
  if (getActivationUnits().size() != getStageRanks().size())
    return emitOpError("has ") << getActivationUnits().size() << " activation units for "
                               << getStageRanks().size() << " stages";
  for (auto [stage, units] : llvm::enumerate(getActivationUnits()))
    if (!(units > 0))
      return emitOpError("activation units of stage ")
             << stage << " must be > 0, got " << formatNumber(units);
  if (auto limit = getMemLimitAttr(); limit && !(limit.getValueAsDouble() > 0))
    return emitOpError("mem_limit must be > 0, got ") << formatNumber(limit.getValueAsDouble());

  if (auto links = getLinks()) {
    if (int64_t(links->size()) != ranks * ranks)
      return emitOpError("links needs ") << ranks * ranks << " times (ranks x ranks), got "
                                         << links->size();
    for (auto [i, t] : llvm::enumerate(*links)) {
      int64_t from = int64_t(i) / ranks, to = int64_t(i) % ranks;
      if (!(t >= 0) || !std::isfinite(t) || (from == to && t != 0))
        return emitOpError("link ") << from << " -> " << to << " must be "
                                    << (from == to ? "0" : "a time >= 0") << ", got "
                                    << formatNumber(t);
    }
  }

  int rules = bool(getMaxSkipFractionAttr()) + bool(getMaxSwapsAttr()) + bool(getMinStageShareAttr());
  if (rules != 0 && rules != 3)
    return emitOpError("path rules need max_skip_fraction, max_swaps and min_stage_share together");
  if (rules == 3) {
    double skip = getMaxSkipFractionAttr().getValueAsDouble();
    double share = getMinStageShareAttr().getValueAsDouble();
    if (!(skip >= 0 && skip <= 1))
      return emitOpError("path_rules max_skip must be in [0, 1], got ") << formatNumber(skip);
    if (getMaxSwapsAttr().getInt() < 0)
      return emitOpError("path_rules max_swaps must be >= 0, got ") << getMaxSwapsAttr().getInt();
    if (!(share >= 0 && share <= 1))
      return emitOpError("path_rules min_share must be in [0, 1], got ") << formatNumber(share);
  }

  int64_t nextRank = 0;
  llvm::SmallSet<int64_t, 16> pathOf;
  for (Operation &child : *getBodyBlock()) {
    if (auto rank = dyn_cast<RankOp>(child)) {
      if (rank.getRankAttr().getInt() != nextRank)
        return rank.emitOpError("is rank ") << rank.getRankAttr().getInt() << " where rank "
                                            << nextRank << " belongs: ranks are listed 0.."
                                            << ranks - 1 << " in order";
      ++nextRank;
    } else if (auto path = dyn_cast<PathOp>(child)) {
      if (!pathOf.insert(path.getMicrobatchAttr().getInt()).second)
        return path.emitOpError("is the second path of microbatch ")
               << path.getMicrobatchAttr().getInt();
    } else {
      return child.emitOpError("cannot appear in a sched.schedule, which holds sched.rank and "
                               "sched.path ops");
    }
  }
  if (nextRank != ranks)
    return emitOpError("has ") << nextRank << " sched.rank ops for " << ranks << " ranks";
  return success();
}

LogicalResult ScheduleOp::verifyRegions() {
  // Each micro-batch runs a forward on every stage of its path. A schedule
  // many sched.f ops short of its micro-batches is wrong wholesale: one error
  // says so, instead of one per missing forward and before the schedule is
  // read into a path per micro-batch (2^31 of them do not fit in memory).
  constexpr int64_t kListedMissing = 16;
  int64_t forwards = 0;
  for (RankOp rank : getRanks())
    for (Operation &action : *rank.getBodyBlock())
      forwards += isa<FOp>(action);
  if (getNumMicrobatchesAttr().getInt() - forwards > kListedMissing)
    return emitOpError("declares ") << getNumMicrobatchesAttr().getInt()
                                    << " micro-batches but holds " << forwards
                                    << " sched.f ops: every micro-batch needs a forward on each "
                                       "stage of its path";
  ScheduleFromIR ir = readSchedule(*this);
  std::vector<Diagnostic> diagnostics = loom::sched::verify(ir.schedule, ir.options);
  SmallVector<RankOp> ranks(getRanks());
  for (const Diagnostic &d : diagnostics) {
    Operation *at = getOperation();
    if (d.rank >= 0)
      at = d.index >= 0 ? ir.actionOps[d.rank][d.index] : ranks[d.rank].getOperation();
    at->emitOpError(d.message);
  }
  return success(diagnostics.empty());
}

LogicalResult PathOp::verify() {
  auto schedule = (*this)->getParentOfType<ScheduleOp>();
  int64_t microBatch = getMicrobatchAttr().getInt();
  if (microBatch < 0 || microBatch >= schedule.getNumMicrobatchesAttr().getInt())
    return emitOpError("microbatch ") << microBatch << " does not exist: the schedule has "
                                      << schedule.getNumMicrobatchesAttr().getInt();
  if (getStages().empty())
    return emitOpError("needs at least one stage");
  llvm::SmallSet<int32_t, 16> seen;
  for (int32_t stage : getStages()) {
    if (stage < 0 || stage >= schedule.getNumStages())
      return emitOpError("stage ") << stage << " does not exist: the schedule has "
                                   << schedule.getNumStages();
    if (!seen.insert(stage).second)
      return emitOpError("visits stage ") << stage << " twice";
  }
  return success();
}

LogicalResult RankOp::verify() {
  for (Operation &child : *getBodyBlock())
    if (!isa<ActionOpInterface>(child))
      return child.emitOpError("cannot appear in a sched.rank, which holds schedule actions");
  return success();
}

LogicalResult loom::sched::verifyActionOp(Operation *op) {
  auto rank = dyn_cast_or_null<RankOp>(op->getParentOp());
  auto schedule = rank ? dyn_cast_or_null<ScheduleOp>(rank->getParentOp()) : ScheduleOp();
  if (!schedule) // HasParent reports it
    return success();
  Action a = cast<ActionOpInterface>(op).getAction();
  if (a.op == Op::Optimizer)
    return success();
  int64_t microBatches = schedule.getNumMicrobatchesAttr().getInt();
  int32_t stages = schedule.getNumStages();
  int64_t here = rank.getRankAttr().getInt();
  if (a.microBatch < 0 || a.microBatch >= microBatches)
    return op->emitOpError("microbatch ")
           << a.microBatch << " does not exist: the schedule has " << microBatches;
  if (a.stage < 0 || a.stage >= stages)
    return op->emitOpError("stage ") << a.stage << " does not exist: the schedule has " << stages;
  if (int32_t host = schedule.getStageRanks()[a.stage]; host != here)
    return op->emitOpError("stage ") << a.stage << " runs on rank " << host << ", not on rank "
                                     << here;
  if (isCompute(a.op))
    return success();
  if (a.peerStage < 0 || a.peerStage >= stages)
    return op->emitOpError("peer stage ")
           << a.peerStage << " does not exist: the schedule has " << stages;
  if (schedule.getStageRanks()[a.peerStage] == here)
    return op->emitOpError("peer stage ")
           << a.peerStage << " is on this rank too: sends and receives cross ranks";
  return success();
}
