//===- Place.cpp - place dialect: registration and op verifiers -----------===//
//
// Local constraints are checked by each op's verifier; constraints that need the
// mesh (divisibility by axis sizes, gradient integrity) are checked by
// `place.model` once symbols resolve, and reported on the offending layer.
//
//===----------------------------------------------------------------------===//

#include "place/Place.h"

#include "loom/Search/AxisMapping.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"

using namespace mlir;
using namespace loom::place;

#include "place/PlaceDialect.cpp.inc"
#include "place/PlaceEnums.cpp.inc"
#include "place/PlaceInterfaces.cpp.inc"

namespace {
/// Prints placements once at the top of the module as #placement0, #placement1...
/// so that a 126-layer model does not repeat the same long attribute on every op.
struct PlaceOpAsmInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<PlacementAttr>(attr)) {
      os << "placement";
      return AliasResult::FinalAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void PlaceDialect::initialize() {
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "place/PlaceOps.cpp.inc"
      >();
  addInterfaces<PlaceOpAsmInterface>();
}

//===----------------------------------------------------------------------===//
// Tier, device, cluster, mesh
//===----------------------------------------------------------------------===//

/// Doubles in diagnostics as users write them ("0.5", "-5"), not "5.000000e-01".
static std::string show(double value) {
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%g", value);
  return text;
}

LogicalResult TierOp::verify() {
  if (getBandwidthGbps().convertToDouble() <= 0)
    return emitOpError("bandwidth_gbps must be > 0, got ")
           << show(getBandwidthGbps().convertToDouble());
  if (getLatencyUs().convertToDouble() < 0)
    return emitOpError("latency_us must be >= 0, got ")
           << show(getLatencyUs().convertToDouble());
  double efficiency = getEfficiency().convertToDouble();
  if (efficiency <= 0 || efficiency > 1)
    return emitOpError("efficiency must be in (0, 1], got ") << show(efficiency);
  return success();
}

LogicalResult DeviceOp::verify() {
  for (auto [name, value] :
       {std::pair<StringRef, double>{"peak_tflops", getPeakTflops().convertToDouble()},
        {"hbm_gib", getHbmGib().convertToDouble()},
        {"hbm_gbytes_per_s", getHbmGbytesPerS().convertToDouble()}})
    if (value <= 0)
      return emitOpError() << name << " must be > 0, got " << show(value);
  return success();
}

LogicalResult ClusterOp::verify() {
  if (getAxes().empty())
    return emitOpError("needs at least one axis");
  llvm::SmallSet<StringRef, 4> names;
  for (auto axis : getAxes().getAsRange<AxisAttr>())
    if (!names.insert(axis.getName().getValue()).second)
      return emitOpError("axis '") << axis.getName().getValue()
                                   << "' is declared twice";
  if (getDeviceAttr() && getGroupsAttr())
    return emitOpError("has both a device and node groups; with groups, each group "
                       "names its device");
  if (!getDeviceAttr() && !getGroupsAttr())
    return emitOpError("needs a device, or node groups that name theirs");
  if (auto groups = getGroupsAttr()) {
    if (groups.size() < 2)
      return emitOpError("has one node group; a cluster of one kind of node names its "
                         "device instead");
    ArrayRef<Attribute> axes = getAxes().getValue();
    if (axes.size() < 2 || cast<AxisAttr>(axes.back()).getName().getValue() != "gpu" ||
        cast<AxisAttr>(axes[axes.size() - 2]).getName().getValue() != "node")
      return emitOpError("has node groups, so its axes must end in 'node' and 'gpu' (the "
                         "nodes, then the GPUs of one node)");
    int64_t gpus = cast<AxisAttr>(axes.back()).getSize();
    int64_t nodes = 0;
    for (auto [i, group] : llvm::enumerate(groups.getAsRange<NodeGroupAttr>())) {
      if (group.getGpusPerNode() != gpus)
        return emitOpError("node group ")
               << i << " has " << group.getGpusPerNode()
               << " GPUs per node, but the 'gpu' axis has " << gpus
               << "; a mesh needs the same GPU count on every node";
      nodes += group.getCount();
    }
    if (nodes != getNumNodes())
      return emitOpError("node groups hold ")
             << nodes << " nodes, but the axes outside 'gpu' count " << getNumNodes();
  }
  if (auto cells = getCellDcAttr()) {
    AxisAttr dc = lookupAxis("dc");
    if (!dc)
      return emitOpError("has cell_dc but no 'dc' axis to map");
    if (int64_t(cells.size()) != dc.getSize())
      return emitOpError("cell_dc has ") << cells.size() << " entries but the 'dc' axis has "
                                          << dc.getSize() << " cells";
    llvm::ArrayRef<int32_t> dcOf = cells.asArrayRef();
    if (dcOf.front() != 0)
      return emitOpError("cell_dc must start at datacenter 0, got ") << dcOf.front();
    for (size_t i = 1; i < dcOf.size(); ++i)
      if (dcOf[i] != dcOf[i - 1] && dcOf[i] != dcOf[i - 1] + 1)
        return emitOpError("cell_dc[") << i << "] = " << dcOf[i]
                                       << ": datacenters must be numbered in cell order "
                                          "without gaps (expected "
                                       << dcOf[i - 1] << " or " << dcOf[i - 1] + 1 << ")";
    int32_t expected = dcOf.back();
    if (expected == 0)
      return emitOpError("cell_dc puts every cell in one datacenter; drop it and make "
                         "the cells one 'node' axis");
  }
  return success();
}

/// What collectives reach over a tier: its bandwidth times its efficiency.
static double effectiveGbps(TierOp tier) {
  return tier.getBandwidthGbps().convertToDouble() * tier.getEfficiency().convertToDouble();
}

LogicalResult ClusterOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (auto device = getDeviceAttr();
      device && !symbols.lookupNearestSymbolFrom<DeviceOp>(*this, device))
    return emitOpError("device '") << device.getValue() << "' is not a place.device";
  for (auto axis : getAxes().getAsRange<AxisAttr>())
    if (!symbols.lookupNearestSymbolFrom<TierOp>(*this, axis.getTier()))
      return emitOpError("axis '")
             << axis.getName().getValue() << "' uses tier '"
             << axis.getTier().getValue() << "', which is not a place.tier";
  auto groups = getGroupsAttr();
  if (!groups)
    return success();
  for (auto [i, group] : llvm::enumerate(groups.getAsRange<NodeGroupAttr>())) {
    if (!symbols.lookupNearestSymbolFrom<DeviceOp>(*this, group.getDevice()))
      return emitOpError("node group ")
             << i << " names device '" << group.getDevice().getValue()
             << "', which is not a place.device";
    for (auto [field, tier] : {std::pair<StringRef, FlatSymbolRefAttr>{"intra_node",
                                                                       group.getIntraNode()},
                               {"inter_node", group.getInterNode()}})
      if (!symbols.lookupNearestSymbolFrom<TierOp>(*this, tier))
        return emitOpError("node group ")
               << i << " has " << field << " tier '" << tier.getValue()
               << "', which is not a place.tier";
  }
  // A collective along an axis waits for its slowest nodes: the axis's tier
  // is the slowest of the groups' (ClusterOp::verify checked the names).
  for (auto [axisName, field] : {std::pair<StringRef, StringRef>{"gpu", "intra_node"},
                                 {"node", "inter_node"}}) {
    AxisAttr axis = lookupAxis(axisName);
    TierOp slowest;
    bool used = false;
    for (auto group : groups.getAsRange<NodeGroupAttr>()) {
      FlatSymbolRefAttr ref = field == "intra_node" ? group.getIntraNode() : group.getInterNode();
      auto tier = symbols.lookupNearestSymbolFrom<TierOp>(*this, ref);
      if (!slowest || effectiveGbps(tier) < effectiveGbps(slowest))
        slowest = tier;
      used |= ref == axis.getTier();
    }
    auto tier = symbols.lookupNearestSymbolFrom<TierOp>(*this, axis.getTier());
    if (!used || effectiveGbps(tier) > effectiveGbps(slowest))
      return emitOpError("axis '")
             << axisName << "' uses tier '" << axis.getTier().getValue()
             << "', but collectives along it run at the pace of the slowest " << field
             << " tier of its node groups, '" << slowest.getSymName() << "'";
  }
  return success();
}

