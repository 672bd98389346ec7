#!/usr/bin/env python3
"""Lays out a tiny GPT as Megatron-core's `--ckpt-format torch_dist` saves it, with
torch 1.13's DCP writer under 2 gloo processes (the tensor-parallel ranks, tp=2,
pp=1). Megatron cannot be installed here, so its layout is emulated from the
Megatron-LM sources named beside each rule (the mirror's HEAD).

Usage: make_megatron_dist.py OUTDIR [--distopt dp_reshardable |
                                     --moe [--shared-experts | --optim [--chained-prefix]
                                            [--moe-layer-freq N] [--expert-bias]]]

  OUTDIR/ckpt/latest_checkpointed_iteration.txt        "10"
  OUTDIR/ckpt/iter_0000010/metadata.json               dist_checkpointing/core.py, save_config
  OUTDIR/ckpt/iter_0000010/common.pt                   strategies/common.py, save_common:
      what is not sharded (generate_state_dict, training/checkpointing.py): args,
      checkpoint_version, iteration, the mixed-precision optimizer's param_groups and
      per-state steps (dist_checkpointing/optimizer.py, optim_state_to_sharding_state
      keeps "step" out of the shards), the scheduler.
  OUTDIR/ckpt/iter_0000010/.metadata, __R_N.distcp     the sharded part, keyed by mcore's
      sharded keys (strategies/torch.py, _replace_state_dict_keys_with_sharded_keys):
      layers stacked on a leading axis (transformer_block.py, sharded_state_dict:
      prepended offset (0, layer, num_layers)), TP shards at their global offsets
      (transformer/utils.py, make_sharded_tensors_for_checkpoint: column-parallel on
      dim 0, row-parallel on dim 1, norms replicated and saved by TP rank 0), SwiGLU's
      fc1 cut into gate and up halves placed at rank and tp + rank
      (mlp.py, apply_swiglu_sharded_factory), the vocabulary padded to 128·tp
      (arguments.py, _vocab_size_with_padding); the optimizer's fp32 masters and Adam
      moments at optimizer.state.{fp32_param,exp_avg,exp_avg_sq}.<key>
      (optimizer.py, Float16OptimizerWithFloat16Params.sharded_state_dict); TE's
      _extra_state as ShardedObjects, bytes entries named by unique_key (mapping.py).
  OUTDIR/truth.pt   the full tensors under loom's HF names, bf16 parameters, and
      {"state": {name: {"fp32", "exp_avg", "exp_avg_sq", "step"}}} as check_dcp_optim.py
      universal reads it.

With --distopt dp_reshardable the same model is saved as a run with
--use-distributed-optimizer and dp=2 saves it by default (checkpointing.py,
_build_sharded_state_dict_metadata: distrib_optim_sharding_type 'dp_reshardable'
unless --dist-ckpt-optim-fully-reshardable), by 4 gloo processes (tp=2 x dp=2; global
rank tp_rank + tp * dp_rank, parallel_state.py's default order tp-cp-ep-dp-pp):
  - the model's tensors as above, saved by DP rank 0's processes only (the other
    replicas are not main replicas: strategies/torch.py,
    _replace_state_dict_keys_with_sharded_keys with keep_only_main_replica);
  - common.pt's "optimizer" is {"param_state_sharding_type": "dp_reshardable"} alone
    (DistributedOptimizer.sharded_state_dict; everything else in it is sharded or
    non-persistent, and state_dict_utils.py save_preprocess drops those);
  - per model-parallel rank G = tp_rank (pp = 1; optimizer/__init__.py passes
    data_parallel_group_idx=model_parallel_rank, the rank in the tp-pp group) the
    ShardedObjects optimizer.distributed.dp_group_idx_G.{optimizer,per_bucket_numel,
    per_bucket_numel_unpadded}, saved by DP rank 0 (replica_id (0, 0, dp_rank)) as
    bytes entries <key>/shard_0_1 holding torch.save([value])
    (_mcore_to_torch_sharded_object; mcore's MCoreSavePlanner saves bytes on every
    rank, which McoreLikePlanner below does too);
  - per bucket b of the rank's one grad buffer (bf16 parameters, fp32 gradients:
    --accumulate-allreduce-grads-in-fp32) the 1-D fp32 tensors
    optimizer.distributed.dp_group_idx_G.gbuf_idx_0.dtype_(torch.bfloat16,
    torch.float32).bucket_idx_b.{param,exp_avg,exp_avg_sq} of the bucket's
    numel_unpadded elements (sharded_param_state_dp_reshardable): DP rank r saves
    its contiguous 1/dp of the padded bucket (_build_model_gbuf_range), one chunk per
    parameter piece (gbuf_local ranges, _build_model_gbuf_param_range_map) and per
    gap between them (the padding chunks, torch.empty there; NaN here, so that a
    reader taking padding for a parameter fails), none past numel_unpadded. Buckets
    are make_megatron.py's distopt_layout (reverse registration order, 64-element
    starts, a bucket closed at --ddp-bucket-size 2060 elements: three buckets, the
    first ending after the final norm, off the 64-element grid, and the output
    layer straddling its DP halves).

With --moe it lays out make_megatron.py's tiny Mixtral-like mixture of experts instead
(4 layers, 4 SwiGLU experts of 24 rows each, top-2 router, bf16; OUTDIR/moe.truth.pt
its full tensors under Mixtral's names, the same file make_megatron.py --moe writes),
saved with tp=2 and ep=2 by 4 gloo processes (global rank tp_rank + 2 * ep_rank, the
expert-parallel ranks being the data-parallel ones), --moe-grouped-gemm, --no-save-optim,
iteration 100. The attention keys are the dense model's; each MoE layer adds
decoder.layers.pre_mlp_layernorm.weight and decoder.layers.mlp.router.weight (stacked,
replicated) and its routed experts as decoder.layers.mlp.experts.experts.linear_fc1.weight
[layers, experts, 2 * 24, hidden] and linear_fc2.weight [layers, experts, hidden, 24]:
the global expert on an axis of its own (moe/experts.py, SequentialMLP.
sharded_state_dict and TEGroupedMLP.sharded_state_dict give the same keys; the MoE
layer's prefix mlp.experts. comes before the "experts." they put in), each
expert-parallel rank saving its 2 experts' TP pieces, one chunk per (layer, expert,
piece). TE's _extra_state of the experts and the RNG states are bytes entries.
--shared-experts adds a shared expert of 40 rows and its gate to every layer
(decoder.layers.mlp.shared_experts.{gate_weight,linear_fc1.weight,linear_fc2.weight},
cut as the dense MLP is) and saves without --moe-grouped-gemm; its truth is
OUTDIR/moe-shared.truth.pt (make_megatron.py --moe --shared-experts's).

--moe --optim saves instead make_megatron.py --moe --optim's trained MoE model
(OUTDIR/moe-adam.truth.pt, the same file: {name: {param, fp32, exp_avg, exp_avg_sq},
"step": 3}) with its ChainedOptimizer's states, as a run with the mixed-precision
optimizer (no --use-distributed-optimizer) saves them at tp=2 ep=2 (SequentialMLP):
  - the optimizer is get_megatron_optimizer's ChainedOptimizer (optimizer/__init__.py:
    the dense parameters' Float16OptimizerWithFloat16Params, then the routed experts',
    allreduce=False), and ChainedOptimizer.sharded_state_dict (optimizer.py) is
    {0: the dense one's sharded_state_dict, 1: the experts'};
  - each part keys its fp32 masters and Adam moments as a dense model's,
    optimizer.state.{fp32_param,exp_avg,exp_avg_sq}.<the parameter's key>
    (Float16OptimizerWithFloat16Params.sharded_state_dict, dist_checkpointing/
    optimizer.py make_sharded_optimizer_tensor: the parameter's ShardedTensor with the
    key prefixed and the state as data), so an expert's states sit at the stacked
    [layers, experts, ...] key and boxes of its weight, saved by the rank that saves
    the weight. The prefix chained_<i>. is left out: training/checkpointing.py's
    _build_sharded_state_dict_metadata sets chained_optim_avoid_prefix, and without a
    distrib_optim_sharding_type ChainedOptimizer.sharded_state_dict adds none;
  - common.pt keeps what is not sharded of both parts under "optimizer": {0:
    {"optimizer": {"param_groups": the dense optimizer's two groups, "state":
    {"common_step": step}}}, 1: the same with the experts' one group} (the groups'
    params are LocalNonpersistentObjects, which save drops; fp32_from_fp16_params and
    the per-parameter states are all sharded; _extract_common_per_param_step), and
    content_metadata {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}.
With --chained-prefix the states are keyed as mcore saved them before
chained_optim_avoid_prefix (July 2025): chained_0.optimizer.state.* for the dense
parameters', chained_1.optimizer.state.* for the experts', and common.pt has no
content_metadata.

--moe --optim --moe-layer-freq N and/or --expert-bias lay out make_megatron.py's
variant instead (moe_adam_truth(N, bias); OUTDIR/moe-freqN[-bias].truth.pt or
moe-bias.truth.pt, the same files), saved alike:
  - with N > 1 layers 0, N, 2N, ... are MoE layers and the others dense SwiGLU MLPs
    (args.moe_layer_freq N, ffn_hidden_size the dense MLP's 48). TransformerBlock.
    sharded_state_dict (transformer_block.py) then sets non_homogeneous_layers and
    keys every layer's tensors decoder.layers.<global layer>.<suffix> without the
    stacked layer axis (sharded_prefix with the global layer number, no prepended
    offset), so a MoE layer's experts are decoder.layers.<N>.mlp.experts.experts.
    linear_fc1.weight [experts, 2 * 24, hidden] (the expert axis is dimension 0) and a
    dense layer's MLP decoder.layers.<N>.mlp.linear_fc1.{layer_norm_weight,weight};
  - with biases (--add-bias-linear) every linear layer has one: linear_qkv.bias cut as
    its weight's rows (fused per query group), linear_proj.bias and linear_fc2.bias
    whole, saved by TP rank 0 (make_sharded_tensors_for_checkpoint shards only the
    row-parallel weight), linear_fc1.bias cut into gate and up halves like its weight
    (mlp.py: MLP.sharded_state_dict hands both weight and bias to
    apply_swiglu_sharded_factory; TEGroupedMLP.sharded_state_dict does the same for
    each weight<i> and bias<i>); an expert's at its expert's row of
    mlp.experts.experts.linear_fc{1,2}.bias (TEColumnParallelGroupedLinear cuts fc1's
    bias on axis 0, TERowParallelGroupedLinear leaves fc2's whole). The experts'
    optimizer then has two groups (weights, then biases).
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dcp_shim  # noqa: E402,F401  (before torch: see dcp_shim.py)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.distributed._shard.sharded_tensor import init_from_local_shards, Shard, ShardMetadata  # noqa: E402
import torch.distributed._shard.checkpoint as dcp  # noqa: E402

from make_dcp import free_port  # noqa: E402
import make_megatron  # noqa: E402  (the torch format's registration order and buckets)
from torch.distributed._shard.checkpoint.default_planner import DefaultSavePlanner  # noqa: E402
from torch.distributed._shard.checkpoint.planner import SavePlan  # noqa: E402
from torch.distributed._shard.checkpoint.planner_helpers import _create_write_items  # noqa: E402

TP = 2
LAYERS, HIDDEN, HEADS, GROUPS, HEAD_DIM, FFN, VOCAB = 2, 16, 4, 2, 4, 24, 250
PADDED = 256  # a multiple of 128 * TP
ITERATION, STEP = 10, 3
# --distopt dp_reshardable: the data-parallel degree and DDP bucket size.
DP, BUCKET = 2, 2060
BUFFER_DTYPE = (torch.bfloat16, torch.float32)
# --moe: expert-parallel ranks (over the data-parallel ones: tp=2 x dp=2 processes).
EP, MOE_ITERATION = 2, 100
WORLDS = {"dense": TP, "distopt": TP * DP, "moe": TP * EP, "moe-shared": TP * EP,
          "moe-optim": TP * EP, "moe-optim-prefixed": TP * EP}


def truth():
    """Full tensors under loom's names (fp32 masters; the model holds them in bf16)."""
    gen = torch.Generator().manual_seed(11)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)
    t = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN), "model.norm.weight": rand(HIDDEN),
         "lm_head.weight": rand(VOCAB, HIDDEN)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = rand(HIDDEN)
        t[p + "self_attn.q_proj.weight"] = rand(HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = rand(GROUPS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = rand(GROUPS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * HEAD_DIM)
        t[p + "post_attention_layernorm.weight"] = rand(HIDDEN)
        t[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN)
        t[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN)
        t[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
    states = {n: {"fp32": v, "exp_avg": rand(*v.shape) * 1e-2, "exp_avg_sq": rand(*v.shape).abs() * 1e-4,
                  "step": torch.tensor(float(STEP))} for n, v in t.items()}
    return {"model": {n: v.bfloat16() for n, v in t.items()}, "optim": {"state": states}}


class Dims:
    """What mcore's rules need of a model, read off its full tensors under loom's names
    (`names`, `get` giving each tensor): layers, heads and query groups (given), the
    vocabulary and its padding to a multiple of 128·tp, routed experts per MoE layer and
    which layers are MoE layers (a router; the others hold a dense MLP:
    --moe-layer-freq)."""

    def __init__(self, names, get, heads, groups, tp):
        names = set(names)
        self.names = names
        self.layers = sum(1 for n in names if n.endswith(".self_attn.q_proj.weight"))
        self.heads, self.groups = heads, groups
        self.head_dim = get("model.layers.0.self_attn.q_proj.weight").shape[0] // heads
        self.vocab = get("model.embed_tokens.weight").shape[0]
        multiple = 128 * tp
        self.padded = (self.vocab + multiple - 1) // multiple * multiple
        self.experts = sum(1 for n in names if n.startswith("model.layers.0.block_sparse_moe."
                                                            "experts.") and n.endswith(".w2.weight"))
        self.moe = [f"model.layers.{l}.block_sparse_moe.gate.weight" in names
                    for l in range(self.layers)]
        # transformer_block.py, TransformerBlock.sharded_state_dict: a moe_layer_freq
        # other than 1 makes the layers non-homogeneous, keyed one by one.
        self.per_layer = bool(self.experts) and not all(self.moe)


def layer_globals(get, d, p):
    """One layer's tensors as mcore's sharded state dict holds them (`p` its prefix under
    loom's names): {suffix: (tensor, cut)}, the cut as mcore_globals says it, counting
    the dimensions of the layer's tensor (a routed expert's key has the global expert
    on dimension 0: moe/experts.py, SequentialMLP.sharded_state_dict prepends
    (axis, global expert, num_experts), and TEGroupedMLP's is "interchangeable").
    Biases (--add-bias-linear) follow their weights' cut, except a row-parallel
    layer's, which every TP rank holds whole (transformer/utils.py,
    make_sharded_tensors_for_checkpoint shards only what the layer lists)."""
    def has(n):
        return p + n in d.names

    def cat(*names, at=p):
        return torch.cat([get(at + n) for n in names])

    def qkv(kind):
        """tp=1's fused QKV: per query group, its heads' q rows, then k, then v."""
        per = d.heads // d.groups * d.head_dim
        q, k, v = (get(p + f"self_attn.{x}_proj.{kind}") for x in "qkv")
        h = d.head_dim
        return torch.cat([torch.cat([q[g * per:(g + 1) * per], k[g * h:(g + 1) * h],
                                     v[g * h:(g + 1) * h]]) for g in range(d.groups)])

    def experts(*names):
        return torch.stack([cat(*names, at=f"{p}block_sparse_moe.experts.{e}.")
                            for e in range(d.experts)])
    out = {"self_attention.linear_qkv.layer_norm_weight": (cat("input_layernorm.weight"), None),
           "self_attention.linear_qkv.weight": (qkv("weight"), 0),
           "self_attention.linear_proj.weight": (cat("self_attn.o_proj.weight"), 1)}
    if has("self_attn.q_proj.bias"):
        out["self_attention.linear_qkv.bias"] = (qkv("bias"), 0)
        out["self_attention.linear_proj.bias"] = (cat("self_attn.o_proj.bias"), None)
    if not has("block_sparse_moe.gate.weight"):
        out["mlp.linear_fc1.layer_norm_weight"] = (cat("post_attention_layernorm.weight"), None)
        for kind in ("weight", "bias"):
            if has(f"mlp.gate_proj.{kind}"):
                out[f"mlp.linear_fc1.{kind}"] = \
                    (cat(f"mlp.gate_proj.{kind}", f"mlp.up_proj.{kind}"), "swiglu")
        out["mlp.linear_fc2.weight"] = (cat("mlp.down_proj.weight"), 1)
        if has("mlp.down_proj.bias"):
            out["mlp.linear_fc2.bias"] = (cat("mlp.down_proj.bias"), None)
        return out
    out["pre_mlp_layernorm.weight"] = (cat("post_attention_layernorm.weight"), None)
    out["mlp.router.weight"] = (cat("block_sparse_moe.gate.weight"), None)
    # SequentialMLP.sharded_state_dict maps <prefix>local_experts.<i>. to <prefix>experts.
    # and TEGroupedMLP's keys its linear_fc<n> <prefix>experts.linear_fc<n>, the prefix
    # being the MoE layer's "mlp.experts.": hence mlp.experts.experts.*.
    x = "mlp.experts.experts."
    out[x + "linear_fc1.weight"] = (experts("w1.weight", "w3.weight"), "swiglu")
    if has("block_sparse_moe.experts.0.w1.bias"):
        out[x + "linear_fc1.bias"] = (experts("w1.bias", "w3.bias"), "swiglu")
    out[x + "linear_fc2.weight"] = (experts("w2.weight"), 2)
    if has("block_sparse_moe.experts.0.w2.bias"):
        out[x + "linear_fc2.bias"] = (experts("w2.bias"), None)
    if has("mlp.shared_expert_gate.weight"):
        out["mlp.shared_experts.gate_weight"] = (cat("mlp.shared_expert_gate.weight"), None)
    if has("mlp.shared_expert.up_proj.weight"):
        out["mlp.shared_experts.linear_fc1.weight"] = \
            (cat("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight"),
             "swiglu")
        out["mlp.shared_experts.linear_fc2.weight"] = (cat("mlp.shared_expert.down_proj.weight"), 1)
    return out


def mcore_globals(get, d):
    """mcore's sharded key -> (global tensor, how mcore's TP ranks cut it: None for
    replicated, the dimension of a column- or row-parallel cut, or "swiglu" for
    [gate; up] halves at rank and tp + rank (mlp.py, apply_swiglu_sharded_factory)).
    Homogeneous layers are stacked on dimension 0 (transformer_block.py,
    sharded_state_dict: prepended offset (0, layer, num_layers)) as
    decoder.layers.<suffix>; with dense layers between MoE layers each layer keeps its
    own decoder.layers.<N>.<suffix> without that axis (non_homogeneous_layers). A
    mixture of experts' routed experts are keyed mlp.experts.experts.linear_fc<n>.*
    with the global expert on the axis after the layer's (layer_globals)."""
    def padded(t):
        return torch.cat([t, torch.zeros(d.padded - d.vocab, t.shape[1], dtype=t.dtype)])
    out = {
        "embedding.word_embeddings.weight": (padded(get("model.embed_tokens.weight")), 0),
        "output_layer.weight": (padded(get("lm_head.weight")), 0),
        "decoder.final_layernorm.weight": (get("model.norm.weight"), None),
    }
    layers = [layer_globals(get, d, f"model.layers.{l}.") for l in range(d.layers)]
    if d.per_layer:
        for l, held in enumerate(layers):
            out.update({f"decoder.layers.{l}.{k}": v for k, v in held.items()})
        return out
    for suffix, (_, cut) in layers[0].items():
        out[f"decoder.layers.{suffix}"] = (torch.stack([held[suffix][0] for held in layers]),
                                           cut + 1 if isinstance(cut, int) else cut)
    return out


def dense_dims():
    t = truth()["model"]
    return Dims(t, t.__getitem__, HEADS, GROUPS, TP)


def tp_rank_params(state, tp_rank):
    """TP rank tp_rank's parameters (one state of them: `state` maps loom's names to
    full tensors) in the order mcore registers them, cut as the torch format cuts
    them: make_megatron.py's shard(), whose order follows attention.py (linear_proj
    before linear_qkv), at this model's dimensions."""
    for name, value in (("LAYERS", LAYERS), ("HIDDEN", HIDDEN), ("HEAD_DIM", HEAD_DIM),
                        ("FFN", FFN), ("VOCAB", VOCAB), ("PADDED_VOCAB", PADDED)):
        setattr(make_megatron, name, value)
    return make_megatron.shard(state, HEADS, GROUPS, swiglu=True, biases=False, legacy=False,
                               tp_rank=tp_rank, stage=0, tp=TP, pp=1)


def dp_reshardable_chunks(starts, numels, bucket):
    """The chunks DP ranks save of one bucket (start, numel_unpadded, padded end in the
    buffer) as sharded_param_state_dp_reshardable cuts it: [(dp_rank, offset in the
    bucket, size)]. Each rank's contiguous 1/dp of the padded bucket
    (_build_model_gbuf_range) holds the parameters that meet it (gbuf_local ranges,
    _build_model_gbuf_param_range_map, in buffer order); the gaps before, between and
    after them are padding chunks, except one starting at or past numel_unpadded."""
    start, unpadded, end = bucket
    local = (end - start) // DP
    chunks = []
    for r in range(DP):
        lo, hi = start + r * local, start + (r + 1) * local
        ranges = sorted((max(s, lo) - lo, min(s + numels[n], hi) - lo)
                        for n, s in starts.items() if s < hi and s + numels[n] > lo)
        assert ranges, "mcore asserts every DP rank's part of a bucket holds a parameter"
        pieces = list(ranges)
        bounds = [(0, 0)] + ranges + [(local, local)]
        for (_, cur_end), (next_start, _) in zip(bounds, bounds[1:]):
            if next_start != cur_end and r * local + cur_end < unpadded:
                pieces.append((cur_end, next_start))
        for a, b in sorted(pieces):
            chunks.append((r, r * local + a, b - a))
    return chunks


def mcore_boxes(key, shape, cut, world, tp=TP):
    """(rank, offsets, sizes) of every chunk mcore's ranks save of a sharded key (or
    load, asking for the same boxes), global rank g being TP rank g % tp of
    data-parallel rank g // tp (parallel_state.py's default order tp-cp-ep-dp-pp; with
    expert parallelism over all of them, g // tp is also the expert-parallel rank, no
    expert-data-parallel replicas). One chunk per layer of a stacked key and per TP
    piece: a column- or row-parallel slice, SwiGLU's gate and up halves at rank and
    tp + rank, a replicated tensor whole from TP rank 0 (its main replica); data-
    parallel rank 0 saves the dense keys. A routed expert's key has a chunk per layer
    (unless the key is one layer's, decoder.layers.<N>.*), per expert of the rank's ep
    rank and per TP piece."""
    rest = key.split("decoder.layers.", 1)[1] if "decoder.layers." in key else None
    stacked = rest is not None and not rest.split(".")[0].isdigit()
    expert = ".mlp.experts.experts." in key
    lead = int(stacked) + int(expert)
    inner = list(shape[lead:])
    ep = world // tp if expert else 1
    boxes = []
    for g in range(world):
        r, ep_rank = g % tp, g // tp
        layer_rows = [[l] for l in range(shape[0])] if stacked else [[]]
        if expert:
            per = shape[lead - 1] // ep
            rows = [lr + [e] for lr in layer_rows
                    for e in range(ep_rank * per, (ep_rank + 1) * per)]
        elif ep_rank:
            continue
        else:
            rows = layer_rows
        for row in rows:
            one = [1] * len(row)
            if cut is None:
                if r == 0:
                    boxes.append((g, row + [0] * len(inner), one + inner))
                continue
            if cut == "swiglu":
                half = inner[0] // 2 // tp
                for part in (r, tp + r):
                    boxes.append((g, row + [part * half] + [0] * (len(inner) - 1),
                                  one + [half] + inner[1:]))
                continue
            dim = cut - lead
            offsets, sizes = [0] * len(inner), list(inner)
            sizes[dim] //= tp
            offsets[dim] = r * sizes[dim]
            boxes.append((g, row + offsets, one + sizes))
    return boxes


def local_shards(key, t, cut, rank, world):
    """This rank's ShardedTensor of the global `t`: its chunks of mcore_boxes."""
    boxes = mcore_boxes(key, t.shape, cut, world)
    mine = []
    for r, o, s in boxes:
        if r == rank:
            meta = ShardMetadata(shard_offsets=o, shard_sizes=s, placement=f"rank:{r}/cpu")
            mine.append(Shard(t[tuple(slice(a, a + b) for a, b in zip(o, s))].clone(), meta))
    return init_from_local_shards(mine, list(t.shape))


class McoreLikePlanner(DefaultSavePlanner):
    """torch 1.13's planner writes objects only on the coordinator; mcore's
    MCoreSavePlanner (strategies/torch.py) writes each rank's own ShardedObjects.
    Objects are torch.save'd as they are (a ShardedObject's value list here)."""

    def create_local_plan(self):
        items = []
        for fqn, obj in self.state_dict.items():
            items += _create_write_items(fqn, obj)
        self.plan = SavePlan(items)
        return self.plan


def distributed_optimizer(full, tp_rank):
    """What model-parallel rank G = tp_rank saves of the distributed optimizer:
    ({bucket tensor key: [(dp_rank, offset, values)]}, {object key: value})."""
    states = {key: tp_rank_params({n: v[key] for n, v in full["optim"]["state"].items()},
                                  tp_rank)
              for key in ("fp32", "exp_avg", "exp_avg_sq")}
    numels = {n: t.numel() for n, t in states["fp32"].items()}
    starts, buckets = make_megatron.distopt_layout(states["fp32"], 0, BUCKET, DP)
    prefix = f"optimizer.distributed.dp_group_idx_{tp_rank}"
    tensors = {}
    for key, name in (("fp32", "param"), ("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")):
        buffer = torch.full((buckets[-1][2],), float("nan"))
        for n, s in starts.items():
            buffer[s:s + numels[n]] = states[key][n].flatten()
        for b, bucket in enumerate(buckets):
            chunks = [(r, offset, buffer[bucket[0] + offset:bucket[0] + offset + size].clone())
                      for r, offset, size in dp_reshardable_chunks(starts, numels, bucket)]
            tensors[f"{prefix}.gbuf_idx_0.dtype_{BUFFER_DTYPE}.bucket_idx_{b}.{name}"] = \
                (bucket[1], chunks)
    # DistributedOptimizer.state_dict: torch's param_groups without "params", each with
    # the step (a float: the step tensor's .item()); no grad_scaler under bf16.
    groups = [{k: v for k, v in g.items() if k != "params"} | {"step": float(STEP)}
              for g in param_groups()]
    objects = {f"{prefix}.optimizer": {"optimizer": {"param_groups": groups}},
               f"{prefix}.per_bucket_numel": [{BUFFER_DTYPE: [e - s for s, _, e in buckets]}],
               f"{prefix}.per_bucket_numel_unpadded": [{BUFFER_DTYPE: [u for _, u, _ in buckets]}]}
    return tensors, objects


def dense_state(rank, world, distopt):
    """What global rank `rank` saves of the dense model (and its optimizer)."""
    full = truth()
    d = dense_dims()
    # DP rank 0's processes are global ranks 0..TP-1: they save the model.
    state = {k: local_shards(k, t, cut, rank, world)
             for k, (t, cut) in mcore_globals(lambda n: full["model"][n], d).items()}
    if not distopt:
        for name in ("fp32", "exp_avg", "exp_avg_sq"):
            dcp_name = "fp32_param" if name == "fp32" else name
            states = mcore_globals(lambda n: full["optim"]["state"][n][name], d)
            for k, (t, cut) in states.items():
                state[f"optimizer.state.{dcp_name}.{k}"] = local_shards(k, t, cut, rank, world)
    else:
        for g in range(TP):
            tensors, objects = distributed_optimizer(full, g)
            for key, (numel, chunks) in tensors.items():
                # DP rank r of model-parallel rank g is global rank g + TP * r.
                metas = [(ShardMetadata(shard_offsets=[offset], shard_sizes=[values.numel()],
                                        placement=f"rank:{g + TP * r}/cpu"), r, values)
                         for r, offset, values in chunks]
                mine = [Shard(values, meta) for meta, r, values in metas if g + TP * r == rank]
                state[key] = init_from_local_shards(mine, [numel])
            if rank == g:  # DP rank 0 of model-parallel rank g: the main replica
                for key, value in objects.items():
                    state[f"{key}/shard_0_1"] = [value]
    # TransformerEngine's _extra_state per layer: ShardedObjects (bytes entries).
    if rank == 0:
        for l in range(LAYERS):
            state[f"decoder.layers.self_attention.linear_qkv._extra_state/shard_{l}_{LAYERS}"] = None
    return state


def moe_truth(kind, freq=1, bias=False):
    """make_megatron.py's MoE model (its moe.truth.pt, or moe-shared.truth.pt with
    shared experts and their gates, or the trained moe-adam.truth.pt for moe-optim;
    with `freq` or `bias` its mixed-layer or expert-bias variant)."""
    if kind.startswith("moe-optim"):
        return make_megatron.moe_adam_truth(freq, bias)
    return make_megatron.full_moe(seed=6, shared=True) if kind == "moe-shared" else \
        make_megatron.full_moe(seed=5)


def moe_params(truth):
    """{name: parameter} of a MoE truth: the trained one's bf16 parameters."""
    return {n: v["param"] if isinstance(v, dict) else v for n, v in truth.items() if n != "step"}


def moe_dims(t):
    return Dims(t, t.__getitem__, make_megatron.MCORE["heads"], make_megatron.MCORE["groups"],
                TP)


def moe_state(rank, world, kind, freq=1, bias=False):
    """What global rank `rank` (TP rank rank % TP, expert-parallel rank rank // TP)
    saves of the MoE model: the dense keys from data-parallel rank 0, its experts,
    TE's _extra_state of its experts' linear_fc1 (ShardedObjects with the layer and
    expert offsets, from TP rank 0: mapping.py, unique_key) and its RNG state
    (training/checkpointing.py, ShardedObject 'rng_state' at (pp rank, tp rank)).
    moe-optim adds each parameter's fp32 master and moments under its key's boxes
    (see the module's docstring), with chained_<i>. before them for
    moe-optim-prefixed."""
    truth = moe_truth(kind, freq, bias)
    t = moe_params(truth)
    d = moe_dims(t)
    state = {k: local_shards(k, v, cut, rank, world)
             for k, (v, cut) in mcore_globals(t.__getitem__, d).items()}
    if kind.startswith("moe-optim"):
        for name, dcp_name in (("fp32", "fp32_param"), ("exp_avg", "exp_avg"),
                               ("exp_avg_sq", "exp_avg_sq")):
            for k, (v, cut) in mcore_globals(lambda n: truth[n][name], d).items():
                chained = ""
                if kind == "moe-optim-prefixed":
                    chained = "chained_1." if ".mlp.experts.experts." in k else "chained_0."
                state[f"{chained}optimizer.state.{dcp_name}.{k}"] = \
                    local_shards(k, v, cut, rank, world)
    per = d.experts // EP
    if rank % TP == 0:
        for l in range(d.layers):
            for e in range(rank // TP * per, (rank // TP + 1) * per):
                if d.per_layer and d.moe[l]:
                    state[f"decoder.layers.{l}.mlp.experts.experts.linear_fc1._extra_state/"
                          f"shard_{e}_{d.experts}"] = None
                elif not d.per_layer:
                    state[f"decoder.layers.mlp.experts.experts.linear_fc1._extra_state/"
                          f"shard_{l}.{e}_{d.layers}.{d.experts}"] = None
    if rank < TP:
        state[f"rng_state/shard_0.{rank}_1.{TP}"] = [{"random_rng_state": None}]
    return state


def worker(rank, outdir, port, kind, freq=1, bias=False):
    world = WORLDS[kind]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    if kind.startswith("moe"):
        state, iteration = moe_state(rank, world, kind, freq, bias), MOE_ITERATION
    else:
        state, iteration = dense_state(rank, world, kind == "distopt"), ITERATION
    iteration_dir = os.path.join(outdir, "ckpt", f"iter_{iteration:07d}")
    dcp.save_state_dict(state, dcp.FileSystemWriter(iteration_dir), planner=McoreLikePlanner())
    dist.barrier()
    dist.destroy_process_group()


def param_groups():
    """The mixed-precision optimizer's groups: weight-decayed first, then the rest
    (optimizer/__init__.py, _get_param_groups), indices into its states."""
    n_params = 3 + LAYERS * 6
    return [dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, amsgrad=False,
                 maximize=False, foreach=None, capturable=False, wd_mult=1.0, lr_mult=1.0,
                 params=list(range(2 + LAYERS * 4))),
            dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, foreach=None, capturable=False, wd_mult=0.0, lr_mult=1.0,
                 params=list(range(2 + LAYERS * 4, n_params)))]


def dense_common(distopt):
    """common.pt of the dense model: its args, and its optimizer's groups and steps."""
    args = argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS,
        group_query_attention=True, num_query_groups=GROUPS, kv_channels=HEAD_DIM,
        ffn_hidden_size=FFN, swiglu=True, vocab_size=VOCAB, padded_vocab_size=PADDED,
        tensor_model_parallel_size=TP, pipeline_model_parallel_size=1, bf16=True,
        ckpt_format="torch_dist", use_distributed_optimizer=distopt, lr=3e-4, weight_decay=0.1,
        adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8)
    if distopt:
        # What resolve_ddp_bucket_size and the DDP config read (training.py).
        args.data_parallel_size = DP
        args.overlap_grad_reduce = True
        args.ddp_bucket_size = BUCKET
        args.accumulate_allreduce_grads_in_fp32 = True
        args.dist_ckpt_optim_fully_reshardable = False
        args.virtual_pipeline_model_parallel_size = None
        optimizer = {"param_state_sharding_type": "dp_reshardable"}
    else:
        # The mixed-precision optimizer's states are keyed by index, with their step.
        optimizer = {"optimizer": {
            "state": {i: {"step": torch.tensor(float(STEP))} for i in range(3 + LAYERS * 6)},
            "param_groups": param_groups()}}
    return {"args": args, "checkpoint_version": 3.0, "iteration": ITERATION,
            "optimizer": optimizer,
            "opt_param_scheduler": {"max_lr": 3e-4, "num_steps": ITERATION},
            "num_floating_point_operations_so_far": 0}


def moe_common(kind, freq=1, bias=False):
    """common.pt of the MoE model: make_megatron.py's MoE args at tp=2 ep=2 (dp=2), as a
    run with --moe-grouped-gemm (TEGroupedMLP) or, with shared experts, without
    (SequentialMLP) saved them with --ckpt-format torch_dist --no-save-optim; for
    moe-optim the trained model's run (SequentialMLP, make_megatron.py's AdamW
    settings) with its ChainedOptimizer's groups and steps (see the module's
    docstring)."""
    shared, optim = kind == "moe-shared", kind.startswith("moe-optim")
    args = make_megatron.moe_args(TP, 1, EP, grouped=kind == "moe",
                                  shared=make_megatron.SHARED_FFN if shared else None,
                                  gate=shared, freq=freq, bias=bias)
    args.ckpt_format = "torch_dist"
    args.data_parallel_size = EP  # TP * EP processes over tp
    common = {"args": args, "checkpoint_version": 3.0, "iteration": MOE_ITERATION,
              "num_floating_point_operations_so_far": 0}
    if not optim:
        args.no_save_optim = True
        return common
    vars(args).update(lr=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.1,
                      use_distributed_optimizer=False)
    truth = moe_truth(kind, freq, bias)
    # Both optimizers' groups as make_megatron.py's torch-format ranks hold them (any
    # rank: the settings are the run's), without params.
    _, parts = make_megatron.moe_optimizer(truth, 0, 0, 0, TP, 1, EP, False)
    common["optimizer"] = {
        i: {"optimizer": {"param_groups": [{k: v for k, v in g.items() if k != "params"}
                                           for g in part["optimizer"]["param_groups"]],
                          "state": {"common_step": torch.tensor(float(truth["step"]))}}}
        for i, part in enumerate(parts)}
    common["opt_param_scheduler"] = {"max_lr": 1e-3, "num_steps": truth["step"]}
    if kind == "moe-optim":
        common["content_metadata"] = {"singleton_local_shards": False,
                                      "chained_optim_avoid_prefix": True}
    return common


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("--distopt", choices=["dp_reshardable"])
    parser.add_argument("--moe", action="store_true")
    parser.add_argument("--shared-experts", action="store_true")
    parser.add_argument("--optim", action="store_true")
    parser.add_argument("--chained-prefix", action="store_true")
    parser.add_argument("--moe-layer-freq", type=int, default=1)
    parser.add_argument("--expert-bias", action="store_true")
    options = parser.parse_args()
    freq, bias = options.moe_layer_freq, options.expert_bias
    if (freq != 1 or bias) and not (options.moe and options.optim):
        parser.error("--moe-layer-freq and --expert-bias go with --moe --optim")
    outdir = options.outdir
    if options.optim:
        kind = "moe-optim-prefixed" if options.chained_prefix else "moe-optim"
    else:
        kind = ("moe-shared" if options.shared_experts else "moe") if options.moe else \
            "distopt" if options.distopt else "dense"
    iteration = MOE_ITERATION if options.moe else ITERATION
    iteration_dir = os.path.join(outdir, "ckpt", f"iter_{iteration:07d}")
    os.makedirs(iteration_dir, exist_ok=True)
    mp.spawn(worker, args=(outdir, free_port(), kind, freq, bias), nprocs=WORLDS[kind],
             join=True)
    with open(os.path.join(iteration_dir, "metadata.json"), "w") as f:
        json.dump({"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                   "common_backend": "torch", "common_backend_version": 1}, f)
    common = moe_common(kind, freq, bias) if options.moe else \
        dense_common(options.distopt is not None)
    torch.save(common, os.path.join(iteration_dir, "common.pt"))
    with open(os.path.join(outdir, "ckpt", "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(iteration))
    if options.moe:
        # make_megatron.py's names: moe-freqN[-bias].truth.pt, moe-bias.truth.pt.
        variant = (f"-freq{freq}" if freq != 1 else "") + ("-bias" if bias else "")
        name = {"moe-shared": "moe-shared.truth.pt", "moe": "moe.truth.pt"}.get(
            kind, f"moe{variant}.truth.pt" if variant else "moe-adam.truth.pt")
        torch.save(moe_truth(kind, freq, bias), os.path.join(outdir, name))
    else:
        torch.save(truth(), os.path.join(outdir, "truth.pt"))


if __name__ == "__main__":
    main()
