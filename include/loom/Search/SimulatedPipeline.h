//===- SimulatedPipeline.h - the schedule simulator for finalists -*- C++ -*-===//
//
// The cost model's pipeline term is analytic per schedule family (fast enough
// for every candidate). For the plans that reach the final ranking, the
// planner re-prices the pipeline with the discrete-event simulator of
// lib/Schedule: per-stage F, B and W times and the p2p time of each hop (its
// transfer plus latency, slower across datacenters) feed a generated
// schedule, and the simulated makespan replaces the analytic pipeline time.
// The same bridge lets the planner try the zero-bubble schedules, whose
// memory the cost model checks (ZB-H2 keeps up to 2p - 1 micro-batches).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_SIMULATEDPIPELINE_H
#define LOOM_SEARCH_SIMULATEDPIPELINE_H

#include "loom/CostModel/Estimate.h"
#include "loom/Schedule/Generators.h"
#include "loom/Schedule/SkipPaths.h"

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace loom::search {

struct SimulatedPipeline {
  double makespan = 0;   // pipeline time of one step, optimizer excluded
  double bubble = 0;     // makespan less the busiest rank's compute
  double maxBubbleRatio = 0;
  std::string schedule;  // the generator that built it ("1f1b", "zb-h1", ...)
  std::vector<double> peakInflight; // per pp rank: micro-batches held at the peak
  /// Skip paths: the share of the full paths' compute the chosen paths run
  /// (FLOPs and MFU scale by it); 1 otherwise.
  double executedShare = 1;
};

/// The schedule generator a workload runs and what it prices: the shape, and
/// per stage (a chunk of a rank under interleaving) the F, B and W times of one
/// micro-batch, with the p2p time of each hop.
struct PipelinePricing {
  sched::Kind kind = sched::Kind::OneFOneB;
  sched::Shape shape;
  sched::Costs costs;
  /// zb-auto: micro-batches each rank may hold (Workload::inflightLimit).
  std::vector<double> rankLimits;
  /// Skip paths: their rules and limit (kind is then the 1F1B layout's).
  std::optional<sched::SkipOptions> skip;
};

/// The most stage passes (micro-batches times pipeline stages, virtual ones
/// included) loom simulates. Real steps are far below it (Megatron's 1T run:
/// 512 micro-batches on 128 stages is 65,536); past it the simulator's memory
/// and time grow with the batch while the closed form, whose bubble is then a
/// sliver of the step, stays exact enough.
inline constexpr int64_t kMaxSimulatedStagePasses = int64_t(1) << 18;

/// Why `workload`'s pipeline is too large to simulate (its micro-batches times
/// stages past kMaxSimulatedStagePasses), or empty.
std::string simulationTooLarge(const cost::Workload &workload);

/// The schedule `priced` describes: generated for its kind, or SkipPipe
/// paths chosen and list-scheduled.
sched::Schedule buildSchedule(const PipelinePricing &priced);

/// Prices the pipeline of `workload` from `estimate`'s per-rank times (with
/// several stages per rank, each stage from its own parts on `computes`, the
/// models `estimate` was priced with; without them the rank's time splits
/// evenly); empty when its schedule kind cannot be built for this shape (e.g.
/// interleaving with micro-batches not a multiple of pp) or simulationTooLarge
/// says it is too large. A workload without
/// pipeline parallelism is one rank running 1F1B.
std::optional<PipelinePricing> pricePipeline(const cost::Workload &workload,
                                             const cost::Estimate &estimate,
                                             std::span<const cost::ComputeModel> computes);

/// Simulates the pipeline of `workload` as priced by pricePipeline. Empty when
/// the workload has no pipeline or pricePipeline is empty.
std::optional<SimulatedPipeline> simulatePipeline(const cost::Workload &workload,
                                                  const cost::Estimate &estimate,
                                                  std::span<const cost::ComputeModel> computes);

/// Replaces `estimate`'s analytic pipeline term with the simulated makespan
/// of `workload`'s schedule, as the planner prices its finalists: step time,
/// throughput and MFU follow it, the bubble is the busiest rank's idle time,
/// and skip paths count only the FLOPs they run. Leaves `estimate` alone and
/// returns empty when simulatePipeline does.
std::optional<SimulatedPipeline> simulateEstimate(cost::Estimate &estimate,
                                                  const cost::Workload &workload,
                                                  std::span<const cost::ComputeModel> computes);

} // namespace loom::search

#endif // LOOM_SEARCH_SIMULATEDPIPELINE_H