int64_t ClusterOp::getNumDevices() {
  int64_t n = 1;
  for (auto axis : getAxes().getAsRange<AxisAttr>())
    n *= axis.getSize();
  return n;
}

AxisAttr ClusterOp::lookupAxis(StringRef name) {
  for (auto axis : getAxes().getAsRange<AxisAttr>())
    if (axis.getName().getValue() == name)
      return axis;
  return {};
}

int64_t ClusterOp::getNumNodes() {
  return getNumDevices() / cast<AxisAttr>(getAxes().getValue().back()).getSize();
}

FlatSymbolRefAttr ClusterOp::getNodeDevice(int64_t node) {
  auto groups = getGroupsAttr();
  if (!groups)
    return getDeviceAttr();
  for (auto group : groups.getAsRange<NodeGroupAttr>()) {
    if (node < group.getCount())
      return group.getDevice();
    node -= group.getCount();
  }
  return {};
}

SmallVector<FlatSymbolRefAttr> ClusterOp::getDeviceRefs() {
  auto groups = getGroupsAttr();
  if (!groups)
    return {getDeviceAttr()};
  SmallVector<FlatSymbolRefAttr> refs;
  for (auto group : groups.getAsRange<NodeGroupAttr>())
    if (!llvm::is_contained(refs, group.getDevice()))
      refs.push_back(group.getDevice());
  return refs;
}

