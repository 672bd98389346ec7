//===- PlaceWorkload.h - the cost model's view of placed IR -----*- C++ -*-===//
//
// Reads a placed `place.model` into the cost model's Workload: shard counts
// are products of mesh-axis sizes along which each state is sharded, process
// groups are the mesh axes a placement shards (tensor: weights by heads, ffn
// or vocab; expert: weights by experts; context: activations by sequence where
// weights are whole; reduction: the placement's `reduce` axes), laid over the
// cluster's link tiers. Nothing is read from axis names. On a cluster of
// several kinds of node, each pipeline rank gets the device its nodes have.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_ANALYSIS_PLACEWORKLOAD_H
#define LOOM_ANALYSIS_PLACEWORKLOAD_H

#include "loom/CostModel/Workload.h"
#include "place/Place.h"

#include "mlir/IR/SymbolTable.h"

namespace loom {

struct PlaceWorkloadOptions {
  bool flashAttention = true;
  /// Workload::tpCommOverlap (applies where tp runs with sequence parallelism).
  bool tpCommOverlap = false;
};

/// Builds the workload of `model`, or emits an error on the offending op and
/// fails (no mesh, unplaced layers, unknown device).
mlir::FailureOr<cost::Workload> workloadFromPlace(place::ModelOp model,
                                                  mlir::SymbolTableCollection &symbols,
                                                  const PlaceWorkloadOptions &options = {});

/// The compute model of a `place.device`.
cost::ComputeModel computeModelFor(place::DeviceOp device);
/// One compute model per device of `cluster`, in ClusterOp::getDeviceRefs
/// order (the indices Workload::stageDevice uses).
std::vector<cost::ComputeModel> computeModelsFor(place::ClusterOp cluster,
                                                 mlir::SymbolTableCollection &symbols);

} // namespace loom

#endif // LOOM_ANALYSIS_PLACEWORKLOAD_H
