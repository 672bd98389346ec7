//===- ApplyCandidate.h - a planned strategy as pass options ----*- C++ -*-===//
//
// The planner's answer (search::Candidate) in the terms of
// place-apply-strategy, so `loom plan --emit-mlir` and place-search place a
// model the same way.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_TRANSFORMS_APPLYCANDIDATE_H
#define LOOM_TRANSFORMS_APPLYCANDIDATE_H

#include "loom/Search/Planner.h"
#include "loom/Transforms/Passes.h"

namespace loom {

/// Options that make place-apply-strategy place `candidate`, its uneven
/// stages and the pp ranks they run on included.
PlaceApplyStrategyOptions applyOptionsFor(const search::Candidate &candidate);

} // namespace loom

#endif // LOOM_TRANSFORMS_APPLYCANDIDATE_H