LogicalResult MeshOp::verify() {
  llvm::SmallSet<StringRef, 4> names;
  for (auto axis : getAxes().getAsRange<LogicalAxisAttr>())
    if (!names.insert(axis.getName().getValue()).second)
      return emitOpError("axis '") << axis.getName().getValue()
                                   << "' is declared twice";
  return success();
}

LogicalResult MeshOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto cluster = symbols.lookupNearestSymbolFrom<ClusterOp>(*this, getClusterAttr());
  if (!cluster)
    return emitOpError("cluster '") << getCluster() << "' is not a place.cluster";
  llvm::DenseMap<StringRef, int64_t> used;
  for (auto axis : getAxes().getAsRange<LogicalAxisAttr>()) {
    for (auto [phys, size] : llvm::zip(axis.getPhysical(), axis.getSizes())) {
      if (!cluster.lookupAxis(phys.getValue()))
        return emitOpError("axis '")
               << axis.getName().getValue() << "' takes ranks of '"
               << phys.getValue() << "', which cluster '" << getCluster()
               << "' does not have";
      auto [it, inserted] = used.try_emplace(phys.getValue(), 1);
      it->second *= size;
    }
  }
  for (auto axis : cluster.getAxes().getAsRange<AxisAttr>()) {
    int64_t taken = used.lookup(axis.getName().getValue());
    if (taken == 0)
      taken = 1;
    if (taken != axis.getSize())
      return emitOpError("mesh takes ")
             << taken << " ranks of cluster axis '" << axis.getName().getValue()
             << "', which has " << axis.getSize()
             << "; the pieces of each cluster axis must multiply to its size";
  }
  return success();
}

LogicalAxisAttr MeshOp::lookupAxis(StringRef name) {
  for (auto axis : getAxes().getAsRange<LogicalAxisAttr>())
    if (axis.getName().getValue() == name)
      return axis;
  return {};
}

int64_t MeshOp::getAxisSize(StringRef name) {
  auto axis = lookupAxis(name);
  return axis ? axis.getSize() : 1;
}

int64_t MeshOp::getNumRanks() {
  int64_t n = 1;
  for (auto axis : getAxes().getAsRange<LogicalAxisAttr>())
    n *= axis.getSize();
  return n;
}

