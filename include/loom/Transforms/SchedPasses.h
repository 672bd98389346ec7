//===- SchedPasses.h - passes over the sched dialect ------------*- C++ -*-===//
#ifndef LOOM_TRANSFORMS_SCHEDPASSES_H
#define LOOM_TRANSFORMS_SCHEDPASSES_H

#include "loom/Schedule/Schedule.h"
#include "loom/Schedule/Verifier.h"
#include "sched/Sched.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include "llvm/ADT/ArrayRef.h"

#include <array>
#include <memory>
#include <optional>
#include <string>

namespace loom {

#define GEN_PASS_DECL
#include "loom/Transforms/SchedPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "loom/Transforms/SchedPasses.h.inc"

/// The costs option of the sched passes: F,B,W,comm (default 1,1,1,0), or
/// std::nullopt with the reason in `error`.
std::optional<std::array<double, 4>> parseCosts(llvm::ArrayRef<double> costs,
                                                std::string &error);
/// Per-stage costs from F,B,W for a microbatch through a whole rank's layers:
/// a stage holding a share of them (activation units: an interleaved chunk,
/// half of ZB-V's V) costs that share, so kinds compare at equal work.
sched::Costs stageCosts(const sched::Schedule &layout, const std::array<double, 4> &costs);

/// A schedule request in the words of sched-generate's options, built and
/// checked. `loom schedule` calls it too, so the pass and the CLI accept and
/// refuse the same requests with the same messages.
struct ScheduleRequest {
  std::string kind = "1f1b";
  int64_t stages = 4, microbatches = 8, vpp = 1;
  std::vector<double> costs; ///< F,B,W,comm; empty: 1,1,1,0
  double memLimit = 0;       ///< 0: no limit
  std::string skip;          ///< SkipPipe rules and slow links (see SchedPasses.td)
  bool p2p = false;
};
struct GeneratedSchedule {
  sched::Schedule schedule;
  sched::Costs costs;            ///< what the generator assumed, slow links included
  sched::VerifyOptions options;  ///< the memory limit and path rules it was checked against
  std::string symbol;            ///< name for the sched.schedule op
  /// The p2p matrix to record in the IR when the request set links of its own
  /// (SkipPipe's slow links); empty otherwise.
  std::vector<double> links;
};
/// The schedule, or std::nullopt with a one-line reason in `error`.
std::optional<GeneratedSchedule> generateSchedule(const ScheduleRequest &request,
                                                  std::string &error);

} // namespace loom

#endif // LOOM_TRANSFORMS_SCHEDPASSES_H
