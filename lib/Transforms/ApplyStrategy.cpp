//===- ApplyStrategy.cpp - place-apply-strategy ---------------------------===//
//
// Turns a strategy tuple into a mesh and per-layer placements. The placement
// rules are the standard ones (Megatron-LM for tp/sp/cp/ep, ZeRO for state
// sharding); gradient-reduction axes are not hard-coded but computed from the
// placements, and ZeRO shards over exactly those axes.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/AxisMapping.h"
#include "loom/Transforms/Passes.h"
#include "place/Place.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/TypeSwitch.h"

namespace loom {
#define GEN_PASS_DEF_PLACEAPPLYSTRATEGY
#include "loom/Transforms/Passes.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::place;

namespace {

struct ApplyStrategyPass
    : loom::impl::PlaceApplyStrategyBase<ApplyStrategyPass> {
  using PlaceApplyStrategyBase::PlaceApplyStrategyBase;
  void runOnOperation() override;

private:
  PlacementAttr placementFor(Operation *layer, MeshOp mesh, Storage acts);
};

} // namespace

/// The parameter dimension tensor parallelism splits for each kind of layer.
static Dim tensorParallelDim(Operation *layer) {
  return TypeSwitch<Operation *, Dim>(layer)
      .Case<AttentionOp>([](auto) { return Dim::heads; })
      .Case<MlpOp, MoeOp>([](auto) { return Dim::ffn; })
      .Default([](Operation *) { return Dim::vocab; });
}

PlacementAttr ApplyStrategyPass::placementFor(Operation *layer, MeshOp mesh,
                                              Storage actStorage) {
  MLIRContext *ctx = &getContext();
  auto axis = [&](StringRef n) { return StringAttr::get(ctx, n); };
  SmallVector<AxisMode> params, optim, grads, acts;
  SmallVector<StringAttr> reduce;
  bool isMoe = isa<MoeOp>(layer);

  // Mesh axes outermost first, so every list reads in the same order.
  for (auto laxis : mesh.getAxes().getAsRange<LogicalAxisAttr>()) {
    StringRef name = laxis.getName().getValue();
    if (name == "pp")
      continue;
    if (name == "tp") {
      params.push_back({axis(name), Mode::sharded, tensorParallelDim(layer)});
      if (sp)
        acts.push_back({axis(name), Mode::sharded, Dim::seq});
    } else if (name == "ep" && isMoe) {
      params.push_back({axis(name), Mode::sharded, Dim::experts});
      acts.push_back({axis(name), Mode::sharded, Dim::batch});
    } else if (name == "cp") {
      acts.push_back({axis(name), Mode::sharded, Dim::seq});
    } else { // dp, and ep for layers that are not experts
      acts.push_back({axis(name), Mode::sharded, Dim::batch});
    }
  }
  // Sharded parameters bring their optimizer state and gradients with them.
  for (const AxisMode &p : params) {
    optim.push_back(p);
    grads.push_back(p);
  }
  // Gradients are summed where the parameter is whole but the data differs;
  // ZeRO shards over exactly those axes.
  for (const AxisMode &a : acts) {
    bool paramSharded = llvm::any_of(params, [&](const AxisMode &p) { return p.axis == a.axis; });
    if (paramSharded)
      continue;
    reduce.push_back(a.axis);
    AxisMode flat{a.axis, Mode::sharded, Dim::flat};
    if (zero >= 1)
      optim.push_back(flat);
    if (zero >= 2)
      grads.push_back(flat);
    if (zero >= 3)
      params.push_back({a.axis, Mode::sharded_with_gather, Dim::flat});
  }
  StateStorage storage;
  storage.acts = actStorage;
  return PlacementAttr::get(ctx, params, optim, grads, acts, storage, reduce);
}

void ApplyStrategyPass::runOnOperation() {
  ModuleOp module = getOperation();
  MLIRContext *ctx = &getContext();
  auto fail = [&](const Twine &msg) {
    module.emitError("place-apply-strategy: ") << msg;
    signalPassFailure();
  };

  for (auto [name, value] : {std::pair<StringRef, int64_t>{"dp", dp}, {"tp", tp},
                             {"pp", pp}, {"vpp", vpp}, {"ep", ep}, {"cp", cp},
                             {"mbs", mbs}})
    if (value < 1)
      return fail(Twine(name) + "=" + Twine(value) + " must be >= 1");
  if (zero < 0 || zero > 3)
    return fail("zero=" + Twine(zero) + " must be 0, 1, 2 or 3");
  std::optional<Storage> actStorage =
      llvm::StringSwitch<std::optional<Storage>>(recompute)
          .Case("none", Storage::resident)
          .Case("selective", Storage::selective)
          .Case("full", Storage::materialized)
          .Default(std::nullopt);
  if (!actStorage)
    return fail("recompute='" + recompute + "' must be none, selective or full");
  if (dp % ep != 0)
    return fail("ep=" + Twine(ep) + " must divide dp=" + Twine(dp) +
                " (experts shard over part of the data-parallel ranks)");
  if (vpp > 1 && pp == 1)
    return fail("vpp=" + Twine(vpp) + " needs pp > 1");
  if (vShape && (pp == 1 || vpp != 2))
    return fail("v-shape folds two stages per pipeline rank into a V: it needs pp > 1 and "
                "vpp=2, got pp=" + Twine(pp) + " vpp=" + Twine(vpp));
  if (dualPipe && (pp % 2 != 0 || vpp != 1 || vShape))
    return fail("dual-pipe feeds the pipeline from both ends: it needs an even pp, vpp=1 and "
                "no v-shape, got pp=" + Twine(pp) + " vpp=" + Twine(vpp));
  if (sp && tp == 1)
    return fail("sequence parallelism (sp) needs tp > 1");
  search::RankOrder rankOrder;
  if (!search::parseRankOrder(order, rankOrder))
    return fail("order='" + order + "' must be pp-outer or dp-outer");
  if (!pipelineRanks.empty()) {
    SmallVector<int64_t> sorted(pipelineRanks.begin(), pipelineRanks.end());
    llvm::sort(sorted);
    if (sorted != llvm::to_vector(llvm::seq<int64_t>(0, pp))) {
      std::string given;
      llvm::raw_string_ostream os(given);
      llvm::interleaveComma(pipelineRanks, os);
      return fail("pipeline-ranks must be a permutation of the pp=" + Twine(pp) +
                  " ranks 0 to " + Twine(pp - 1) + ", got " + given);
    }
  }

  auto clusters = llvm::to_vector(module.getOps<ClusterOp>());
  if (clusters.size() != 1)
    return fail("expected exactly one place.cluster, found " + Twine(clusters.size()));
  ClusterOp cluster = clusters.front();

  std::vector<search::PhysicalAxis> physical;
  for (auto a : cluster.getAxes().getAsRange<AxisAttr>())
    physical.push_back({a.getName().str(), a.getSize()});
  search::Carving carving =
      search::carveAxes(physical, search::strategyAxes(tp, cp, ep, dp, pp, rankOrder));
  if (!carving.ok())
    return fail(carving.error);

  SmallVector<Attribute> meshAxes;
  for (const search::LogicalAxis &la : carving.axes) {
    SmallVector<StringAttr> phys;
    SmallVector<int64_t> sizes;
    for (const search::Piece &p : la.pieces) {
      phys.push_back(StringAttr::get(ctx, p.physical));
      sizes.push_back(p.size);
    }
    meshAxes.push_back(LogicalAxisAttr::get(ctx, StringAttr::get(ctx, la.name), phys, sizes));
  }
  OpBuilder b(cluster->getContext());
  b.setInsertionPointAfter(cluster);
  for (MeshOp old : llvm::make_early_inc_range(module.getOps<MeshOp>()))
    old.erase();
  auto mesh = b.create<MeshOp>(cluster.getLoc(), "mesh", cluster.getSymName(),
                               b.getArrayAttr(meshAxes));

  // Where the pipeline positions run: the ranks of pp in the order asked for
  // and, on a cluster of node groups, the device of each position's nodes
  // (none when a position spans several kinds).
  SmallVector<int64_t> rankOf(pipelineRanks.begin(), pipelineRanks.end());
  if (rankOf.empty())
    rankOf = llvm::to_vector(llvm::seq<int64_t>(0, pp));
  bool reordered = rankOf != llvm::to_vector(llvm::seq<int64_t>(0, pp));
  SmallVector<Attribute> positionDevices;
  if (pp > 1 && cluster.getGroupsAttr()) {
    std::vector<std::vector<int64_t>> nodes = mesh.getNodesAlong(cluster, "pp");
    for (int64_t rank : rankOf) {
      FlatSymbolRefAttr device = cluster.getNodeDevice(nodes[rank].front());
      if (llvm::any_of(nodes[rank],
                       [&](int64_t node) { return cluster.getNodeDevice(node) != device; })) {
        positionDevices.clear();
        break;
      }
      positionDevices.push_back(device);
    }
  }

  for (ModelOp model : module.getOps<ModelOp>()) {
    model.setMesh(StringRef("mesh"));
    if (pp > 1)
      model.setPipelineAxis("pp");
    else
      model.removePipelineAxisAttr();
    if (reordered)
      model.setPipelineRanks(rankOf);
    else
      model.removePipelineRanksAttr();
    if (!positionDevices.empty())
      model.setPipelineDevicesAttr(b.getArrayAttr(positionDevices));
    else
      model.removePipelineDevicesAttr();
    model.setVirtualStages(vpp);
    model.setVShape(vShape);
    model.setDualPipe(dualPipe);
    model.setMicroBatch(mbs);

    // Transformer layers split evenly over pp x vpp stages unless stage-layers
    // lists the counts; the embedding goes with the first layer and the head
    // with the last.
    int64_t numLayers = 0;
    for (Operation &op : *model.getBodyBlock())
      if (auto attn = dyn_cast<AttentionOp>(op))
        numLayers = std::max<int64_t>(numLayers, attn.getLayer() + 1);
    int64_t stages = pp * vpp;
    if (pp > 1 && numLayers < stages)
      return fail("pp x vpp = " + Twine(stages) + " stages but model '" +
                  model.getSymName() + "' has " + Twine(numLayers) + " layers");
    SmallVector<int64_t> stageEnd; // first layer after each stage
    if (!stageLayers.empty()) {
      if (int64_t(stageLayers.size()) != stages)
        return fail("stage-layers needs one count per pipeline stage (pp x vpp = " +
                    Twine(stages) + "), got " + Twine(stageLayers.size()) + " counts");
      for (int64_t n : stageLayers) {
        if (n < 1)
          return fail("stage-layers: every stage needs at least one layer");
        stageEnd.push_back((stageEnd.empty() ? 0 : stageEnd.back()) + n);
      }
      if (stageEnd.back() != numLayers)
        return fail("stage-layers add up to " + Twine(stageEnd.back()) + " but model '" +
                    model.getSymName() + "' has " + Twine(numLayers) + " layers");
    }
    auto stageOf = [&](int64_t layer) -> int64_t {
      if (!stageEnd.empty())
        return llvm::upper_bound(stageEnd, layer) - stageEnd.begin();
      return layer * stages / numLayers;
    };
    for (Operation &op : *model.getBodyBlock()) {
      if (pp > 1) {
        int64_t stage = TypeSwitch<Operation *, int64_t>(&op)
                            .Case<EmbeddingOp>([](auto) { return 0; })
                            .Case<HeadOp>([&](auto) { return stages - 1; })
                            .Case<AttentionOp, MlpOp, MoeOp>([&](auto l) {
                              return stageOf(static_cast<int64_t>(l.getLayer()));
                            });
        op.setAttr("stage", b.getI64IntegerAttr(stage));
      } else {
        op.removeAttr("stage");
      }
      op.setAttr("placement", placementFor(&op, mesh, *actStorage));
    }
  }
}
