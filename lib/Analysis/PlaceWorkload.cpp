//===- PlaceWorkload.cpp - the cost model's view of placed IR -------------===//
//
// MoE ops carry one placement for the whole block. Routed experts take every
// axis the placement shards; the router, shared experts and norm (the rest of
// `params`, see `routed_params`) take the axes that do not shard by experts.
// ZeRO's flat sharding applies to both over the op's reduction axes.
//
// On a cluster of several kinds of node, each pipeline rank is priced on the
// device of the nodes it runs on (the slowest, and the smallest memory, when
// they differ), found through the mesh, `pipeline_ranks` and the cluster's
// node groups, as cost::fromStrategy finds it through the specs.
//
//===----------------------------------------------------------------------===//

#include "loom/Analysis/PlaceWorkload.h"

#include "loom/CostModel/Groups.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>
#include <set>

using namespace mlir;
using namespace loom;
using namespace loom::place;
using State = PlacementAttr::State;

cost::ComputeModel loom::computeModelFor(DeviceOp device) {
  std::string kind = device.getKind() ? device.getKind()->str() : device.getSymName().str();
  return cost::ComputeModel::forGpu(kind, device.getPeakTflops().convertToDouble(),
                                    device.getHbmGbytesPerS().convertToDouble());
}

std::vector<cost::ComputeModel> loom::computeModelsFor(ClusterOp cluster,
                                                       SymbolTableCollection &symbols) {
  std::vector<cost::ComputeModel> out;
  for (FlatSymbolRefAttr ref : cluster.getDeviceRefs())
    out.push_back(computeModelFor(symbols.lookupNearestSymbolFrom<DeviceOp>(cluster, ref)));
  return out;
}

namespace {

/// The cluster's levels and the mesh in the cost model's terms, and one
/// GroupShape per distinct set of mesh axes (parts sharing a group share its
/// gradient buckets).
class Groups {
public:
  Groups(ClusterOp cluster, MeshOp mesh, SymbolTableCollection &symbols,
         cost::Workload &workload)
      : workload_(workload) {
    for (auto axis : cluster.getAxes().getAsRange<AxisAttr>()) {
      auto tier = symbols.lookupNearestSymbolFrom<TierOp>(cluster, axis.getTier());
      links_.push_back({axis.getName().str(), axis.getSize(),
                        tier.getBandwidthGbps().convertToDouble() *
                            tier.getEfficiency().convertToDouble(),
                        tier.getLatencyUs().convertToDouble(), tier.getPerNode()});
      if (auto cells = cluster.getCellDcAttr(); cells && axis.getName().getValue() == "dc")
        links_.back().cellDc.assign(cells.asArrayRef().begin(), cells.asArrayRef().end());
    }
    for (auto laxis : mesh.getAxes().getAsRange<LogicalAxisAttr>()) {
      search::LogicalAxis axis{laxis.getName().str(), {}};
      for (auto [name, size] : llvm::zip(laxis.getPhysical(), laxis.getSizes()))
        axis.pieces.push_back({name.str(), size});
      mesh_.push_back(std::move(axis));
    }
  }

  /// Index in workload.groups of the group spanning `axes` (mesh axis names).
  int get(const std::set<std::string> &axes) {
    if (axes.empty())
      return 0;
    auto [it, inserted] = index_.try_emplace(axes, 0);
    if (inserted) {
      std::vector<std::string_view> names(axes.begin(), axes.end());
      workload_.groups.push_back(cost::groupOver(links_, mesh_, names));
      it->second = int(workload_.groups.size() - 1);
    }
    return it->second;
  }

  std::vector<cost::PipelineHop> hops(StringRef axis, const std::vector<int64_t> &order) const {
    return cost::axisHops(links_, mesh_, axis.str(), order);
  }
  bool multiDc() const { return cost::spansDatacenters(links_); }

private:
  cost::Workload &workload_;
  std::vector<cost::LinkLevel> links_;
  std::vector<search::LogicalAxis> mesh_;
  std::map<std::set<std::string>, int> index_;
};

cost::PartKind kindOf(Operation *op) {
  return TypeSwitch<Operation *, cost::PartKind>(op)
      .Case<EmbeddingOp>([](auto) { return cost::PartKind::Embedding; })
      .Case<AttentionOp>([](auto) { return cost::PartKind::Attention; })
      .Case<MlpOp>([](auto) { return cost::PartKind::Mlp; })
      .Case<MoeOp>([](auto) { return cost::PartKind::Moe; })
      .Default([](Operation *) { return cost::PartKind::Head; });
}

bool gated(StringRef activation) { return activation == "swiglu" || activation == "geglu"; }

} // namespace

