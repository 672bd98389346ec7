//===- Place.td - the placement-semantics dialect -----------*- tablegen -*-===//
//
// `place` describes where the training state of every layer lives on a cluster.
// A cluster is a hierarchy of physical axes (dc, node, gpu), each bound to a link
// tier; a mesh regroups those devices into named logical axes (dp, tp, pp, ep, cp);
// a model is a sequence of layer ops, each placing its four states (parameters,
// optimizer state, gradients, activations) with one mode per logical axis.
// Parallel strategies are derived from placements, not stored beside them.
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_PLACE_TD
#define LOOM_PLACE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"

def Place_Dialect : Dialect {
  let name = "place";
  let cppNamespace = "::loom::place";
  let summary = "Placement semantics of training state on hierarchical clusters";
  let description = [{
    Placement semantics (Mehta, arXiv 2601.02311): each parallel strategy is a choice
    of how four training states are placed on devices. Memory and communication per
    rank follow from the placement. The verifiers enforce the two conditions under
    which distributed training equals single-device training: gradient integrity and
    state consistency.
  }];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def Place_ModeReplicated : I32EnumAttrCase<"replicated", 0>;
def Place_ModeSharded : I32EnumAttrCase<"sharded", 1>;
def Place_ModeShardedWithGather : I32EnumAttrCase<"sharded_with_gather", 2>;
def Place_Mode : I32EnumAttr<"Mode", "placement of a state along one mesh axis",
    [Place_ModeReplicated, Place_ModeSharded, Place_ModeShardedWithGather]> {
  let cppNamespace = "::loom::place";
  let genSpecializedAttr = 0;
}

def Place_StorageResident : I32EnumAttrCase<"resident", 0>;
def Place_StorageOffloaded : I32EnumAttrCase<"offloaded", 1>;
def Place_StorageMaterialized : I32EnumAttrCase<"materialized", 2>;
def Place_StorageSelective : I32EnumAttrCase<"selective", 3>;
def Place_Storage : I32EnumAttr<"Storage", "where a state lives between uses",
    [Place_StorageResident, Place_StorageOffloaded, Place_StorageMaterialized,
     Place_StorageSelective]> {
  let cppNamespace = "::loom::place";
  let genSpecializedAttr = 0;
}

def Place_DimNone : I32EnumAttrCase<"none", 0>;
def Place_DimBatch : I32EnumAttrCase<"batch", 1>;
def Place_DimSeq : I32EnumAttrCase<"seq", 2>;
def Place_DimHidden : I32EnumAttrCase<"hidden", 3>;
def Place_DimHeads : I32EnumAttrCase<"heads", 4>;
def Place_DimFfn : I32EnumAttrCase<"ffn", 5>;
def Place_DimExperts : I32EnumAttrCase<"experts", 6>;
def Place_DimVocab : I32EnumAttrCase<"vocab", 7>;
def Place_DimFlat : I32EnumAttrCase<"flat", 8>;
def Place_Dim : I32EnumAttr<"Dim", "the tensor dimension a sharding splits",
    [Place_DimNone, Place_DimBatch, Place_DimSeq, Place_DimHidden, Place_DimHeads,
     Place_DimFfn, Place_DimExperts, Place_DimVocab, Place_DimFlat]> {
  let cppNamespace = "::loom::place";
  let genSpecializedAttr = 0;
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

class Place_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Place_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def Place_AxisAttr : Place_Attr<"Axis", "axis"> {
  let summary = "a physical axis of a cluster, bound to the link tier joining it";
  let description = [{
    `#place.axis<"gpu", 8, @nvlink4>`: 8 devices along this axis, connected by the
    `place.tier` named. Constraints: the name is not empty; the size is at least 1.
  }];
  let parameters = (ins "mlir::StringAttr":$name, "int64_t":$size,
                        "mlir::FlatSymbolRefAttr":$tier);
  let assemblyFormat = "`<` $name `,` $size `,` $tier `>`";
  let genVerifyDecl = 1;
}

def Place_NodeGroupAttr : Place_Attr<"NodeGroup", "nodes"> {
  let summary = "nodes of one kind in a cluster that mixes kinds of node";
  let description = [{
    `#place.nodes<count = 8, device = @a100, gpus_per_node = 8,
    intra_node = @nvlink3, inter_node = @ib_hdr_200>`: 8 nodes of 8 `@a100`
    GPUs each, joined inside a node by `@nvlink3` and to other nodes by
    `@ib_hdr_200` (their NICs). Constraints: count >= 1, gpus_per_node >= 1.
    The cluster checks that the symbols resolve and the sizes add up.
  }];
  let parameters = (ins "int64_t":$count, "mlir::FlatSymbolRefAttr":$device,
                        "int64_t":$gpus_per_node, "mlir::FlatSymbolRefAttr":$intra_node,
                        "mlir::FlatSymbolRefAttr":$inter_node);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Place_LogicalAxisAttr : Place_Attr<"LogicalAxis", "laxis"> {
  let summary = "a logical mesh axis carved out of physical cluster axes";
  let description = [{
    `#place.laxis<dp = dc:2 * node:8>`: a logical axis of 16 ranks made of 2 ranks
    taken from physical axis `dc` (outer) and 8 from `node` (inner). Constraints:
    at least one piece; every piece size is at least 1.
  }];
  let parameters = (ins "mlir::StringAttr":$name,
                        ArrayRefParameter<"mlir::StringAttr">:$physical,
                        ArrayRefParameter<"int64_t">:$sizes);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Number of ranks along this axis (product of its pieces).
    int64_t getSize() const;
  }];
}

def Place_PlacementAttr : Place_Attr<"Placement", "placement"> {
  let summary = "where the four training states of a layer live";
  let description = [{
    For each state — `params`, `optim`, `grads`, `acts` — a list of
    `axis: mode(dim)` entries and a storage. Mesh axes a state does not list are
    `replicated`. Modes: `replicated`; `sharded(d)` (each rank keeps 1/n, split
    along d, and uses it sharded); `sharded_with_gather(d)` (kept sharded, gathered
    whole around each use: ZeRO-3/FSDP parameters). Storage (after the list):
    `resident` (default, omitted), `offloaded` (host memory), `materialized`
    (activations rebuilt by recomputation), `selective` (only the attention core's
    activations rebuilt). `reduce` lists the axes over which gradients are summed.

    Constraints checked here: an axis appears at most once per state and once in
    `reduce`; `sharded_with_gather` is for parameters only; `materialized` and
    `selective` are for activations only; activation dims are batch, seq or hidden,
    the others are hidden, heads, ffn, experts, vocab or flat; state consistency —
    where parameters are sharded, optimizer state and gradients are sharded the same
    way; where parameters are sharded_with_gather, both are sharded along that axis;
    where gradients are sharded, optimizer state is too (the update reads a gradient
    shard and must own the matching optimizer shard). Gradient integrity needs the
    mesh and is checked by `place.model`.
  }];
  let parameters = (ins
    ArrayRefParameter<"::loom::place::AxisMode">:$params,
    ArrayRefParameter<"::loom::place::AxisMode">:$optim,
    ArrayRefParameter<"::loom::place::AxisMode">:$grads,
    ArrayRefParameter<"::loom::place::AxisMode">:$acts,
    "::loom::place::StateStorage":$storage,
    ArrayRefParameter<"mlir::StringAttr">:$reduce);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    enum class State { Params, Optim, Grads, Acts };
    llvm::ArrayRef<AxisMode> getState(State state) const;
    /// The mode of `state` along `axis` (replicated when not listed).
    AxisMode lookup(State state, llvm::StringRef axis) const;
    static llvm::StringRef stateName(State state);

    /// What each axis does for this layer, read from the modes, never from
    /// axis names: weights split by heads, ffn or vocab (tensor parallel) or
    /// by experts (expert parallel); activations split by batch (data
    /// parallel), or by sequence where the weights are whole (context
    /// parallel) or split (sequence parallelism).
    struct AxisRoles {
      llvm::SmallVector<mlir::StringAttr> tensor, expert, batch, context;
      bool sequenceParallel = false;
    };
    AxisRoles getAxisRoles() const;
    /// ZeRO stage: the deepest state sharded along the reduction axes —
    /// 3 parameters (gathered around use), 2 gradients, 1 optimizer, else 0.
    int64_t getZeroStage() const;
  }];
}