std::vector<std::vector<int64_t>> MeshOp::getNodesAlong(ClusterOp cluster, StringRef name) {
  std::vector<loom::search::PhysicalAxis> physical;
  for (auto axis : cluster.getAxes().getAsRange<AxisAttr>())
    physical.push_back({axis.getName().str(), axis.getSize()});
  std::vector<loom::search::LogicalAxis> mesh;
  for (auto laxis : getAxes().getAsRange<LogicalAxisAttr>()) {
    loom::search::LogicalAxis axis{laxis.getName().str(), {}};
    for (auto [phys, size] : llvm::zip(laxis.getPhysical(), laxis.getSizes()))
      axis.pieces.push_back({phys.str(), size});
    mesh.push_back(std::move(axis));
  }
  return loom::search::axisNodes(physical, mesh, name.str());
}

//===----------------------------------------------------------------------===//
// Layers
//===----------------------------------------------------------------------===//

/// Checks shared by every layer op.
template <typename LayerOp>
static LogicalResult verifyLayerCommon(LayerOp op) {
  if (op.getParams() < 0)
    return op.emitOpError("params must be >= 0, got ") << op.getParams();
  if (op.getFwdFlops() < 0)
    return op.emitOpError("fwd_flops must be >= 0, got ") << op.getFwdFlops();
  if (auto stage = op.getStage(); stage && *stage < 0)
    return op.emitOpError("stage must be >= 0, got ") << *stage;
  return success();
}

LogicalResult EmbeddingOp::verify() {
  if (failed(verifyLayerCommon(*this)))
    return failure();
  if (getVocab() <= 0 || getHidden() <= 0)
    return emitOpError("vocab and hidden must be > 0");
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyLayerCommon(*this)))
    return failure();
  if (getHeads() <= 0 || getKvHeads() <= 0 || getHeadDim() <= 0)
    return emitOpError("heads, kv_heads and head_dim must be > 0");
  if (getHeads() % getKvHeads() != 0)
    return emitOpError("kv_heads (") << getKvHeads() << ") must divide heads ("
                                     << getHeads() << ")";
  return success();
}

LogicalResult MlpOp::verify() {
  if (failed(verifyLayerCommon(*this)))
    return failure();
  if (getFfn() <= 0)
    return emitOpError("ffn must be > 0, got ") << getFfn();
  return success();
}

LogicalResult MoeOp::verify() {
  if (failed(verifyLayerCommon(*this)))
    return failure();
  if (getExperts() <= 0 || getFfn() <= 0)
    return emitOpError("experts and ffn must be > 0");
  if (getTopK() <= 0 || getTopK() > getExperts())
    return emitOpError("top_k must be in [1, experts=")
           << getExperts() << "], got " << getTopK();
  if (auto routed = getRoutedParams(); routed && (*routed < 0 || *routed > getParams()))
    return emitOpError("routed_params must be in [0, params=")
           << getParams() << "], got " << *routed;
  if (auto cf = getCapacityFactor(); cf && cf->convertToDouble() < 1)
    return emitOpError("capacity_factor must be >= 1 (absent: dropless), got ")
           << show(cf->convertToDouble());
  return success();
}

LogicalResult HeadOp::verify() {
  if (failed(verifyLayerCommon(*this)))
    return failure();
  if (getVocab() <= 0 || getHidden() <= 0)
    return emitOpError("vocab and hidden must be > 0");
  return success();
}

//===----------------------------------------------------------------------===//
// Model
//===----------------------------------------------------------------------===//

int64_t ModelOp::getStagePosition(int64_t stage, int64_t pp) {
  if (getVShape() && stage >= pp)
    return 2 * pp - 1 - stage;
  return stage % pp;
}

SmallVector<int64_t> ModelOp::getPipelineRankOrder(int64_t pp) {
  if (auto ranks = getPipelineRanksAttr())
    return SmallVector<int64_t>(ranks.asArrayRef());
  return llvm::to_vector(llvm::seq<int64_t>(0, pp));
}

