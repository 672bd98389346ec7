//===- PlanJson.h - planner results as JSON ---------------------*- C++ -*-===//
//
// What `loom plan --json` prints and the Python module returns: each plan as
// loom.proto's Plan in protobuf's JSON mapping, with the search's counts.
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

/// {model, cluster, evaluated, rejected, search_seconds, fits, plans[, closest]}.
nlohmann::json planResultJson(const spec::Model &model, const spec::Cluster &cluster,
                              const spec::Training &training, const PlanResult &result);

} // namespace loom::search

#endif // LOOM_SEARCH_PLANJSON_H