//===----------------------------------------------------------------------===//
// Layer interface
//===----------------------------------------------------------------------===//

def Place_LayerOpInterface : OpInterface<"LayerOpInterface"> {
  let cppNamespace = "::loom::place";
  let description = [{
    A layer of the model: it owns parameters, performs FLOPs per token, may be
    assigned to a pipeline stage and carries the placement of its states.
  }];
  let methods = [
    InterfaceMethod<"the layer's name in checkpoints (e.g. layers.3.attention)",
      "llvm::StringRef", "getLayerName", (ins), [{ return $_op.getName(); }]>,
    InterfaceMethod<"number of parameters", "int64_t", "getParamCount", (ins),
      [{ return $_op.getParams(); }]>,
    InterfaceMethod<"forward FLOPs per token", "int64_t", "getForwardFlops", (ins),
      [{ return $_op.getFwdFlops(); }]>,
    InterfaceMethod<"virtual pipeline stage, if assigned", "std::optional<int64_t>",
      "getStageIndex", (ins), [{
        if (auto s = $_op.getStageAttr()) return s.getInt();
        return std::nullopt;
      }]>,
    InterfaceMethod<"placement of the states, if assigned",
      "::loom::place::PlacementAttr", "getPlacementAttr", (ins),
      [{ return $_op.getPlacementAttr(); }]>,
  ];
}

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