/// `pipeline_ranks` and `pipeline_devices` against the pipeline axis and the
/// nodes its positions run on.
static LogicalResult verifyPipelinePositions(ModelOp model, MeshOp mesh, StringRef ppAxis,
                                             SymbolTableCollection &symbols) {
  DenseI64ArrayAttr ranks = model.getPipelineRanksAttr();
  ArrayAttr devices = model.getPipelineDevicesAttr();
  if (!ranks && !devices)
    return success();
  if (ppAxis.empty())
    return model.emitOpError() << (ranks ? "pipeline_ranks" : "pipeline_devices")
                               << " needs a pipeline_axis";
  int64_t pp = mesh.getAxisSize(ppAxis);
  auto onePerPosition = [&](StringRef what, size_t n) -> LogicalResult {
    if (int64_t(n) == pp)
      return success();
    return model.emitOpError() << what << " needs one entry per rank of pipeline axis '"
                               << ppAxis << "' (" << pp << "), got " << n;
  };
  if (ranks) {
    if (failed(onePerPosition("pipeline_ranks", ranks.size())))
      return failure();
    SmallVector<bool> taken(pp, false);
    for (auto [p, rank] : llvm::enumerate(ranks.asArrayRef())) {
      if (rank < 0 || rank >= pp)
        return model.emitOpError("pipeline_ranks[")
               << p << "] = " << rank << " is not a rank of pipeline axis '" << ppAxis
               << "' (0 to " << pp - 1 << ")";
      if (taken[rank])
        return model.emitOpError("pipeline_ranks[")
               << p << "] = " << rank
               << " repeats a rank; pipeline_ranks must be a permutation of the "
                  "pipeline axis's ranks";
      taken[rank] = true;
    }
  }
  if (!devices)
    return success();
  if (failed(onePerPosition("pipeline_devices", devices.size())))
    return failure();
  // The nodes of a position are defined only by a mesh that tiles its
  // cluster, and the mesh may come after the model.
  if (failed(mesh.verifySymbolUses(symbols)))
    return failure();
  auto cluster = symbols.lookupNearestSymbolFrom<ClusterOp>(mesh, mesh.getClusterAttr());
  std::vector<std::vector<int64_t>> nodes = mesh.getNodesAlong(cluster, ppAxis);
  SmallVector<int64_t> order = model.getPipelineRankOrder(pp);
  for (auto [p, device] : llvm::enumerate(devices.getAsRange<FlatSymbolRefAttr>())) {
    if (!symbols.lookupNearestSymbolFrom<DeviceOp>(model, device))
      return model.emitOpError("pipeline_devices[")
             << p << "] names '" << device.getValue() << "', which is not a place.device";
    SmallVector<FlatSymbolRefAttr> found;
    for (int64_t node : nodes[order[p]])
      if (FlatSymbolRefAttr d = cluster.getNodeDevice(node); !llvm::is_contained(found, d))
        found.push_back(d);
    if (found.size() > 1)
      return model.emitOpError("pipeline_devices[")
             << p << "] names " << device << ", but position " << p << " runs on rank "
             << order[p] << " of '" << ppAxis << "', whose nodes have " << found[0]
             << " and " << found[1]
             << "; only a position on one kind of node names a device";
    if (found.front() != device)
      return model.emitOpError("pipeline_devices[")
             << p << "] names " << device << ", but position " << p << " runs on rank "
             << order[p] << " of '" << ppAxis << "', whose nodes have " << found.front();
  }
  return success();
}

LogicalResult ModelOp::verify() {
  for (auto [name, value] : {std::pair<StringRef, int64_t>{"vocab", getVocab()},
                             {"hidden", getHidden()},
                             {"seq_len", getSeqLen()},
                             {"global_batch", getGlobalBatch()},
                             {"micro_batch", getMicroBatch()},
                             {"virtual_stages", getVirtualStages()}})
    if (value <= 0)
      return emitOpError() << name << " must be > 0, got " << value;
  if (getOptimizer() != "adam" && getOptimizer() != "sgd")
    return emitOpError("optimizer must be adam or sgd, got '") << getOptimizer() << "'";
  if (getGradReduceBf16() && getDtype() != "bf16" && getDtype() != "fp8")
    return emitOpError("grad_reduce_bf16 needs a bf16 or fp8 model, got dtype '")
           << getDtype() << "'";
  if (getVShape() && getVirtualStages() != 2)
    return emitOpError("v_shape folds two stages per pipeline position into a V: it needs "
                       "virtual_stages = 2, got ")
           << getVirtualStages();
  if (getDualPipe() && (getVirtualStages() != 1 || getVShape()))
    return emitOpError("dual_pipe runs one stage per pipeline position in each direction: it "
                       "needs virtual_stages = 1 and no v_shape");
  if (getGlobalBatch() % getMicroBatch() != 0)
    return emitOpError("micro_batch (")
           << getMicroBatch() << ") must divide global_batch ("
           << getGlobalBatch() << ")";
  for (Operation &op : *getBodyBlock())
    if (!isa<LayerOpInterface>(op))
      return op.emitOpError("is not a layer; place.model holds layer ops only");
  return success();
}

