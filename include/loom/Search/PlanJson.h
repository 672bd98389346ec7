//===- PlanJson.h - planner results as JSON ---------------------*- C++ -*-===//
//
// What `loom plan --json` and `loom estimate --json` print and the Python
// module returns: each plan as loom.proto's Plan in protobuf's JSON mapping,
// with the search's counts, and one strategy's estimate stage by stage.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_PLANJSON_H
#define LOOM_SEARCH_PLANJSON_H

#include "loom/Search/Planner.h"

#include <nlohmann/json.hpp>

namespace loom::search {

/// A candidate as loom.proto's Plan (field names as in the schema; 64-bit
/// integers as strings, as protobuf's JSON mapping writes them).
nlohmann::json planJson(const spec::Model &model, const spec::Cluster &cluster,
                        const spec::Training &training, const Candidate &candidate);

/// {model, cluster, evaluated, rejected, search_seconds, fits, plans[, closest,
/// closest_fits_with]}: when nothing fits, the closest plan and the changes
/// (PlanResult::closestFixes) with which it would.
nlohmann::json planResultJson(const spec::Model &model, const spec::Cluster &cluster,
                              const spec::Training &training, const PlanResult &result);

/// The strategy line of `loom estimate`: "dp=2 tp=8 pp=4 vpp=1 ... order=pp-outer".
std::string estimateStrategy(const cost::StrategyChoice &choice, const cost::Workload &workload);

/// {model, cluster, strategy, step_time_s, ..., pipeline_model, ..., stages[]}:
/// `estimate` of `workload`, built from `choice`, with each pipeline stage's
/// memory by state and times per micro-batch; `simulated` when
/// simulateEstimate priced its pipeline.
nlohmann::json estimateJson(const spec::Model &model, const spec::Cluster &cluster,
                            const cost::StrategyChoice &choice, const cost::Workload &workload,
                            const cost::Estimate &estimate, bool simulated);

} // namespace loom::search

#endif // LOOM_SEARCH_PLANJSON_H
