//===- Estimate.cpp - place-estimate --------------------------------------===//

#include "loom/Analysis/PlaceWorkload.h"
#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/Memory.h"
#include "loom/Transforms/Passes.h"
#include "place/Place.h"

#include "mlir/IR/Builders.h"

namespace loom {
#define GEN_PASS_DEF_PLACEESTIMATE
#include "loom/Transforms/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::place;

namespace {
struct EstimatePass : loom::impl::PlaceEstimateBase<EstimatePass> {
  using PlaceEstimateBase::PlaceEstimateBase;
  void runOnOperation() override;
};
} // namespace

void EstimatePass::runOnOperation() {
  SymbolTableCollection symbols;
  Builder b(&getContext());
  for (ModelOp model : getOperation().getOps<ModelOp>()) {
    PlaceWorkloadOptions readOptions;
    readOptions.flashAttention = flash;
    readOptions.tpCommOverlap = tpOverlap;
    FailureOr<cost::Workload> workload = workloadFromPlace(model, symbols, readOptions);
    if (failed(workload))
      return signalPassFailure();
    auto mesh = symbols.lookupNearestSymbolFrom<MeshOp>(model, model.getMeshAttr());
    auto cluster = symbols.lookupNearestSymbolFrom<ClusterOp>(mesh, mesh.getClusterAttr());

    cost::EstimateOptions options;
    options.overlapGradReduce = options.overlapParamGather = overlap;
    options.memory.headroom = headroom;
    cost::Estimate e = cost::estimate(*workload, computeModelsFor(cluster, symbols), options);

    // Per layer: what one rank holds of it.
    for (auto [layer, part] : llvm::zip(model.getLayers(), workload->parts)) {
      const cost::StateShards &sh = part.shards;
      double p = double(part.params);
      NamedAttribute entries[] = {
          b.getNamedAttr("params_bytes",
                         b.getI64IntegerAttr(int64_t(p * workload->weightBytes / sh.params))),
          b.getNamedAttr("grads_bytes",
                         b.getI64IntegerAttr(int64_t(p * workload->gradBytes / sh.grads))),
          b.getNamedAttr("optim_bytes", b.getI64IntegerAttr(int64_t(
                                            p *
                                            double(workload->optimBytesPerParam +
                                                   workload->mainGradBytes) /
                                            sh.optim))),
          b.getNamedAttr("activation_bytes",
                         b.getI64IntegerAttr(int64_t(
                             cost::activationBytes(part, workload->recompute)))),
      };
      layer->setAttr("place.memory", b.getDictionaryAttr(entries));
    }
    SmallVector<int64_t> stageBytes;
    for (const cost::MemoryBreakdown &m : e.memory)
      stageBytes.push_back(int64_t(m.total()));
    model->setAttr("place.stage_memory", b.getDenseI64ArrayAttr(stageBytes));
    NamedAttribute summary[] = {
        b.getNamedAttr("step_time_s", b.getF64FloatAttr(e.stepTime)),
        b.getNamedAttr("tokens_per_s", b.getF64FloatAttr(e.tokensPerSecond)),
        b.getNamedAttr("tflops_per_gpu", b.getF64FloatAttr(e.tflopsPerGpu)),
        b.getNamedAttr("mfu", b.getF64FloatAttr(e.mfu)),
        b.getNamedAttr("peak_memory_bytes", b.getI64IntegerAttr(int64_t(e.peakMemoryBytes))),
        b.getNamedAttr("usable_memory_bytes", b.getI64IntegerAttr(int64_t(e.usableBytes))),
        b.getNamedAttr("fits", b.getBoolAttr(e.fits)),
    };
    model->setAttr("place.estimate", b.getDictionaryAttr(summary));
  }
}
