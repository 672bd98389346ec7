//===- SkipPaths.h - SkipPipe path selection and scheduling -----*- C++ -*-===//
//
// SkipPipe (Blagoev, Chen, Ersoy, "SkipPipe: Partial and Reordered
// Pipelining Framework for Training LLMs in Heterogeneous Networks", 2025;
// gensyn-ai/skippipe) lets each microbatch skip some of the pipeline's middle
// stages or visit them in another order, so that on a network with slow
// links (across datacenters) microbatches can route around them, while every
// stage still trains on enough of each iteration's data to converge.
//
// choosePaths() picks one path per microbatch under PathRules, and
// skipPipe() schedules those paths with the list scheduler. Stages sit one
// per rank (stage s on rank s).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_SKIPPATHS_H
#define LOOM_SCHEDULE_SKIPPATHS_H

#include "loom/Schedule/Schedule.h"
#include "loom/Schedule/Verifier.h"

#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace loom::sched {

struct SkipOptions {
  int32_t ranks = 1;
  int32_t microBatches = 1;
  PathRules rules;
  double memoryLimit = std::numeric_limits<double>::infinity();
  bool splitBackward = false;
};

/// Sets the rule `key` names ("max-skip" or "min-share": a share in [0, 1];
/// "max-swaps": a whole number) from `value`. Returns "" when set, else why
/// not; `known` says whether `key` names a rule at all.
std::string setPathRule(std::string_view key, std::string_view value, PathRules &rules,
                        bool &known);

/// One path per microbatch satisfying opts.rules, chosen to minimise the
/// simulated iteration time on `costs` (sized for linearLayout(ranks, m)).
std::vector<std::vector<int32_t>> choosePaths(const Costs &costs, const SkipOptions &opts);

/// The paths of choosePaths, list-scheduled. Name "skip".
Schedule skipPipe(const Costs &costs, const SkipOptions &opts);

} // namespace loom::sched

#endif // LOOM_SCHEDULE_SKIPPATHS_H
