//===- DeriveStrategy.cpp - place-derive-strategy -------------------------===//
//
// Reads the strategy tuple back from placements by their meaning: the tensor-
// parallel axis is whichever shards attention by heads, the ZeRO stage is read
// from how optimizer state, gradients and parameters sit on the reduction axes.
// Names of mesh axes are never consulted, so hand-written IR derives as well.
//
//===----------------------------------------------------------------------===//

#include "loom/Transforms/Passes.h"
#include "place/Place.h"

#include "mlir/IR/Builders.h"

namespace loom {
#define GEN_PASS_DEF_PLACEDERIVESTRATEGY
#include "loom/Transforms/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::place;

namespace {

/// What one layer's placement says about the strategy. Fields a layer cannot
/// tell (tp for an embedding...) stay unset.
struct LayerView {
  std::optional<int64_t> tp, ep;
  int64_t dp = 1, cp = 1, zero = 0;
  bool sp = false;
  Storage acts = Storage::resident;
  llvm::SmallVector<StringAttr> batch; // axes activations are split by batch along
};

struct DeriveStrategyPass
    : loom::impl::PlaceDeriveStrategyBase<DeriveStrategyPass> {
  void runOnOperation() override;
};

} // namespace

static LayerView viewOf(PlacementAttr placement, MeshOp mesh) {
  PlacementAttr::AxisRoles roles = placement.getAxisRoles();
  auto size = [&](ArrayRef<StringAttr> axes) {
    int64_t n = 1;
    for (StringAttr axis : axes)
      n *= mesh.getAxisSize(axis.getValue());
    return n;
  };
  LayerView v;
  if (!roles.tensor.empty())
    v.tp = size(roles.tensor);
  if (!roles.expert.empty())
    v.ep = size(roles.expert);
  v.dp = size(roles.batch);
  v.batch = roles.batch;
  v.cp = size(roles.context);
  v.sp = roles.sequenceParallel;
  v.zero = placement.getZeroStage();
  v.acts = placement.getStorage().acts;
  return v;
}

void DeriveStrategyPass::runOnOperation() {
  ModuleOp module = getOperation();
  SymbolTableCollection symbols;
  for (ModelOp model : module.getOps<ModelOp>()) {
    MeshOp mesh;
    if (auto ref = model.getMeshAttr())
      mesh = symbols.lookupNearestSymbolFrom<MeshOp>(model, ref);
    if (!mesh) {
      model.emitOpError("has no mesh to derive a strategy from; run "
                        "place-apply-strategy or place-search first");
      return signalPassFailure();
    }

    std::optional<int64_t> tp, ep;
    std::optional<LayerView> common;
    for (LayerOpInterface layer : model.getLayers()) {
      PlacementAttr placement = layer.getPlacementAttr();
      if (!placement) {
        layer->emitOpError("has no placement");
        return signalPassFailure();
      }
      LayerView v = viewOf(placement, mesh);
      auto agree = [&](std::optional<int64_t> &seen, std::optional<int64_t> now,
                       StringRef what) {
        if (!now)
          return true;
        if (seen && *seen != *now) {
          layer->emitOpError() << "implies " << what << "=" << *now
                               << " but earlier layers imply " << what << "="
                               << *seen << "; no single strategy describes this model";
          return false;
        }
        seen = now;
        return true;
      };
      if (!agree(tp, v.tp, "tp") || !agree(ep, v.ep, "ep"))
        return signalPassFailure();
      if (!common) {
        common = v;
        continue;
      }
      if (common->dp != v.dp || common->cp != v.cp || common->zero != v.zero ||
          common->sp != v.sp || common->acts != v.acts) {
        layer->emitOpError("is placed unlike the layers before it (data, context "
                           "or ZeRO sharding, sequence parallelism or recompute "
                           "differ); no single strategy describes this model");
        return signalPassFailure();
      }
    }
    if (!common) {
      model.emitOpError("has no layers");
      return signalPassFailure();
    }
    StringRef recompute = common->acts == Storage::materialized ? "full"
                          : common->acts == Storage::selective  ? "selective"
                                                                : "none";
    Builder b(model.getContext());
    int64_t pp = model.getPipelineAxis() ? mesh.getAxisSize(*model.getPipelineAxis()) : 1;
    // The rank order: whether a data axis lies outside the pipeline axis.
    StringRef order = "pp-outer";
    for (auto axis : mesh.getAxes().getAsRange<LogicalAxisAttr>()) { // outermost first
      if (!model.getPipelineAxis() || axis.getName().getValue() == *model.getPipelineAxis())
        break;
      if (llvm::is_contained(common->batch, axis.getName()))
        order = "dp-outer";
    }
    NamedAttribute entries[] = {
        b.getNamedAttr("dp", b.getI64IntegerAttr(common->dp)),
        b.getNamedAttr("tp", b.getI64IntegerAttr(tp.value_or(1))),
        b.getNamedAttr("pp", b.getI64IntegerAttr(pp)),
        b.getNamedAttr("vpp", b.getI64IntegerAttr(model.getVirtualStages())),
        b.getNamedAttr("ep", b.getI64IntegerAttr(ep.value_or(1))),
        b.getNamedAttr("cp", b.getI64IntegerAttr(common->cp)),
        b.getNamedAttr("zero", b.getI64IntegerAttr(common->zero)),
        b.getNamedAttr("recompute", b.getStringAttr(recompute)),
        b.getNamedAttr("mbs", b.getI64IntegerAttr(model.getMicroBatch())),
        b.getNamedAttr("sp", b.getBoolAttr(common->sp)),
        b.getNamedAttr("order", b.getStringAttr(order)),
    };
    model->setAttr("place.strategy", b.getDictionaryAttr(entries));
  }
}
