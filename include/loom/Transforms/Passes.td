//===- Passes.td - loom passes over the place dialect -------*- tablegen -*-===//
#ifndef LOOM_TRANSFORMS_PASSES_TD
#define LOOM_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def PlaceApplyStrategy : Pass<"place-apply-strategy", "mlir::ModuleOp"> {
  let summary = "Materialise placements from a strategy tuple";
  let description = [{
    Builds a `place.mesh` whose logical axes (tp innermost, then cp, ep, dp, pp
    outermost — Megatron's rank order; `order=dp-outer` swaps dp and pp) are carved out of the cluster's physical
    axes from the innermost (NVLink) outwards, then places every layer: tensor
    parallel layers shard by heads/ffn/vocab along tp, experts along ep,
    activations by batch along dp and ep and by sequence along cp (and along tp
    with sequence parallelism); ZeRO stages shard optimizer state, gradients and
    parameters over the gradient-reduction axes; recomputation sets the storage of
    activations; layers are split evenly across pp x vpp stages. Axes of size 1
    are left out of the mesh. `pipeline-ranks` runs the pipeline positions on
    the ranks of pp in another order (the model's `pipeline_ranks`); on a
    cluster of node groups, the model's `pipeline_devices` then says which
    device runs each position, when every position runs on one kind of node.
  }];
  let options = [
    Option<"dp", "dp", "int64_t", "1", "data-parallel size (includes ep)">,
    Option<"tp", "tp", "int64_t", "1", "tensor-parallel size">,
    Option<"pp", "pp", "int64_t", "1", "pipeline-parallel size">,
    Option<"vpp", "vpp", "int64_t", "1", "virtual stages per pipeline rank">,
    Option<"ep", "ep", "int64_t", "1", "expert-parallel size (divides dp)">,
    Option<"cp", "cp", "int64_t", "1", "context-parallel size">,
    Option<"zero", "zero", "int64_t", "0", "ZeRO stage 0-3">,
    Option<"recompute", "recompute", "std::string", "\"none\"",
           "activation recomputation: none, selective or full">,
    Option<"mbs", "mbs", "int64_t", "1", "micro-batch size">,
    Option<"sp", "sp", "bool", "false", "sequence parallelism along tp">,
    Option<"order", "order", "std::string", "\"pp-outer\"",
           "which of pipeline (pp-outer, Megatron-LM's order) and data parallelism "
           "(dp-outer) takes the outermost links, e.g. crosses datacenters">,
    ListOption<"stageLayers", "stage-layers", "int64_t",
               "transformer layers per pipeline stage (pp x vpp of them, stage s on rank "
               "s mod pp), for an uneven split; "
               "default: even">,
    ListOption<"pipelineRanks", "pipeline-ranks", "int64_t",
               "the pp rank each pipeline position runs on, a permutation (which "
               "GPU type runs which stage); default: position p on rank p">,
    Option<"vShape", "v-shape", "bool", "false",
           "ZB-V's layout (vpp=2): stage s >= pp runs at position 2pp-1-s, the "
           "model's `v_shape`">,
    Option<"dualPipe", "dual-pipe", "bool", "false",
           "DualPipe's layout (vpp=1, even pp): position p also holds position "
           "pp-1-p's stage, the model's `dual_pipe`">,
  ];
}

def PlaceDeriveStrategy : Pass<"place-derive-strategy", "mlir::ModuleOp"> {
  let summary = "Read the strategy tuple back from placements";
  let description = [{
    Inverse of place-apply-strategy: from the mesh and the layer placements it
    derives dp, tp, pp, vpp, ep, cp, zero stage, recomputation, micro batch and
    sequence parallelism, and records them as the `place.strategy` dictionary on
    each model op. It reads semantics, not axis names: tp is the axis that shards
    attention by heads, zero is read from how optimizer, gradients and parameters
    are placed along the reduction axes, and so on. A placement no strategy tuple
    describes (layers that disagree) is an error naming the first disagreement.
  }];
}

def PlaceEstimate : Pass<"place-estimate", "mlir::ModuleOp"> {
  let summary = "Annotate placed IR with per-rank memory and the step-time estimate";
  let description = [{
    Reads each placed model into the cost model (lib/Analysis/PlaceWorkload)
    and records: on every layer, `place.memory` — bytes per rank of its
    parameters, gradients, optimizer state and of its activations per
    micro-batch; on the model, `place.estimate` — step time, tokens/s, TFLOP/s
    per GPU, MFU, peak memory per rank, usable memory and whether it fits — and
    `place.stage_memory` — peak bytes per pipeline rank. Figures follow from the
    placements alone: change a placement and they change. On a cluster of node
    groups each pipeline rank is priced on the device its nodes have and must
    fit in that device's memory; `usable_memory_bytes` is the tightest rank's.
  }];
  let options = [
    Option<"flash", "flash", "bool", "true", "attention uses flash attention">,
    Option<"overlap", "overlap", "bool", "true",
           "data-parallel reduction overlaps the last backward, ZeRO-1/2 parameter gathers the next forward">,
    Option<"tpOverlap", "tp-overlap", "bool", "true",
           "sequence-parallel tp communication pipelined with GEMMs (TE)">,
    Option<"headroom", "headroom", "double", "0.05",
           "share of GPU memory a fitting plan leaves free">,
  ];
}

def PlaceSearch : Pass<"place-search", "mlir::ModuleOp"> {
  let summary = "Search parallel strategies and place the model with the fastest that fits";
  let description = [{
    `loom plan` inside the pass pipeline: reads the model, cluster and training
    shape back from the IR (Conversion/PlaceToSpec), runs the planner
    (lib/Search) and applies the fastest fitting strategy as
    place-apply-strategy would, uneven stage splits included. The model op gets
    `place.search`: the strategy, its estimate and how many strategies were
    priced. When nothing fits, the error names the closest plan and its memory.
  }];
  let options = [
    Option<"flash", "flash", "bool", "true", "attention uses flash attention">,
    Option<"overlap", "overlap", "bool", "true",
           "data-parallel reduction overlaps the last backward, ZeRO-1/2 parameter gathers the next forward">,
    Option<"tpOverlap", "tp-overlap", "bool", "true",
           "sequence-parallel tp communication pipelined with GEMMs (TE)">,
    Option<"headroom", "headroom", "double", "0.05",
           "share of GPU memory a fitting plan leaves free">,
  ];
}

#endif // LOOM_TRANSFORMS_PASSES_TD
