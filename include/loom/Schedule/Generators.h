//===- Generators.h - pipeline schedule generators --------------*- C++ -*-===//
//
// Every generator returns a schedule whose programs list compute actions and
// end with the optimizer step; call addCommunication() for explicit p2p.
// Sources of each ordering are cited where it is built (Generators.cpp,
// DualPipe.cpp, ListScheduler.cpp) and in docs/schedules.md.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_GENERATORS_H
#define LOOM_SCHEDULE_GENERATORS_H

#include "loom/Schedule/Schedule.h"

#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace loom::sched {

/// Fixed orderings; they do not look at costs.
Schedule gpipe(int32_t ranks, int32_t microBatches);
Schedule oneFOneB(int32_t ranks, int32_t microBatches);
/// Requires microBatches % ranks == 0 (Megatron's constraint).
Schedule interleaved1F1B(int32_t ranks, int32_t microBatches, int32_t virtualStages);
Schedule zeroBubbleH1(int32_t ranks, int32_t microBatches);
Schedule zeroBubbleH2(int32_t ranks, int32_t microBatches);
/// Requires even ranks, even microBatches and microBatches >= 2 * ranks.
Schedule dualPipe(int32_t ranks, int32_t microBatches);

/// The greedy list scheduler behind zb-auto, ZB-V and skip paths. It plays
/// the ranks forward in time and, whenever a rank is free, runs: a ready B
/// (the one with most backward work still ahead, then the oldest); else a
/// ready F (oldest microbatch first) if its activations fit; else a W. Ws
/// fill the gaps while waiting, and are forced when memory blocks an F.
struct ListPolicy {
  /// Activation units a rank may hold. A microbatch is admitted to a rank
  /// (its first F there) only when all its units on that rank fit, and in
  /// microbatch order, so admitted microbatches can always finish.
  double memoryLimit = std::numeric_limits<double>::infinity();
  /// Per rank, when not empty: rank r may hold rankMemoryLimit[r] units
  /// (memoryLimit is then unused). The planner sizes these from each rank's
  /// free memory, which differs by stage (embedding, head, optimizer shards).
  std::vector<double> rankMemoryLimit;
  bool splitBackward = true; ///< B and W, or one BW
  /// After a B, prefer an F that is ready over another B (and the other way
  /// round): the paper's steady state of Fs and Bs taken in turn, which keeps
  /// the first rank feeding the pipeline instead of draining it.
  bool alternate = false;
  /// What to do when a W is pending, nothing is ready, and the next known
  /// arrival comes sooner than the W would take.
  enum class Fill {
    Wait,         ///< idle until the arrival
    WhenBehind,   ///< run the W if waiting would make this rank the most idle
                  ///< one so far (the Zero Bubble paper's rule, §3.1)
    Always,       ///< run the W, delaying the arrival's consumer
  } partialFill = Fill::WhenBehind;
};
Schedule listSchedule(Schedule layout, const Costs &costs, const ListPolicy &policy);

/// Automatic zero-bubble schedule: runs the list scheduler under each fill
/// rule, with and without alternation, and returns the one with the shortest
/// simulated makespan (ties: the shorter span); on the linear layout ZB-H1
/// and ZB-H2 compete too where the limits hold their peaks. The layout fixes
/// stages and paths; W passes are split off.
/// `rankLimits`, when not empty, gives each rank its own limit instead.
Schedule zeroBubbleAuto(Schedule layout, const Costs &costs, double memoryLimit,
                        const std::vector<double> &rankLimits = {});
/// ZB-V: zeroBubbleAuto on the V-shape layout with 1F1B's memory (`ranks`
/// units, i.e. 2p chunk activations of half a rank's layers each).
Schedule zeroBubbleV(int32_t ranks, int32_t microBatches, const Costs &costs);

/// Named kinds for the CLI and the sched dialect.
enum class Kind { GPipe, OneFOneB, Interleaved, ZBH1, ZBH2, ZBV, ZBAuto, DualPipe };
const char *kindName(Kind kind); ///< "gpipe", "1f1b", "interleaved", "zb-h1", ...
std::optional<Kind> kindFromName(std::string_view name);

struct Shape {
  int32_t ranks = 1, microBatches = 1, virtualStages = 1;
};
/// Why `kind` cannot build `shape`, or "" when it can.
std::string checkShape(Kind kind, const Shape &shape);
/// The stages and paths `kind` runs on, without programs: what Costs are
/// sized from before calling generate().
Schedule layoutFor(Kind kind, const Shape &shape);
/// Builds a schedule of a kind checkShape() accepts. `costs` (sized from
/// layoutFor) and `memoryLimit` are read by the cost-driven kinds only:
/// zb-auto (activation units per rank; infinity: no limit; `rankLimits`, when
/// not empty, one per rank instead) and zb-v.
Schedule generate(Kind kind, const Shape &shape, const Costs &costs,
                  double memoryLimit = std::numeric_limits<double>::infinity(),
                  const std::vector<double> &rankLimits = {});

} // namespace loom::sched

#endif // LOOM_SCHEDULE_GENERATORS_H
