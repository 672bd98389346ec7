//===- Sched.h - the pipeline-schedule dialect ------------------*- C++ -*-===//
//
// IR only: the dialect, its ops, and the conversions between a sched.schedule
// and lib/Schedule's loom::sched::Schedule, which the generators fill and the
// verifier and simulator read.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_DIALECTS_SCHED_SCHED_H
#define LOOM_DIALECTS_SCHED_SCHED_H

#include "loom/Schedule/Schedule.h"
#include "loom/Schedule/Verifier.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"

#include <vector>

namespace loom::sched {
/// The checks ActionOpInterface runs on every action op (see Sched.td).
mlir::LogicalResult verifyActionOp(mlir::Operation *op);
} // namespace loom::sched

#include "sched/SchedDialect.h.inc"
#include "sched/SchedInterfaces.h.inc"

#define GET_OP_CLASSES
#include "sched/SchedOps.h.inc"

namespace loom::sched {

/// A sched.schedule read into the library's data model, with the op behind
/// each action so that the library's diagnostics can be put on it.
struct ScheduleFromIR {
  Schedule schedule;
  VerifyOptions options; ///< mem_limit and path_rules
  std::vector<std::vector<mlir::Operation *>> actionOps; ///< rank -> program index -> op
};
/// Expects an op whose own verifier passed (ranks numbered 0..n-1).
ScheduleFromIR readSchedule(ScheduleOp op);

/// Builds `schedule` as `sched.schedule @name` at the builder's insertion
/// point; paths other than 0..S-1 become sched.path ops; `links` (ranks x
/// ranks p2p seconds), when given, are recorded for the simulator.
ScheduleOp buildSchedule(mlir::OpBuilder &builder, mlir::Location loc, llvm::StringRef name,
                         const Schedule &schedule, const VerifyOptions &options = {},
                         llvm::ArrayRef<double> links = {});

} // namespace loom::sched

#endif // LOOM_DIALECTS_SCHED_SCHED_H