class Place_Op<string mnemonic, list<Trait> traits = []>
    : Op<Place_Dialect, mnemonic, traits>;

def Place_TierOp : Place_Op<"tier", [Symbol]> {
  let summary = "a class of links (NVLink, inter-node fabric, WAN)";
  let description = [{
    `place.tier @ib {bandwidth_gbps = 400.0, latency_us = 5.0}`. Bandwidth is
    gigabits per second in one direction, per GPU unless `per_node` (then one pipe
    shared by a node's GPUs, as a WAN uplink). `efficiency` is the share of that
    rate collectives reach (NCCL's protocol overhead). Constraints: bandwidth
    > 0, latency >= 0, 0 < efficiency <= 1.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, F64Attr:$bandwidth_gbps,
                       F64Attr:$latency_us, UnitAttr:$per_node,
                       DefaultValuedAttr<F64Attr, "1.0">:$efficiency);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

def Place_DeviceOp : Place_Op<"device", [Symbol]> {
  let summary = "an accelerator type";
  let description = [{
    Peak dense throughput (TFLOP/s) for the training dtype and HBM capacity and
    bandwidth; `kind` names the catalog GPU whose GEMM-efficiency curve applies.
    Constraints: all three > 0.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, F64Attr:$peak_tflops,
                       F64Attr:$hbm_gib, F64Attr:$hbm_gbytes_per_s,
                       OptionalAttr<StrAttr>:$kind);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

def Place_ClusterOp : Place_Op<"cluster",
    [Symbol, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "the physical device hierarchy, outermost axis first";
  let description = [{
    `place.cluster @c device @h100 axes [#place.axis<"node", 64, @ib>,
    #place.axis<"gpu", 8, @nvlink4>]`. Ranks are numbered row-major over the axes.
    Constraints: at least one axis; axis names unique; the device names a
    `place.device` and every tier a `place.tier`.

    Datacenters of different sizes: the "dc" axis counts cells (blocks of the
    same number of nodes) and `cell_dc` gives each cell's datacenter, e.g.
    `{cell_dc = array<i32: 0, 0, 0, 1>}` for datacenters of three cells and
    one. Its tier is the link between datacenters; cells of one datacenter
    talk over the next axis's tier. Constraints: a "dc" axis with one entry
    per cell, numbered from 0 in order without gaps, at least two datacenters.

    Nodes of several kinds (GPU types or links): instead of one `device`, the
    cluster lists node groups, `groups [#place.nodes<count = 8, device = @a100,
    ...>, #place.nodes<count = 8, device = @h100, ...>]`. The axes end in
    "node" and "gpu" (a node's GPUs); nodes are numbered row-major over the
    axes outside "gpu" (datacenter by datacenter), the first `count` of them
    in the first group, and so on. Collectives along an axis run at the pace
    of its slowest nodes, so the "gpu" axis takes the slowest of the groups'
    `intra_node` tiers and the "node" axis the slowest of their `inter_node`
    tiers (by bandwidth x efficiency). Constraints: a device or groups, not
    both; at least two groups; every group has as many GPUs per node as the
    "gpu" axis; the counts add up to the nodes; devices and tiers resolve; the
    "gpu" and "node" axes use the slowest of the groups' tiers.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, OptionalAttr<FlatSymbolRefAttr>:$device,
                       TypedArrayAttrBase<Place_AxisAttr, "cluster axes">:$axes,
                       OptionalAttr<TypedArrayAttrBase<Place_NodeGroupAttr,
                                                       "node groups">>:$groups,
                       OptionalAttr<DenseI32ArrayAttr>:$cell_dc);
  let assemblyFormat = [{
    $sym_name (`device` $device^)? `axes` $axes (`groups` $groups^)? attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumDevices();
    /// The physical axis named `name`, or null.
    AxisAttr lookupAxis(llvm::StringRef name);
    /// Nodes: the devices over the innermost axis (a node's GPUs).
    int64_t getNumNodes();
    /// The device of node `node` (numbered row-major over the axes outside
    /// the innermost one).
    mlir::FlatSymbolRefAttr getNodeDevice(int64_t node);
    /// Every device the cluster has, in order of first appearance over its
    /// nodes (the cluster's device, or its groups' devices).
    llvm::SmallVector<mlir::FlatSymbolRefAttr> getDeviceRefs();
  }];
}

def Place_MeshOp : Place_Op<"mesh",
    [Symbol, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "logical axes mapped onto a cluster's physical axes";
  let description = [{
    `place.mesh @m of @c axes [#place.laxis<pp = node:4>, #place.laxis<dp = node:16>,
    #place.laxis<tp = gpu:8>]`. Each physical axis is split into sub-axes, taken in
    the order the logical axes list them (earlier = outer, so a physical rank index
    is row-major over its sub-axes). Constraints: logical axis names unique; every
    piece names a physical axis of the cluster; for each physical axis the product
    of its pieces equals its size, so every device belongs to exactly one position
    of the mesh.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, FlatSymbolRefAttr:$cluster,
                       TypedArrayAttrBase<Place_LogicalAxisAttr, "mesh axes">:$axes);
  let assemblyFormat = "$sym_name `of` $cluster `axes` $axes attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The logical axis named `name`, or null.
    LogicalAxisAttr lookupAxis(llvm::StringRef name);
    /// Size of logical axis `name`; 1 when the mesh has no such axis.
    int64_t getAxisSize(llvm::StringRef name);
    int64_t getNumRanks();
    /// The nodes of `cluster` (ClusterOp::getNodeDevice's numbering) holding
    /// ranks of each position of logical axis `name`; one position holding
    /// every node when the mesh has no such axis. The mesh must tile the
    /// cluster (verifySymbolUses).
    std::vector<std::vector<int64_t>> getNodesAlong(ClusterOp cluster, llvm::StringRef name);
  }];
}

def Place_ModelOp : Place_Op<"model",
    [Symbol, NoTerminator, SingleBlock,
     DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "a model: its layers in execution order, and its training shape";
  let description = [{
    Holds layer ops. `mesh`, when present, names the `place.mesh` the placements
    refer to. `pipeline_axis` names the mesh axis that layers are pinned along by
    their `stage`; a stage s (of pp × virtual_stages) runs at pipeline position
    s mod pp, which is rank `pipeline_ranks[p]` of that axis (by default rank p:
    on clusters of several kinds of node the planner may run the stages on the
    ranks in another order). With `v_shape` (ZB-V's layout; virtual_stages must
    be 2) stage s >= pp runs at position 2pp - 1 - s instead: down the
    positions, then back up, so position 0 holds the first and the last stage.
    With `dual_pipe` (DualPipe; virtual_stages 1, an even number of positions)
    position p also holds a copy of the stage of position pp - 1 - p, with its
    own gradients and optimizer state, for the micro-batches fed from the other
    end of the pipeline. `pipeline_devices[p]`, when present, names the
    device every node of position p has, so the IR says which GPU type runs each
    stage. `optimizer` is adam (fp32 master and two moments per parameter
    under mixed precision) or sgd (momentum: one). `grad_reduce_bf16`: a bf16
    model accumulates and reduces its gradients in bf16, not fp32. Constraints:
    the optimizer is one of those; `grad_reduce_bf16` needs dtype bf16 or fp8;
    `pipeline_ranks` and `pipeline_devices` need a pipeline axis
    and one entry per position, `pipeline_ranks` is a permutation of its ranks,
    and each `pipeline_devices` entry is a `place.device` that every node of
    its position has (a position spanning several kinds of node names none);
    and, checked against the mesh: every axis named by a
    placement exists and is not the pipeline axis; sharded dims divide (heads and
    kv heads by the axis size, ffn, experts, sequence length); the global batch
    divides over the batch-sharded axes times the micro batch; stages are in
    range and non-decreasing in layer order; gradient integrity — a layer's
    gradients are reduced over exactly the axes where its parameters are whole on
    every rank (replicated or sharded_with_gather) while its activations are
    sharded (each rank saw different data).
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       OptionalAttr<FlatSymbolRefAttr>:$mesh,
                       OptionalAttr<StrAttr>:$pipeline_axis,
                       OptionalAttr<DenseI64ArrayAttr>:$pipeline_ranks,
                       OptionalAttr<FlatSymbolRefArrayAttr>:$pipeline_devices,
                       I64Attr:$vocab, I64Attr:$hidden, I64Attr:$seq_len,
                       I64Attr:$global_batch, I64Attr:$micro_batch,
                       DefaultValuedAttr<I64Attr, "1">:$virtual_stages,
                       StrAttr:$dtype, UnitAttr:$dropout,
                       DefaultValuedAttr<StrAttr, "\"adam\"">:$optimizer,
                       UnitAttr:$v_shape, UnitAttr:$dual_pipe,
                       UnitAttr:$grad_reduce_bf16);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name (`mesh` $mesh^)? attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    mlir::Block *getBodyBlock() { return &getBody().front(); }
    auto getLayers() { return getBodyBlock()->getOps<LayerOpInterface>(); }
    /// The rank of the pipeline axis at each of its `pp` positions
    /// (`pipeline_ranks`, or position p on rank p).
    llvm::SmallVector<int64_t> getPipelineRankOrder(int64_t pp);
    /// The pipeline position that runs `stage` of a pipeline of `pp`
    /// positions: stage mod pp, or the V of `v_shape`.
    int64_t getStagePosition(int64_t stage, int64_t pp);
  }];
}

class Place_LayerOp<string mnemonic, list<Trait> traits = []>
    : Place_Op<mnemonic, !listconcat(traits,
        [HasParent<"ModelOp">, DeclareOpInterfaceMethods<Place_LayerOpInterface>])> {
  dag commonArgs = (ins StrAttr:$name, I64Attr:$params, I64Attr:$fwd_flops,
                        OptionalAttr<I64Attr>:$stage,
                        OptionalAttr<Place_PlacementAttr>:$placement);
  let assemblyFormat = "$name attr-dict";
  let hasVerifier = 1;
}

def Place_EmbeddingOp : Place_LayerOp<"embedding"> {
  let summary = "token (and learned position) embedding";
  let arguments = !con(commonArgs, (ins I64Attr:$vocab, I64Attr:$hidden));
}

def Place_AttentionOp : Place_LayerOp<"attention"> {
  let summary = "pre-norm self-attention of one transformer layer";
  let description = [{
    Heads, key/value heads (GQA when fewer), head dim. Multi-head latent
    attention (DeepSeek) sets `kv_lora_rank` (and `q_lora_rank` for a query
    bottleneck): keys and values come through that latent, `rope_head_dim`
    extra query/key width carries positions, values are `v_head_dim` wide, and
    `head_dim` is the query/key width without rope. `qkv_bias` and `out_bias`
    mark biased query/key/value and output projections. Constraints: kv_heads
    divides heads; all > 0.
  }];
  let arguments = !con(commonArgs, (ins I64Attr:$layer, I64Attr:$heads,
                       I64Attr:$kv_heads, I64Attr:$head_dim,
                       OptionalAttr<I64Attr>:$q_lora_rank,
                       OptionalAttr<I64Attr>:$kv_lora_rank,
                       OptionalAttr<I64Attr>:$rope_head_dim,
                       OptionalAttr<I64Attr>:$v_head_dim,
                       UnitAttr:$qkv_bias, UnitAttr:$out_bias));
}

def Place_MlpOp : Place_LayerOp<"mlp"> {
  let summary = "pre-norm dense feed-forward block of one transformer layer";
  let description = [{
    `bias` marks biased input and output projections.
  }];
  let arguments = !con(commonArgs, (ins I64Attr:$layer, I64Attr:$ffn,
                       StrAttr:$activation, UnitAttr:$bias));
}

def Place_MoeOp : Place_LayerOp<"moe"> {
  let summary = "pre-norm mixture-of-experts block of one transformer layer";
  let description = [{
    Routed experts with top-k routing and optional shared experts.
    `routed_params` is the routed experts' share of `params` (the router, shared
    experts and norm make the rest); absent means all of it. `capacity_factor`
    pads each expert's token buffer to that multiple of its balanced share;
    absent means dropless. `bias` marks biased expert projections.
    Constraints: 0 < top_k <= experts; 0 <= routed_params <= params;
    capacity_factor >= 1 when present.
  }];
  let arguments = !con(commonArgs, (ins I64Attr:$layer, I64Attr:$experts,
                       I64Attr:$top_k, I64Attr:$shared_experts, I64Attr:$ffn,
                       StrAttr:$activation, OptionalAttr<I64Attr>:$routed_params,
                       OptionalAttr<F64Attr>:$capacity_factor, UnitAttr:$bias));
}

def Place_HeadOp : Place_LayerOp<"head"> {
  let summary = "final norm, output projection to the vocabulary and the loss";
  let arguments = !con(commonArgs, (ins I64Attr:$vocab, I64Attr:$hidden,
                       UnitAttr:$tied));
}

#endif // LOOM_PLACE_TD
