//===- PlaceToSpec.h - reading specs back from place IR ---------*- C++ -*-===//
//
// The inverse of SpecToPlace for what the planner needs: a model (blocks of
// identical layers), a cluster (tiers, devices, datacenters of node groups)
// and a training shape, read from an unplaced or placed `place` module. So
// place-search plans exactly as `loom plan` does on the specs the IR came from.
// Details the IR keeps only as parameter counts (norm kind, biases, a learned
// position table) are recovered by matching those counts.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CONVERSION_PLACETOSPEC_H
#define LOOM_CONVERSION_PLACETOSPEC_H

#include "loom/Spec/Spec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

namespace loom {

struct SpecInputs {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
};

/// Reads the module's single place.model and the cluster it is (or will be)
/// placed on. Emits an error on the offending op and fails when the module has
/// no model or no cluster, or several of either.
mlir::FailureOr<SpecInputs> specFromPlace(mlir::ModuleOp module);

} // namespace loom

#endif // LOOM_CONVERSION_PLACETOSPEC_H
