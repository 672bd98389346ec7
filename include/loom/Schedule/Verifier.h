//===- Verifier.h - checks a schedule can run and means training -*- C++ -*-===//
//
// verify() checks, in order: the layout (ranks, stages, paths); that every
// action sits on the rank hosting its stage, on its microbatch's path, once;
// that each (microbatch, stage) on a path runs F, then B then W (or one BW);
// that listed sends and recvs pair up along path edges; that the programs run
// to completion under blocking-recv semantics (a symbolic execution; a stall
// is reported with what each stuck rank waits for and the cycle of waits);
// the activation units each rank holds against a limit; and SkipPipe's path
// rules. Each problem is one diagnostic naming the rank and action, worded
// for the user, so that the sched dialect can attach it to the offending op.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_VERIFIER_H
#define LOOM_SCHEDULE_VERIFIER_H

#include "loom/Schedule/Schedule.h"

#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace loom::sched {

struct Diagnostic {
  int32_t rank = -1;  ///< -1 when no rank is at fault (layout, paths)
  int32_t index = -1; ///< action index in the rank's program, -1 for none
  std::string message;
  std::string str() const; ///< "rank 2, action 7: ..." or the bare message
};

/// SkipPipe's constraints on paths, relative to the stage order 0..S-1
/// (Blagoev et al. 2025, §3): the first and last stage are always visited,
/// no stage twice, at most `maxSkipFraction` of the middle stages skipped,
/// at most `maxSwaps` pairs of stages visited out of order, and every stage
/// run by at least `minStageShare` of the microbatches of an iteration.
struct PathRules {
  double maxSkipFraction = 0;
  int32_t maxSwaps = 0;
  double minStageShare = 1;
};

struct VerifyOptions {
  /// Activation units a rank may hold at once (1 = one microbatch's
  /// activations of a whole rank's layers).
  double memoryLimit = std::numeric_limits<double>::infinity();
  std::optional<PathRules> pathRules;
};

std::vector<Diagnostic> verify(const Schedule &schedule, const VerifyOptions &options = {});

/// Checks a set of paths (without programs) against the rules.
std::vector<Diagnostic> verifyPaths(const std::vector<std::vector<int32_t>> &paths,
                                    int32_t numStages, const PathRules &rules);

} // namespace loom::sched

#endif // LOOM_SCHEDULE_VERIFIER_H