/// The extent that sharding a layer along `dim` must divide.
static std::optional<std::pair<StringRef, int64_t>> shardedExtent(Operation *op,
                                                                  Dim dim) {
  using R = std::optional<std::pair<StringRef, int64_t>>;
  return TypeSwitch<Operation *, R>(op)
      .Case<AttentionOp>([&](AttentionOp a) -> R {
        if (dim == Dim::heads)
          return std::pair<StringRef, int64_t>{"kv_heads", a.getKvHeads()};
        return std::nullopt;
      })
      .Case<MlpOp>([&](MlpOp m) -> R {
        if (dim == Dim::ffn)
          return std::pair<StringRef, int64_t>{"ffn", m.getFfn()};
        return std::nullopt;
      })
      .Case<MoeOp>([&](MoeOp m) -> R {
        if (dim == Dim::experts)
          return std::pair<StringRef, int64_t>{"experts", m.getExperts()};
        if (dim == Dim::ffn)
          return std::pair<StringRef, int64_t>{"ffn", m.getFfn()};
        return std::nullopt;
      })
      .Default([](Operation *) -> R { return std::nullopt; });
}

LogicalResult ModelOp::verifySymbolUses(SymbolTableCollection &symbols) {
  MeshOp mesh;
  if (auto ref = getMeshAttr()) {
    mesh = symbols.lookupNearestSymbolFrom<MeshOp>(*this, ref);
    if (!mesh)
      return emitOpError("mesh '") << ref.getValue() << "' is not a place.mesh";
  }
  StringRef ppAxis = getPipelineAxis().value_or("");
  if (!ppAxis.empty() && (!mesh || !mesh.lookupAxis(ppAxis)))
    return emitOpError("pipeline_axis '") << ppAxis << "' is not an axis of the mesh";
  if (failed(verifyPipelinePositions(*this, mesh, ppAxis, symbols)))
    return failure();
  if (getVShape() && ppAxis.empty())
    return emitOpError("v_shape needs a pipeline_axis: it places stages on pipeline positions");
  if (getDualPipe() && (ppAxis.empty() || mesh.getAxisSize(ppAxis) % 2 != 0))
    return emitOpError("dual_pipe needs a pipeline_axis of an even size: it pairs position p "
                       "with position pp - 1 - p");
  int64_t numStages = (ppAxis.empty() ? 1 : mesh.getAxisSize(ppAxis)) *
                      getVirtualStages();

  int64_t prevStage = 0;
  for (LayerOpInterface layer : getLayers()) {
    Operation *op = layer.getOperation();
    if (auto stage = layer.getStageIndex()) {
      if (*stage >= numStages)
        return op->emitOpError("stage ")
               << *stage << " is out of range: the model has " << numStages
               << " stages (pipeline size x virtual_stages)";
      if (*stage < prevStage)
        return op->emitOpError("stage ")
               << *stage << " comes after stage " << prevStage
               << "; stages must not decrease in layer order";
      prevStage = *stage;
    } else if (!ppAxis.empty()) {
      return op->emitOpError("has no stage, but the model is pipelined along '")
             << ppAxis << "'";
    }

    PlacementAttr placement = layer.getPlacementAttr();
    if (!placement)
      continue;
    if (!mesh)
      return op->emitOpError("has a placement but the model names no mesh");

    // Every axis a placement names exists, and is not the pipeline axis.
    for (auto state : {PlacementAttr::State::Params, PlacementAttr::State::Optim,
                       PlacementAttr::State::Grads, PlacementAttr::State::Acts})
      for (const AxisMode &m : placement.getState(state)) {
        if (!mesh.lookupAxis(m.axis.getValue()))
          return op->emitOpError()
                 << PlacementAttr::stateName(state) << " name axis '"
                 << m.axis.getValue() << "', which mesh '" << mesh.getSymName()
                 << "' does not have";
        if (m.axis.getValue() == ppAxis)
          return op->emitOpError()
                 << PlacementAttr::stateName(state) << " name the pipeline axis '"
                 << ppAxis << "'; pipeline placement is given by `stage`";
      }
    for (StringAttr axis : placement.getReduce())
      if (!mesh.lookupAxis(axis.getValue()))
        return op->emitOpError("reduces over axis '")
               << axis.getValue() << "', which mesh '" << mesh.getSymName()
               << "' does not have";

    // Divisibility of sharded extents by the axis size.
    for (const AxisMode &m : placement.getParams()) {
      int64_t n = mesh.getAxisSize(m.axis.getValue());
      if (m.mode == Mode::sharded && m.dim == Dim::heads) {
        auto attn = cast<AttentionOp>(op);
        if (attn.getHeads() % n != 0)
          return op->emitOpError("heads (")
                 << attn.getHeads() << ") are not divisible by axis '"
                 << m.axis.getValue() << "' of size " << n;
      }
      if (auto extent = shardedExtent(op, m.dim); extent && m.mode == Mode::sharded &&
                                                  extent->second % n != 0)
        return op->emitOpError()
               << extent->first << " (" << extent->second
               << ") are not divisible by axis '" << m.axis.getValue()
               << "' of size " << n;
      if (m.mode == Mode::sharded && m.dim == Dim::heads && !isa<AttentionOp>(op))
        return op->emitOpError("only attention shards parameters by heads");
      if (m.mode == Mode::sharded && m.dim == Dim::experts && !isa<MoeOp>(op))
        return op->emitOpError("only an MoE block shards parameters by experts");
    }
    int64_t batchShards = 1;
    for (const AxisMode &m : placement.getActs()) {
      if (m.mode != Mode::sharded)
        continue;
      int64_t n = mesh.getAxisSize(m.axis.getValue());
      if (m.dim == Dim::seq && getSeqLen() % n != 0)
        return op->emitOpError("seq_len (")
               << getSeqLen() << ") is not divisible by axis '"
               << m.axis.getValue() << "' of size " << n;
      if (m.dim == Dim::batch)
        batchShards *= n;
    }
    if (getGlobalBatch() % (batchShards * getMicroBatch()) != 0)
      return op->emitOpError("global_batch (")
             << getGlobalBatch() << ") is not divisible by the " << batchShards
             << " batch shards times micro_batch " << getMicroBatch();

    // Gradient integrity: sum gradients over exactly the axes along which every
    // rank holds the whole parameter but saw different data.
    llvm::SmallSet<StringRef, 4> reduce;
    for (StringAttr axis : placement.getReduce())
      reduce.insert(axis.getValue());
    for (auto axis : mesh.getAxes().getAsRange<LogicalAxisAttr>()) {
      StringRef name = axis.getName().getValue();
      if (name == ppAxis)
        continue;
      AxisMode p = placement.lookup(PlacementAttr::State::Params, name);
      AxisMode a = placement.lookup(PlacementAttr::State::Acts, name);
      bool dataSharded = a.mode == Mode::sharded;
      bool needed = isWholeForCompute(p.mode) && dataSharded;
      if (needed && !reduce.contains(name))
        return op->emitOpError("gradient integrity: parameters are whole on "
                               "every rank along '")
               << name << "' and activations are " << stringifyMode(a.mode)
               << "(" << stringifyDim(a.dim)
               << "), so gradients must be reduced over '" << name << "'";
      if (!needed && reduce.contains(name))
        return op->emitOpError("gradient integrity: gradients are reduced over '")
               << name << "', but "
               << (dataSharded ? "parameters are sharded there: each rank "
                                 "owns a different slice"
                               : "activations are replicated there: every rank "
                                 "already holds the full gradient");
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// TableGen'd op definitions
//===----------------------------------------------------------------------===//

#define GET_OP_CLASSES
#include "place/PlaceOps.cpp.inc"
