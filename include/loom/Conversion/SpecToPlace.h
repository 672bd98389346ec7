//===- SpecToPlace.h - lowering specs into place IR -------------*- C++ -*-===//
//
// Builds an unplaced `place` module from a model, a cluster and a training spec:
// tiers, the device (or, on a cluster mixing kinds of node, its node groups and
// their devices), the cluster's physical axes, and one layer op per
// embedding / attention / MLP or MoE / head with parameter and FLOP counts.
// Placements are added later by passes (place-apply-strategy, place-search).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CONVERSION_SPECTOPLACE_H
#define LOOM_CONVERSION_SPECTOPLACE_H

#include "loom/Spec/Spec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace loom {

/// Registers what the lowered IR needs (the place dialect).
void registerSpecToPlaceDialects(mlir::DialectRegistry &registry);

/// Lowers the specs. Returns null after emitting an error at `loc` when no
/// mesh can be laid over the cluster (nodes with different GPU counts).
mlir::OwningOpRef<mlir::ModuleOp> lowerSpecToPlace(mlir::MLIRContext *context,
                                                   const spec::Model &model,
                                                   const spec::Cluster &cluster,
                                                   const spec::Training &training,
                                                   mlir::Location loc);

/// Forward FLOPs per token of attention at sequence length `seqLen`: the
/// projections (2 FLOPs per weight) plus QK^T and AV over the whole sequence
/// (Megatron's convention: no causal halving).
int64_t attentionForwardFlops(const spec::Model &model, const spec::Block &block,
                              int64_t seqLen);

} // namespace loom

#endif // LOOM_CONVERSION_SPECTOPLACE_H