FailureOr<cost::Workload> loom::workloadFromPlace(ModelOp model, SymbolTableCollection &symbols,
                                                  const PlaceWorkloadOptions &options) {
  MeshOp mesh;
  if (auto ref = model.getMeshAttr())
    mesh = symbols.lookupNearestSymbolFrom<MeshOp>(model, ref);
  if (!mesh)
    return model.emitOpError("has no mesh to estimate; run place-apply-strategy or "
                             "place-search first");
  auto cluster = symbols.lookupNearestSymbolFrom<ClusterOp>(mesh, mesh.getClusterAttr());
  SmallVector<FlatSymbolRefAttr> deviceRefs = cluster.getDeviceRefs();
  SmallVector<DeviceOp> devices;
  for (FlatSymbolRefAttr ref : deviceRefs)
    devices.push_back(symbols.lookupNearestSymbolFrom<DeviceOp>(cluster, ref));

  cost::Workload w;
  Groups groups(cluster, mesh, symbols, w);
  StringRef ppAxis = model.getPipelineAxis().value_or("");
  w.pp = ppAxis.empty() ? 1 : mesh.getAxisSize(ppAxis);
  w.vpp = model.getVirtualStages();
  w.gpus = cluster.getNumDevices();
  w.globalBatch = model.getGlobalBatch();
  w.microBatch = model.getMicroBatch();
  w.seq = model.getSeqLen();
  w.schedule = model.getVShape()   ? cost::Schedule::ZeroBubbleV
               : model.getDualPipe() ? cost::Schedule::DualPipe
               : w.vpp > 1          ? cost::Schedule::Interleaved
                                    : cost::Schedule::OneFOneB;
  bool fp32 = model.getDtype() == "fp32";
  w.setStateBytes(fp32, model.getDtype() == "fp16", model.getOptimizer() == "sgd",
                  model.getGradReduceBf16());
  auto hbmBytes = [](DeviceOp device) {
    return device.getHbmGib().convertToDouble() * double(1ull << 30);
  };
  w.hbmBytes = hbmBytes(devices.front());
  SmallVector<int64_t> rankOf = model.getPipelineRankOrder(w.pp);
  if (!ppAxis.empty()) {
    std::vector<int64_t> order;
    if (model.getPipelineRanksAttr())
      order.assign(rankOf.begin(), rankOf.end());
    w.hops = groups.hops(ppAxis, order);
  }
  w.multiDc = groups.multiDc();
  if (devices.size() > 1) {
    // A pipeline rank spanning several devices runs at the pace of the
    // slowest and must fit in the smallest.
    std::vector<std::vector<int64_t>> nodes = mesh.getNodesAlong(cluster, ppAxis);
    auto peak = [&](int type) { return devices[type].getPeakTflops().convertToDouble(); };
    for (int64_t position = 0; position < w.pp; ++position) {
      int slowest = -1;
      double hbm = 0;
      for (int64_t node : nodes[rankOf[position]]) {
        int type = int(llvm::find(deviceRefs, cluster.getNodeDevice(node)) - deviceRefs.begin());
        if (slowest < 0 || peak(type) < peak(slowest))
          slowest = type;
        double bytes = hbmBytes(devices[type]);
        hbm = hbm == 0 ? bytes : std::min(hbm, bytes);
      }
      w.stageDevice.push_back(slowest);
      w.stageHbmBytes.push_back(hbm);
    }
  }

  bool first = true;
  for (LayerOpInterface layer : model.getLayers()) {
    Operation *op = layer.getOperation();
    PlacementAttr placement = layer.getPlacementAttr();
    if (!placement)
      return op->emitOpError("has no placement to estimate");
    cost::Part part;
    part.kind = kindOf(op);
    part.name = layer.getLayerName().str();
    part.params = part.activeParams = layer.getParamCount();
    part.stage = layer.getStageIndex().value_or(0);

    cost::PartShape &s = part.shape;
    s.microBatch = model.getMicroBatch();
    s.seq = model.getSeqLen();
    s.hidden = model.getHidden();
    s.vocab = model.getVocab();
    s.flashAttention = options.flashAttention;
    s.dropout = model.getDropout();
    s.bytesPerElement = fp32 ? 4 : 2;

    // What each axis does (PlacementAttr::getAxisRoles), as names and sizes.
    PlacementAttr::AxisRoles roles = placement.getAxisRoles();
    auto names = [](ArrayRef<StringAttr> axes) {
      std::set<std::string> out;
      for (StringAttr axis : axes)
        out.insert(axis.str());
      return out;
    };
    auto size = [&](ArrayRef<StringAttr> axes) {
      int64_t n = 1;
      for (StringAttr axis : axes)
        n *= mesh.getAxisSize(axis.getValue());
      return n;
    };
    std::set<std::string> tpAxes = names(roles.tensor), epAxes = names(roles.expert),
                          cpAxes = names(roles.context), batchAxes = names(roles.batch),
                          reduceAxes = names(placement.getReduce());
    s.tp = size(roles.tensor);
    s.ep = size(roles.expert);
    s.cp = size(roles.context);
    s.sequenceParallel = roles.sequenceParallel;
    // Divisors of the routed experts' weights and of the rest: every sharded
    // axis divides the experts, all but the expert axes divide the rest.
    double expertAxes = 1, otherAxes = 1;
    for (const AxisMode &m : placement.getParams()) {
      if (m.mode != Mode::sharded)
        continue;
      double n = double(mesh.getAxisSize(m.axis.getValue()));
      expertAxes *= n;
      if (m.dim != Dim::experts)
        otherAxes *= n;
    }
    part.groups = {groups.get(tpAxes), groups.get(cpAxes), groups.get(epAxes),
                   groups.get(reduceAxes)};

    // State shards: the model-parallel split times ZeRO's flat shards.
    auto flat = [&](State state, bool gather) {
      double n = 1;
      for (const AxisMode &m : placement.getState(state))
        if (m.dim == Dim::flat && (m.mode == Mode::sharded ||
                                   (gather && m.mode == Mode::sharded_with_gather)))
          n *= mesh.getAxisSize(m.axis.getValue());
      return n;
    };
    double routed = 0, params = double(part.params);
    if (auto moe = dyn_cast<MoeOp>(op))
      routed = double(moe.getRoutedParams().value_or(moe.getParams()));
    // The router, shared experts and norm of an MoE op are whole along the
    // axes that shard experts while those axes split the batch: gradient
    // integrity reduces them over those axes too, so ZeRO shards them there.
    double otherReduce = 1;
    for (const std::string &axis : epAxes)
      if (batchAxes.count(axis))
        otherReduce *= double(mesh.getAxisSize(axis));
    auto blend = [&](double zero) {
      if (params == 0)
        return expertAxes * zero;
      double other = zero > 1 ? zero * otherReduce : 1;
      return params / (routed / (expertAxes * zero) + (params - routed) / (otherAxes * other));
    };
    part.shards.gatheredParams = blend(1);
    part.shards.params = blend(flat(State::Params, /*gather=*/true));
    part.shards.paramsGathered = flat(State::Params, true) > 1;
    part.shards.optim = blend(flat(State::Optim, false));
    part.shards.grads = blend(flat(State::Grads, false));
    StateStorage storage = placement.getStorage();
    part.shards.paramsOffloaded = storage.params == Storage::offloaded;
    part.shards.optimOffloaded = storage.optim == Storage::offloaded;
    part.shards.gradsOffloaded = storage.grads == Storage::offloaded;

    TypeSwitch<Operation *>(op)
        .Case<AttentionOp>([&](AttentionOp a) {
          part.firstLayer = a.getLayer();
          s.heads = a.getHeads();
          s.kvHeads = a.getKvHeads();
          s.headDim = a.getHeadDim();
          s.qLoraRank = a.getQLoraRank().value_or(0);
          s.kvLoraRank = a.getKvLoraRank().value_or(0);
          s.ropeHeadDim = a.getRopeHeadDim().value_or(0);
          s.vHeadDim = a.getVHeadDim().value_or(0);
          s.inBias = a.getQkvBias();
          s.outBias = a.getOutBias();
        })
        .Case<MlpOp>([&](MlpOp m) {
          part.firstLayer = m.getLayer();
          s.ffn = m.getFfn();
          s.gated = gated(m.getActivation());
          s.inBias = s.outBias = m.getBias();
        })
        .Case<MoeOp>([&](MoeOp m) {
          part.firstLayer = m.getLayer();
          s.ffn = m.getFfn();
          s.gated = gated(m.getActivation());
          s.experts = m.getExperts();
          s.topK = m.getTopK();
          s.sharedExperts = m.getSharedExperts();
          s.inBias = s.outBias = m.getBias();
          if (auto cf = m.getCapacityFactor())
            s.capacityFactor = cf->convertToDouble();
          // Touched per token: router and shared parts, top_k of the experts.
          part.activeParams = int64_t(params - routed + routed * double(s.topK) / double(s.experts));
        });

    if (first) {
      // Strategy-wide facts from the first layer: data-parallel ranks, ZeRO
      // stage, recomputation and the tp/cp/ep degrees.
      w.dp = size(roles.batch);
      w.cp = s.cp;
      StateStorage st = placement.getStorage();
      w.recompute = st.acts == Storage::materialized ? cost::Recompute::Full
                    : st.acts == Storage::selective  ? cost::Recompute::Selective
                                                     : cost::Recompute::None;
      w.zero = placement.getZeroStage();
      w.tpCommOverlap = options.tpCommOverlap && roles.sequenceParallel;
      first = false;
    }
    w.tp = std::max(w.tp, s.tp);
    w.ep = std::max(w.ep, s.ep);
    if (auto head = dyn_cast<HeadOp>(op))
      w.tiedEmbeddings = head.getTied();
    w.parts.push_back(part);
  }
  cost::addTiedEmbeddingCopy(w);
  // DualPipe splits the micro-batches between its directions, each filling the
  // pipeline.
  if (w.schedule == cost::Schedule::DualPipe &&
      (w.microBatches() % 2 != 0 || w.microBatches() < 2 * w.pp))
    return model.emitOpError("dual_pipe needs an even number of micro-batches per step, at "
                             "least 2 x pp = ")
           << 2 * w.pp << "; got " << w.microBatches();
  return w;
}
