//===- Simulator.h - discrete-event timeline of a schedule ------*- C++ -*-===//
//
// Runs a schedule on a model of the machine: each rank executes its program
// in order, one compute action at a time; an action starts when the rank is
// free and its producers have finished (plus the p2p time of the link when
// the producer ran on another rank); sends are asynchronous and cost the
// rank nothing, the transfer's time sits on the edge; a recv completes when
// its data has arrived; the optimizer step is a barrier over all ranks
// (Megatron clips gradients by a norm all-reduced across the pipeline).
//
// Two iteration times are reported: `makespan`, from the first action to the
// end of the optimizer step, and `span`, the longest time any one rank is
// busy from its first action to its last before the optimizer. `span` is the
// period when iterations overlap, as with the Zero Bubble paper's optimizer
// post-validation (Qi et al. 2024, §4), which is what makes ZB-H2's bubble
// vanish; `makespan` is what a synchronous optimizer step pays.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_SIMULATOR_H
#define LOOM_SCHEDULE_SIMULATOR_H

#include "loom/Schedule/Schedule.h"

#include <optional>
#include <string>
#include <vector>

namespace loom::sched {

struct ActionRef {
  int32_t rank = -1, index = -1;
  bool operator==(const ActionRef &) const = default;
};

struct Timeline {
  double makespan = 0;
  double span = 0;
  std::vector<std::vector<double>> start, end; ///< per rank, per action
  std::vector<double> busy;                    ///< compute seconds per rank
  std::vector<double> bubble;                  ///< makespan - busy, per rank
  std::vector<double> bubbleRatio;             ///< bubble / makespan
  std::vector<double> spanBubble;              ///< span - compute before the optimizer
  std::vector<double> peakActivations;         ///< activation units, per rank
  std::vector<double> peakActivationBytes;     ///< per rank; empty without Costs::activationBytes
  /// Actions whose chain of waits sets the makespan, first to last: each one
  /// started when its predecessor here ended (plus a link time).
  std::vector<ActionRef> criticalPath;

  double maxBubble() const;
  double maxSpanBubble() const;
};

/// Simulates a schedule that verify() accepts; std::nullopt (with `error`
/// set) if its programs cannot run to completion.
std::optional<Timeline> simulate(const Schedule &schedule, const Costs &costs,
                                 std::string *error = nullptr);

} // namespace loom::sched

#endif // LOOM_SCHEDULE_SIMULATOR_H
