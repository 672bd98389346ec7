#!/usr/bin/env python3
"""Writes tiny Megatron-LM checkpoints with tp=2 pp=2 the way Megatron lays them out.

Usage: make_megatron.py OUTDIR [--moe [--shared-experts | --etp N |
                                 --optim [--moe-layer-freq N] [--expert-bias]]]

  mcore/   Llama-like (GQA: 4 heads in 2 query groups, SwiGLU, RMSNorm, bf16, no
           biases) with mcore names: decoder.layers.N.self_attention.linear_qkv.weight,
           linear_fc1 = [gate; up] per TP rank, TE-fused norm weights.
  legacy/  GPT-like (MHA, GELU, LayerNorm and biases, learned positions, fp16) with
           legacy names: language_model.encoder.layers.N.self_attention.query_key_value.
  mcore-adam/  the mcore model after 3 AdamW steps (fp32 masters, random gradients),
           saved as Megatron's mixed-precision optimizer saves it: under "optimizer",
           torch's optimizer state_dict and fp32_from_fp16_params, the parameters of a
           stage grouped as Megatron's _get_param_groups groups them (matrices with
           weight decay first, then vectors and biases, each in registration order).
           mcore-adam.truth.pt holds the full tensors: {name: {"param", "fp32",
           "exp_avg", "exp_avg_sq"}, "step": 3}, as make_deepspeed.py's truth does.
  mcore-distopt/  the same trained model saved as Megatron's distributed optimizer
           (--use-distributed-optimizer, torch checkpoint format) saves it with dp=4,
           --overlap-grad-reduce and --ddp-bucket-size 2320: model_optim_rng.pt keeps
           only the group settings (with the step) under "optimizer", and
           distrib_optim.pt beside it the dp_zero state of the stage's grad buffer:
           the fp32 masters and moments of every parameter at its place in the buffer
           (reverse registration order, starts aligned to 64 elements, buckets cut at
           2320 elements on stage 0, each bucket gathered from the 4 DP ranks' shards
           and stripped of its end padding). The truth is mcore-adam.truth.pt.
  *.json   the full Hugging Face–style tensors each was cut from (sorted by name,
           sha256 of row-major bytes): what loom's unsharding must give back.

With --moe it writes instead a tiny Mixtral-like mixture of experts (mcore names, GQA,
SwiGLU experts, bf16, 4 experts per layer of 24 rows each, top-2 router), cut from one
set of full tensors (moe.truth.pt: {Mixtral HF name: tensor}) the way Megatron saves
it with expert parallelism (megatron/training/checkpointing.py, get_checkpoint_name:
mp_rank_TT, then _PPP when pp > 1, then _EEE when ep > 1), moe.json its manifest:
  moe-tp1ep2/      tp=1 pp=1 ep=2, SequentialMLP names (mlp.experts.local_experts.I.
                   linear_fc1.weight), folders mp_rank_00_000 and mp_rank_00_001 (ep ranks).
  moe-tp2pp2ep2/   tp=2 pp=2 ep=2, TEGroupedMLP names (mlp.experts.linear_fc1.weightI,
                   --moe-grouped-gemm), folders mp_rank_TT_PPP_EEE.
Each MoE layer registers its attention as a dense layer does, then pre_mlp_layernorm
(a norm of its own), the router (mlp.router.weight, [experts, hidden], the same on
every rank) and its ep rank's experts under local indices (global = ep_rank *
experts / ep + local), fc1 = [gate (w1); up (w3)] of the TP rank's rows, fc2 (w2)
row-parallel (megatron/core/transformer/moe/{moe_layer,router,experts}.py).

With --moe --shared-experts it writes the same model with shared experts beside the
routed ones instead (--moe-shared-expert-intermediate-size 40: SharedExpertMLP,
megatron/core/transformer/moe/shared_experts.py), cut from moe-shared.truth.pt whose
shared experts take Qwen2-MoE's names (mlp.shared_expert.{gate,up,down}_proj.weight,
mlp.shared_expert_gate.weight), moe-shared.json its manifest:
  moe-shared-tp2ep2/         tp=2 ep=2, SequentialMLP names, with the sigmoid gate
                             (--moe-shared-expert-gate).
  moe-shared-nogate-tp1pp2ep2/  tp=1 pp=2 ep=2, TEGroupedMLP names, no gate; its truth
                             is moe-shared-nogate.truth.pt (the same without the gates).
Every rank's file holds its layer's shared experts after the routed ones: gate_weight
([1, hidden], a parameter of SharedExpertMLP itself, so first), linear_fc1 = [gate; up]
of the TP rank's rows, linear_fc2 row-parallel, as the dense MLP is cut.

With --moe --optim it trains the MoE model (fp32 masters drawn as full_moe draws
them) 3 AdamW steps as train_full trains the dense one (moe-adam.truth.pt, the same
form as mcore-adam.truth.pt) and saves it with Megatron's ChainedOptimizer
(optimizer.py; get_megatron_optimizer in optimizer/__init__.py builds the dense
parameters' optimizer, then one over the routed experts, allreduce=False), each
optimizer grouping its parameters as a dense model's does (the experts' has one
group, its weights all decay):
  moe-adam-tp2ep2/        tp=2 ep=2, SequentialMLP names, the mixed-precision optimizer:
                          "optimizer" is ChainedOptimizer.state_dict()'s list [dense
                          optimizer's state_dict, the rank's experts' optimizer's], the
                          dense one alike in both expert-parallel ranks' files.
  moe-distopt-tp2pp2ep2/  tp=2 pp=2 ep=2, TEGroupedMLP names, the distributed optimizer
                          with dp=4 and --ddp-bucket-size 1000: "optimizer" lists both
                          optimizers' groups, distrib_optim.pt is save_parameter_state's
                          list [the dense buffer, the experts' buffer], each laid out as
                          mcore-distopt's (the experts' over their expert-data-parallel
                          group of dp / ep = 2), the dense one None past expert-parallel
                          rank 0 (its DP rank 0 is at ep rank 0).

With --moe --optim --moe-layer-freq N and/or --expert-bias it trains and saves the
same way a MoE model whose layers route only every Nth from layer 0 (Megatron's
--moe-layer-freq N; the others a dense SwiGLU MLP of 48 rows, saved as a dense mcore
layer: linear_fc1 with TE's fused norm, args.ffn_hidden_size 48) and/or whose linear
layers all have biases (--add-bias-linear: linear_qkv and linear_proj, the dense MLP's
fc1 and fc2, and each expert's: SequentialMLP's local_experts.I.linear_fc1.bias after
its weight, TEGroupedMLP's linear_fc1.biasI after weightI; fc1's bias cut as its rows,
[gate; up] per TP rank, fc2's whole on every rank). Folders and truth are named
moe-freqN[-bias] or moe-bias instead of moe (moe-freq2-adam-tp2ep2/, moe-freq2.truth.pt).
The experts' optimizer then has two groups (weights, then biases).

With --moe --etp N it saves the trained MoE model (moe-adam.truth.pt) with its routed
experts cut over N expert-tensor-parallel ranks (--expert-tensor-parallel-size) instead
of tp, in the folders Megatron's ranks write then (see write_moe_etp and writers):
moe-etp1-* for N = 1, moe-etp2-adam-tp1ep2 for N = 2.

Both: latest_checkpointed_iteration.txt, iter_0000100/mp_rank_TT_PPP/model_optim_rng.pt,
layers numbered from 0 on each stage, vocabulary 250 padded to 256 (a multiple of
128 * tp), argparse.Namespace args.
"""
import argparse
import collections
import json
import math
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import SAFETENSORS_DTYPES, raw_bytes  # noqa: E402
import hashlib  # noqa: E402

TP, PP, LAYERS, HIDDEN, HEAD_DIM, FFN, VOCAB, SEQ = 2, 2, 4, 32, 8, 48, 250, 16
PADDED_VOCAB = 256


def attention_tensors(sd, p, rand, heads, groups):
    """Layer prefix `p`'s norms and attention projections (HF Llama names), drawn
    from `rand` in this order."""
    sd[p + "input_layernorm.weight"] = rand(HIDDEN)
    sd[p + "post_attention_layernorm.weight"] = rand(HIDDEN)
    sd[p + "self_attn.q_proj.weight"] = rand(heads * HEAD_DIM, HIDDEN)
    sd[p + "self_attn.k_proj.weight"] = rand(groups * HEAD_DIM, HIDDEN)
    sd[p + "self_attn.v_proj.weight"] = rand(groups * HEAD_DIM, HIDDEN)
    sd[p + "self_attn.o_proj.weight"] = rand(HIDDEN, heads * HEAD_DIM)


def full_model(gen, dtype, heads, groups, swiglu, biases):
    """HF (Llama) names -> tensors."""
    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)
    sd = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN), "lm_head.weight": rand(VOCAB, HIDDEN),
          "model.norm.weight": rand(HIDDEN)}
    if biases:
        sd["model.norm.bias"] = rand(HIDDEN)
        sd["model.embed_positions.weight"] = rand(SEQ, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        attention_tensors(sd, p, rand, heads, groups)
        if swiglu:
            sd[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
        if biases:
            for n in ("input_layernorm", "post_attention_layernorm"):
                sd[p + n + ".bias"] = rand(HIDDEN)
            sd[p + "self_attn.q_proj.bias"] = rand(heads * HEAD_DIM)
            sd[p + "self_attn.k_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.v_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.o_proj.bias"] = rand(HIDDEN)
            sd[p + "mlp.up_proj.bias"] = rand(FFN)
            sd[p + "mlp.down_proj.bias"] = rand(HIDDEN)
    return sd


def fuse_qkv(q, k, v, heads, groups, rank, tp=TP):
    """Megatron's fused QKV for one TP rank: per query group, its q heads then k then v."""
    per_group = heads // groups
    q = q.reshape(groups, per_group * HEAD_DIM, *q.shape[1:])
    k = k.reshape(groups, HEAD_DIM, *k.shape[1:])
    v = v.reshape(groups, HEAD_DIM, *v.shape[1:])
    fused = torch.cat([q, k, v], dim=1)
    mine = fused.chunk(tp, dim=0)[rank]
    return mine.reshape(-1, *mine.shape[2:]).clone()


def pad_vocab(t):
    return torch.cat([t, torch.zeros(PADDED_VOCAB - VOCAB, *t.shape[1:], dtype=t.dtype)])


def shard(sd, heads, groups, swiglu, biases, legacy, tp_rank, stage, tp=TP, pp=PP):
    """One (tp_rank, stage) shard with local layer numbers, mcore or legacy names, in
    the order Megatron registers the parameters (its named_parameters order)."""
    def col(t):
        return t.chunk(tp, dim=0)[tp_rank].clone()

    def row(t):
        return t.chunk(tp, dim=1)[tp_rank].clone()

    names = {  # HF suffix -> (legacy, mcore)
        "input_layernorm": ("input_norm", "self_attention.linear_qkv.layer_norm_"),
        "post_attention_layernorm": ("post_attention_norm", "mlp.linear_fc1.layer_norm_"),
    }
    out = collections.OrderedDict()
    per_stage = LAYERS // pp
    if stage == 0:
        out["embedding.word_embeddings.weight"] = col(pad_vocab(sd["model.embed_tokens.weight"]))
        if "model.embed_positions.weight" in sd:
            out["embedding.position_embeddings.weight"] = sd["model.embed_positions.weight"].clone()
    layers = "encoder.layers." if legacy else "decoder.layers."
    for local in range(per_stage):
        p = f"model.layers.{stage * per_stage + local}."
        m = f"{layers}{local}."
        kinds = ["weight"] + (["bias"] if biases else [])

        def norm(hf):
            leg, mc = names[hf]
            for kind in kinds:
                out[m + (f"{leg}.{kind}" if legacy else f"{mc}{kind}")] = sd[p + hf + "." + kind].clone()
        def proj():
            name = m + ("self_attention.dense." if legacy else "self_attention.linear_proj.")
            out[name + "weight"] = row(sd[p + "self_attn.o_proj.weight"])
            if biases:
                out[name + "bias"] = sd[p + "self_attn.o_proj.bias"].clone()
        # mcore's Attention.__init__ builds linear_proj before SelfAttention builds
        # linear_qkv (megatron/core/transformer/attention.py); legacy ParallelAttention
        # builds query_key_value first (megatron/legacy/model/transformer.py).
        if not legacy:
            proj()
        norm("input_layernorm")
        attn = "self_attention.query_key_value." if legacy else "self_attention.linear_qkv."
        for kind in kinds:
            out[m + attn + kind] = fuse_qkv(sd[p + "self_attn.q_proj." + kind],
                                            sd[p + "self_attn.k_proj." + kind],
                                            sd[p + "self_attn.v_proj." + kind], heads, groups,
                                            tp_rank, tp)
        if legacy:
            proj()
        norm("post_attention_layernorm")
        fc1 = "mlp.dense_h_to_4h." if legacy else "mlp.linear_fc1."
        fc2 = "mlp.dense_4h_to_h." if legacy else "mlp.linear_fc2."
        for kind in kinds:
            if swiglu:
                out[m + fc1 + kind] = torch.cat([col(sd[p + "mlp.gate_proj." + kind]),
                                                 col(sd[p + "mlp.up_proj." + kind])])
            else:
                out[m + fc1 + kind] = col(sd[p + "mlp.up_proj." + kind])
        out[m + fc2 + "weight"] = row(sd[p + "mlp.down_proj.weight"])
        if biases:
            out[m + fc2 + "bias"] = sd[p + "mlp.down_proj.bias"].clone()
    if stage == pp - 1:
        final = "encoder.final_norm." if legacy else "decoder.final_layernorm."
        for kind in ["weight"] + (["bias"] if biases else []):
            out[final + kind] = sd["model.norm." + kind].clone()
        out["output_layer.weight"] = col(pad_vocab(sd["lm_head.weight"]))
    if not legacy:
        return out
    # Legacy nests the language model: embedding / encoder / output_layer.
    nested = {"embedding": {}, "encoder": collections.OrderedDict(), "output_layer": {}}
    for name, t in out.items():
        head, rest = name.split(".", 1)
        if head == "embedding":
            kind, leaf = rest.split(".", 1)
            nested["embedding"].setdefault(kind, {})[leaf] = t
        elif head == "encoder":
            nested["encoder"][rest] = t
        else:
            nested["output_layer"][rest] = t
    return {"language_model": {k: v for k, v in nested.items() if v}}


def write(outdir, name, heads, groups, swiglu, biases, dtype, legacy, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = full_model(gen, dtype, heads, groups, swiglu, biases)
    root = os.path.join(outdir, name)
    os.makedirs(root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("100")
    args = argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=heads,
        group_query_attention=groups != heads, num_query_groups=groups, kv_channels=HEAD_DIM,
        ffn_hidden_size=FFN, swiglu=swiglu, padded_vocab_size=PADDED_VOCAB, vocab_size=VOCAB,
        tensor_model_parallel_size=TP, pipeline_model_parallel_size=PP,
        params_dtype=dtype, iteration=100)
    for stage in range(PP):
        for tp_rank in range(TP):
            d = os.path.join(root, "iter_0000100", f"mp_rank_{tp_rank:02d}_{stage:03d}")
            os.makedirs(d)
            model = shard(sd, heads, groups, swiglu, biases, legacy, tp_rank, stage)
            torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 100,
                        "model": model, "rng_state": [{"random_rng_state": None}]},
                       os.path.join(d, "model_optim_rng.pt"))
    write_manifest(outdir, name, sd)


def write_manifest(outdir, name, sd):
    tensors = [{"name": n, "dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                "stride": list(t.stride()), "offset": 0,
                "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()} for n, t in sorted(sd.items())]
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump({"tensors": tensors}, f, indent=1)


MCORE = dict(heads=4, groups=2, swiglu=True, biases=False, legacy=False)
STEPS = 3


def no_weight_decay(name, t):
    """Megatron's default no_weight_decay_cond."""
    return t.dim() == 1 or name.endswith(".bias")


def megatron_groups(model):
    """A stage's parameter names as Megatron's _get_param_groups groups them: those
    with weight decay, then the others; a group no parameter falls in is not made
    (the experts' optimizer holds matrices only, so it has one group)."""
    decayed = [n for n, t in model.items() if not no_weight_decay(n, t)]
    return [g for g in (decayed, [n for n in model if n not in decayed]) if g]


GROUP_SETTINGS = [dict(weight_decay=0.1, wd_mult=1.0, lr_mult=1.0),
                  dict(weight_decay=0.0, wd_mult=0.0, lr_mult=1.0)]


def adamw(groups_of_params):
    """The optimizer Megatron would build over these groups (torch's AdamW)."""
    return torch.optim.AdamW([dict(params=ps, **GROUP_SETTINGS[g])
                              for g, ps in enumerate(groups_of_params)],
                             lr=1e-3, betas=(0.9, 0.95), eps=1e-8)


def train(sd, gen):
    """`sd`'s tensors as fp32 masters after STEPS AdamW steps on random gradients drawn
    from `gen`, grouped as Megatron groups them (AdamW works element by element, so how
    Megatron splits the parameters over ranks and optimizers does not change a value);
    the truth: {name: {param, fp32, exp_avg, exp_avg_sq}, "step": STEPS}."""
    names = sorted(sd)
    params = {n: torch.nn.Parameter(sd[n].clone()) for n in names}
    opt = adamw([[params[n] for n in names if not no_weight_decay(n, params[n])],
                 [params[n] for n in names if no_weight_decay(n, params[n])]])
    for _ in range(STEPS):
        for n in names:
            params[n].grad = torch.randn(params[n].shape, generator=gen)
        opt.step()
    truth = {n: {"param": params[n].detach().to(torch.bfloat16), "fp32": params[n].detach().clone(),
                 "exp_avg": opt.state[params[n]]["exp_avg"].clone(),
                 "exp_avg_sq": opt.state[params[n]]["exp_avg_sq"].clone()} for n in names}
    truth["step"] = STEPS
    return truth


def train_full(seed):
    """The mcore model trained (see train)."""
    gen = torch.Generator().manual_seed(seed)
    sd = full_model(gen, torch.float32, MCORE["heads"], MCORE["groups"], MCORE["swiglu"],
                    MCORE["biases"])
    return train(sd, gen)


def mixed_state(groups, masters, moments, step):
    """Float16OptimizerWithFloat16Params.state_dict() of an optimizer over `groups`
    (lists of parameter names): torch's AdamW state_dict over the fp32 masters, and the
    masters group by group."""
    params = {n: torch.nn.Parameter(masters[n]) for g in groups for n in g}
    opt = adamw([[params[n] for n in g] for g in groups])
    for n in (n for n in masters if n in params):  # in file order
        opt.state[params[n]] = {"step": torch.tensor(float(step)),
                                "exp_avg": moments["exp_avg"][n],
                                "exp_avg_sq": moments["exp_avg_sq"][n]}
    return {"optimizer": opt.state_dict(),
            "fp32_from_fp16_params": [[masters[n] for n in g] for g in groups]}


def megatron_optimizer(truth, tp_rank, stage, tp, pp):
    """(model, optimizer entry) of one shard: what Megatron's save_checkpoint puts
    under "model" and Float16OptimizerWithFloat16Params.state_dict() under "optimizer"."""
    names = [n for n in truth if n != "step"]

    def cut(key):
        return shard({n: truth[n][key] for n in names}, MCORE["heads"], MCORE["groups"],
                     MCORE["swiglu"], MCORE["biases"], MCORE["legacy"], tp_rank, stage, tp, pp)
    model, masters = cut("param"), cut("fp32")
    moments = {k: cut(k) for k in ("exp_avg", "exp_avg_sq")}
    return model, mixed_state(megatron_groups(model), masters, moments, truth["step"])


def save_megatron(outdir, name, shard, **extra_args):
    """Saves a tp=TP pp=PP Megatron checkpoint: shard(tp_rank, stage) gives a rank's
    model, its optimizer dict and distrib_optim.pt's content (None: no such file)."""
    root = os.path.join(outdir, name)
    os.makedirs(root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("100")
    args = argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=MCORE["heads"],
        group_query_attention=True, num_query_groups=MCORE["groups"], kv_channels=HEAD_DIM,
        ffn_hidden_size=FFN, swiglu=True, padded_vocab_size=PADDED_VOCAB, vocab_size=VOCAB,
        tensor_model_parallel_size=TP, pipeline_model_parallel_size=PP, bf16=True,
        params_dtype=torch.bfloat16, lr=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8,
        weight_decay=0.1, iteration=100, **extra_args)
    for stage in range(PP):
        for tp_rank in range(TP):
            d = os.path.join(root, "iter_0000100", f"mp_rank_{tp_rank:02d}_{stage:03d}")
            os.makedirs(d)
            model, optimizer, dist = shard(tp_rank, stage)
            torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 100, "model": model,
                        "optimizer": optimizer,
                        "opt_param_scheduler": {"max_lr": 1e-3, "num_steps": STEPS},
                        "rng_state": [{"random_rng_state": None}]},
                       os.path.join(d, "model_optim_rng.pt"))
            if dist is not None:
                torch.save(dist, os.path.join(d, "distrib_optim.pt"))


def write_trained(outdir, name, seed):
    """Trains and saves the mcore model with the mixed-precision optimizer; returns the truth."""
    truth = train_full(seed)
    torch.save(truth, os.path.join(outdir, name + ".truth.pt"))
    save_megatron(outdir, name,
                  lambda tp_rank, stage: (*megatron_optimizer(truth, tp_rank, stage, TP, PP), None))
    return truth


# The distributed optimizer's data-parallel degree and DDP bucket size in mcore-distopt:
# stage 0's first bucket closes after a norm weight, off the 64-element grid, so the
# buckets' places differ from one bucket's.
DP, BUCKET = 4, 2320


def pad_to(n, divisor):
    return -(-n // divisor) * divisor


def distopt_layout(model, stage, bucket_size, dp):
    """Where Megatron's DistributedOptimizer puts a stage's parameters in its grad
    buffer (DistributedOptimizer._compute_per_buffer_param_layout,
    megatron/core/optimizer/distrib_optimizer.py, with pad_param_start and
    pad_bucket_end from param_layout.py): parameters in reverse registration order,
    each start aligned to 64 elements; with --overlap-grad-reduce a bucket closes once
    it holds bucket_size elements, on the first pipeline stage only (training.py
    disables bucketing on the others), and its end is padded to lcm(dp, 128).
    Returns ({name: start}, [(bucket start, unpadded numel, padded end)])."""
    size = bucket_size if stage == 0 else None
    starts, buckets = {}, []
    start = bucket_start = end = 0
    pending = False
    for name in reversed(list(model)):
        start = pad_to(start, 64)
        end = start + model[name].numel()
        starts[name] = start
        pending = True
        if size is not None and end - bucket_start >= size:
            buckets.append((bucket_start, end - bucket_start, pad_to(end, math.lcm(dp, 128))))
            bucket_start = start = buckets[-1][2]
            pending = False
        else:
            start = end
    if pending:
        buckets.append((bucket_start, end - bucket_start, pad_to(end, math.lcm(dp, 128))))
    return starts, buckets


def distopt_bucket_size(args):
    """(dp, DDP bucket size) a run with these args uses on its first stage
    (resolve_ddp_bucket_size, megatron/training/training.py): buckets only with
    --overlap-grad-reduce, of --ddp-bucket-size or max(4e7, 1e6 * dp) elements."""
    dp = getattr(args, "data_parallel_size", 1)
    if not getattr(args, "overlap_grad_reduce", False):
        return dp, None
    return dp, getattr(args, "ddp_bucket_size", None) or max(40000000, 1000000 * dp)


def distopt_file(states, stage, dp=DP, bucket_size=BUCKET):
    """distrib_optim.pt of one (tp, pp) rank, as DistributedOptimizer.save_parameter_state
    writes it (get_parameter_state_dp_zero): per grad buffer (here one: bf16 parameters,
    fp32 gradients), the fp32 master ("param") and Adam's moments over the whole buffer.
    Each DP rank owns 1/dp of every bucket; DP rank 0 gathers the shards and keeps each
    bucket without its end padding. `states`: {"param"|"exp_avg"|"exp_avg_sq": {name:
    the rank's local fp32 tensor}} in registration order."""
    starts, buckets = distopt_layout(states["param"], stage, bucket_size, dp)
    world = {}
    for key in ("param", "exp_avg", "exp_avg_sq"):
        buffer = torch.zeros(buckets[-1][2])
        for name, start in starts.items():
            t = states[key][name]
            buffer[start:start + t.numel()] = t.flatten()
        kept = []
        for bucket_start, unpadded, bucket_end in buckets:
            shards = buffer[bucket_start:bucket_end].chunk(dp)  # DP rank r's contiguous part
            kept.append(torch.cat(shards)[:unpadded])
        world[key] = torch.cat(kept)
    world["numel_unpadded"] = sum(unpadded for _, unpadded, _ in buckets)
    return {"buckets_coalesced": True, 0: {(torch.bfloat16, torch.float32): world}}


def distopt_states(dist, model, stage, dp, bucket_size):
    """The inverse, for judges: {"fp32"|"exp_avg"|"exp_avg_sq": {name: local tensor}}
    from a distrib_optim.pt dict, or a string saying what is wrong with it."""
    if dist.get("buckets_coalesced") is not True or set(dist) != {"buckets_coalesced", 0}:
        return f"not one coalesced buffer: keys {sorted(map(str, dist))}"
    buffers = dist[0]
    key = (torch.bfloat16, torch.float32)
    if list(buffers) != [key]:
        return f"buffer keys {list(buffers)}, expected [{key}]"
    world = buffers[key]
    starts, buckets = distopt_layout(model, stage, bucket_size, dp)
    numel = sum(unpadded for _, unpadded, _ in buckets)
    if world.get("numel_unpadded") != numel:
        return f"numel_unpadded {world.get('numel_unpadded')}, expected {numel}"
    out = {}
    for key, name in (("param", "fp32"), ("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")):
        t = world[key]
        if t.dtype != torch.float32 or t.shape != (numel,):
            return f"{key} is {t.dtype} {list(t.shape)}, expected float32 [{numel}]"
        buffer = torch.zeros(buckets[-1][2])
        at = 0
        for bucket_start, unpadded, _ in buckets:
            buffer[bucket_start:bucket_start + unpadded] = t[at:at + unpadded]
            at += unpadded
        covered = torch.zeros(buffer.numel(), dtype=torch.bool)
        out[name] = {}
        for n, start in starts.items():
            size = model[n].numel()
            out[name][n] = buffer[start:start + size].reshape(model[n].shape).clone()
            covered[start:start + size] = True
        if buffer[~covered].count_nonzero():
            return f"{key} has non-zero padding"
    return out


def as_distopt(model, optimizer, stage, dp, bucket_size):
    """(DistributedOptimizer.state_dict(), its distrib_optim.pt dict) of the optimizer
    over `model`'s parameters whose mixed-precision form is `optimizer` (mixed_state):
    state_dict() keeps torch's param_groups without their "params" and with the step (a
    float, from the state's step tensor) in each."""
    groups = megatron_groups(model)
    order = sum(groups, [])
    masters = dict(zip(order, sum(optimizer["fp32_from_fp16_params"], [])))
    state = optimizer["optimizer"]["state"]
    states = {"param": {n: masters[n] for n in model}}
    for key in ("exp_avg", "exp_avg_sq"):
        states[key] = {n: state[order.index(n)][key] for n in model}
    step = state[0]["step"].item()
    param_groups = []
    for g in optimizer["optimizer"]["param_groups"]:
        g = {k: v for k, v in g.items() if k != "params"}
        g["step"] = step
        param_groups.append(g)
    return {"optimizer": {"param_groups": param_groups}}, distopt_file(states, stage, dp, bucket_size)


def megatron_distopt(truth, tp_rank, stage, tp, pp):
    """(model, optimizer entry, distrib_optim.pt dict) of one shard with the distributed
    optimizer (as_distopt)."""
    model, optimizer = megatron_optimizer(truth, tp_rank, stage, tp, pp)
    return (model, *as_distopt(model, optimizer, stage, DP, BUCKET))


def write_distopt(outdir, name, truth):
    save_megatron(outdir, name, lambda tp_rank, stage: megatron_distopt(truth, tp_rank, stage, TP, PP),
                  data_parallel_size=DP, use_distributed_optimizer=True, overlap_grad_reduce=True,
                  ddp_bucket_size=BUCKET, accumulate_allreduce_grads_in_fp32=True,
                  untie_embeddings_and_output_weights=True, ckpt_format="torch")


EXPERTS, MOE_FFN, TOPK, SHARED_FFN = 4, 24, 2, 40


def full_moe(seed, shared=False, dtype=torch.bfloat16, freq=1, bias=False):
    """The MoE model's full tensors with Mixtral's HF names, and with `shared` the
    shared experts and their gates with Qwen2-MoE's. With `freq` N only every Nth layer
    from layer 0 is a MoE layer (Megatron's --moe-layer-freq N, gpt_layer_specs.py
    get_gpt_decoder_layer_specs), the others a dense SwiGLU MLP of FFN rows with Llama's
    names (mlp.{gate,up,down}_proj). With `bias` every linear layer has a bias
    (--add-bias-linear): attention's q/k/v/o, the dense MLP's and each expert's
    (w1/w3/w2.bias; the router has none)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)
    heads, groups = MCORE["heads"], MCORE["groups"]
    sd = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN), "lm_head.weight": rand(VOCAB, HIDDEN),
          "model.norm.weight": rand(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        attention_tensors(sd, p, rand, heads, groups)
        if bias:
            sd[p + "self_attn.q_proj.bias"] = rand(heads * HEAD_DIM)
            sd[p + "self_attn.k_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.v_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.o_proj.bias"] = rand(HIDDEN)
        if i % freq:
            for n, rows in (("gate_proj", FFN), ("up_proj", FFN)):
                sd[f"{p}mlp.{n}.weight"] = rand(rows, HIDDEN)
                if bias:
                    sd[f"{p}mlp.{n}.bias"] = rand(rows)
            sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
            if bias:
                sd[p + "mlp.down_proj.bias"] = rand(HIDDEN)
            continue
        sd[p + "block_sparse_moe.gate.weight"] = rand(EXPERTS, HIDDEN)
        for e in range(EXPERTS):
            x = f"{p}block_sparse_moe.experts.{e}."
            sd[x + "w1.weight"] = rand(MOE_FFN, HIDDEN)
            sd[x + "w3.weight"] = rand(MOE_FFN, HIDDEN)
            sd[x + "w2.weight"] = rand(HIDDEN, MOE_FFN)
            if bias:
                sd[x + "w1.bias"] = rand(MOE_FFN)
                sd[x + "w3.bias"] = rand(MOE_FFN)
                sd[x + "w2.bias"] = rand(HIDDEN)
        if shared:
            sd[p + "mlp.shared_expert_gate.weight"] = rand(1, HIDDEN)
            sd[p + "mlp.shared_expert.gate_proj.weight"] = rand(SHARED_FFN, HIDDEN)
            sd[p + "mlp.shared_expert.up_proj.weight"] = rand(SHARED_FFN, HIDDEN)
            sd[p + "mlp.shared_expert.down_proj.weight"] = rand(HIDDEN, SHARED_FFN)
    return sd


def rank_dir(tp_rank, stage, ep_rank, pp, ep):
    """get_checkpoint_name's folder for a rank."""
    return (f"mp_rank_{tp_rank:02d}" + (f"_{stage:03d}" if pp > 1 else "") +
            (f"_{ep_rank:03d}" if ep > 1 else ""))


def writers(tp, ep, etp):
    """The ranks of a pipeline stage that save a torch-format checkpoint, each as (rank,
    tp rank, ep rank, expert-TP piece), in rank order. parallel_state.py numbers the
    dense ranks tp-fastest, then data-parallel, and the expert ranks etp-fastest, then
    ep, then expert-data-parallel; save_checkpoint (training/checkpointing.py) lets a
    rank save when its data-parallel or expert-data-parallel rank is 0, into the folder
    of its dense tp rank and its ep rank (get_checkpoint_name). With etp > tp several
    ranks save into one folder, the last one's file staying."""
    return [(r, r % tp, (r // etp) % ep, r % etp) for r in range(max(tp, etp * ep))]


def moe_shard(sd, tp_rank, stage, ep_rank, tp, pp, ep, grouped, padded=PADDED_VOCAB,
              etp=None, piece=None):
    """One rank's model dict in registration order (see the module's docstring), the
    vocabulary padded to `padded` rows; the routed experts cut into `etp` pieces
    (expert_tensor_parallel_size, default tp), of which the rank holds `piece`
    (default its tp rank)."""
    etp, piece = (tp, tp_rank) if etp is None else (etp, piece)

    def pad_vocab(t):
        return torch.cat([t, torch.zeros(padded - VOCAB, *t.shape[1:], dtype=t.dtype)])

    def col(t, parts=tp, rank=tp_rank):
        return t.chunk(parts, dim=0)[rank].clone()

    def row(t, parts=tp, rank=tp_rank):
        return t.chunk(parts, dim=1)[rank].clone()
    out = collections.OrderedDict()
    per_stage, per_rank = LAYERS // pp, EXPERTS // ep
    if stage == 0:
        out["embedding.word_embeddings.weight"] = col(pad_vocab(sd["model.embed_tokens.weight"]))
    for local in range(per_stage):
        p, m = f"model.layers.{stage * per_stage + local}.", f"decoder.layers.{local}."
        # Attention as mcore registers it: linear_proj (weight, bias), then linear_qkv
        # (TE's LayerNormLinear: layer_norm_weight, weight, bias).
        out[m + "self_attention.linear_proj.weight"] = row(sd[p + "self_attn.o_proj.weight"])
        if p + "self_attn.o_proj.bias" in sd:  # row-parallel: whole on every rank
            out[m + "self_attention.linear_proj.bias"] = sd[p + "self_attn.o_proj.bias"].clone()
        out[m + "self_attention.linear_qkv.layer_norm_weight"] = sd[p + "input_layernorm.weight"].clone()
        for kind in ("weight", "bias"):
            if f"{p}self_attn.q_proj.{kind}" in sd:
                out[f"{m}self_attention.linear_qkv.{kind}"] = fuse_qkv(
                    *(sd[f"{p}self_attn.{x}_proj.{kind}"] for x in "qkv"),
                    MCORE["heads"], MCORE["groups"], tp_rank, tp)
        if p + "block_sparse_moe.gate.weight" not in sd:
            # A dense layer of a MoE model (--moe-layer-freq): TE's fused norm in
            # linear_fc1 as a dense model's, [gate; up] of the rank's rows, fc2
            # row-parallel, its bias whole.
            out[m + "mlp.linear_fc1.layer_norm_weight"] = sd[p + "post_attention_layernorm.weight"].clone()
            for kind in ("weight", "bias"):
                if f"{p}mlp.gate_proj.{kind}" in sd:
                    out[f"{m}mlp.linear_fc1.{kind}"] = torch.cat(
                        [col(sd[f"{p}mlp.gate_proj.{kind}"]), col(sd[f"{p}mlp.up_proj.{kind}"])])
            out[m + "mlp.linear_fc2.weight"] = row(sd[p + "mlp.down_proj.weight"])
            if p + "mlp.down_proj.bias" in sd:
                out[m + "mlp.linear_fc2.bias"] = sd[p + "mlp.down_proj.bias"].clone()
            continue
        out[m + "pre_mlp_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"].clone()
        out[m + "mlp.router.weight"] = sd[p + "block_sparse_moe.gate.weight"].clone()

        def fc1(e, kind):
            x = f"{p}block_sparse_moe.experts.{e}."
            if x + "w1." + kind not in sd:
                return None
            return torch.cat([col(sd[x + "w1." + kind], etp, piece),
                              col(sd[x + "w3." + kind], etp, piece)])

        def fc2(e, kind):
            t = sd.get(f"{p}block_sparse_moe.experts.{e}.w2.{kind}")
            # fc2 is row-parallel: its weight's columns are cut, its bias is whole.
            return None if t is None else row(t, etp, piece) if kind == "weight" else t.clone()
        mine = [ep_rank * per_rank + i for i in range(per_rank)]

        def put(name, t):
            if t is not None:
                out[m + name] = t
        if grouped:  # TEGroupedMLP: linear_fc1's weight0, bias0, weight1, ..., then fc2's
            for fc, cut in (("linear_fc1", fc1), ("linear_fc2", fc2)):
                for i, e in enumerate(mine):
                    for kind in ("weight", "bias"):
                        put(f"mlp.experts.{fc}.{kind}{i}", cut(e, kind))
        else:  # SequentialMLP: each expert's fc1 and fc2, an MLP's weight then bias
            for i, e in enumerate(mine):
                for fc, cut in (("linear_fc1", fc1), ("linear_fc2", fc2)):
                    for kind in ("weight", "bias"):
                        put(f"mlp.experts.local_experts.{i}.{fc}.{kind}", cut(e, kind))
        s = p + "mlp.shared_expert"
        if s + "_gate.weight" in sd:
            out[m + "mlp.shared_experts.gate_weight"] = sd[s + "_gate.weight"].clone()
        if s + ".up_proj.weight" in sd:
            out[m + "mlp.shared_experts.linear_fc1.weight"] = torch.cat(
                [col(sd[s + ".gate_proj.weight"]), col(sd[s + ".up_proj.weight"])])
            out[m + "mlp.shared_experts.linear_fc2.weight"] = row(sd[s + ".down_proj.weight"])
    if stage == pp - 1:
        out["decoder.final_layernorm.weight"] = sd["model.norm.weight"].clone()
        out["output_layer.weight"] = col(pad_vocab(sd["lm_head.weight"]))
    return out


def moe_args(tp, pp, ep, grouped, shared=None, gate=False, freq=1, bias=False, etp=None):
    return argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=MCORE["heads"],
        group_query_attention=True, num_query_groups=MCORE["groups"], kv_channels=HEAD_DIM,
        ffn_hidden_size=MOE_FFN if freq == 1 else FFN, swiglu=True,
        padded_vocab_size=PADDED_VOCAB, vocab_size=VOCAB, add_bias_linear=bias,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        expert_model_parallel_size=ep, expert_tensor_parallel_size=etp or tp, num_experts=EXPERTS,
        moe_ffn_hidden_size=MOE_FFN, moe_router_topk=TOPK, moe_grouped_gemm=grouped,
        moe_layer_freq=freq, moe_router_load_balancing_type="aux_loss", bf16=True,
        moe_shared_expert_intermediate_size=shared, moe_shared_expert_gate=gate,
        moe_shared_expert_overlap=False, params_dtype=torch.bfloat16, iteration=100)


def save_moe(outdir, name, args, shard):
    """Saves a MoE checkpoint at the degrees `args` gives, each folder by the ranks
    `writers` says write it: shard(tp_rank, stage, ep_rank, (rank, piece)) gives a
    rank's model, its optimizer entry and distrib_optim.pt's content (None: left
    out)."""
    tp, pp, ep = (args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                  args.expert_model_parallel_size)
    root = os.path.join(outdir, name)
    os.makedirs(root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("100")
    for stage in range(pp):
        for rank, tp_rank, ep_rank, piece in writers(tp, ep, args.expert_tensor_parallel_size):
            d = os.path.join(root, "iter_0000100", rank_dir(tp_rank, stage, ep_rank, pp, ep))
            os.makedirs(d, exist_ok=True)
            model, optimizer, dist = shard(tp_rank, stage, ep_rank, (rank, piece))
            saved = {"args": args, "checkpoint_version": 3.0, "iteration": 100,
                     "model": model, "rng_state": [{"random_rng_state": None}]}
            if optimizer is not None:
                saved["optimizer"] = optimizer
                saved["opt_param_scheduler"] = {"max_lr": 1e-3, "num_steps": STEPS}
            torch.save(saved, os.path.join(d, "model_optim_rng.pt"))
            if dist is not None:
                torch.save(dist, os.path.join(d, "distrib_optim.pt"))


def write_moe(outdir, name, sd, tp, pp, ep, grouped):
    shared = "model.layers.0.mlp.shared_expert.up_proj.weight" in sd
    args = moe_args(tp, pp, ep, grouped, SHARED_FFN if shared else None,
                    "model.layers.0.mlp.shared_expert_gate.weight" in sd)
    save_moe(outdir, name, args, lambda tp_rank, stage, ep_rank, _: (
        moe_shard(sd, tp_rank, stage, ep_rank, tp, pp, ep, grouped), None, None))


def is_expert(name):
    """A routed expert's parameter: Megatron marks it allreduce=False, which puts it in
    the experts' optimizer (optimizer/__init__.py, _get_param_groups' is_expert_parallel)."""
    return ".mlp.experts." in name


def moe_optimizer(truth, tp_rank, stage, ep_rank, tp, pp, ep, grouped, padded=PADDED_VOCAB,
                  etp=None, piece=None):
    """(model, optimizer entry) of one MoE rank with the mixed-precision optimizer: the
    model as moe_shard cuts it and ChainedOptimizer.state_dict()'s list of its
    optimizers' state_dicts (optimizer.py), as get_megatron_optimizer
    (optimizer/__init__.py) builds them: first the dense parameters' optimizer, then
    the experts' (this expert-parallel rank's experts, in registration order). The
    dense optimizer is the same on every expert-parallel rank of a (tp, pp) rank. The
    experts are cut into `etp` pieces (see moe_shard)."""
    names = [n for n in truth if n != "step"]

    def cut(key):
        return moe_shard({n: truth[n][key] for n in names}, tp_rank, stage, ep_rank, tp, pp, ep,
                         grouped, padded, etp, piece)
    model, masters = cut("param"), cut("fp32")
    moments = {k: cut(k) for k in ("exp_avg", "exp_avg_sq")}
    return model, [mixed_state(megatron_groups(part), masters, moments, truth["step"])
                   for part in moe_parts(model)]


def moe_parts(model):
    """A rank's model dict split as ChainedOptimizer's optimizers hold it: the dense
    parameters, then the experts, each in registration order."""
    return [{n: t for n, t in model.items() if is_expert(n) == expert} for expert in (False, True)]


def moe_distopt(truth, tp_rank, stage, ep_rank, tp, pp, ep, grouped, dp, bucket_size,
                etp=None, writer=None):
    """(model, optimizer entry, distrib_optim.pt content) of one MoE rank with the
    distributed optimizer. model_optim_rng.pt keeps the list of both optimizers'
    state_dict() (as_distopt). distrib_optim.pt is ChainedOptimizer.save_parameter_state's
    list: each optimizer's get_parameter_state_dp_zero() where its data-parallel rank is
    0, None elsewhere. The experts' optimizer reduces over the expert-data-parallel
    group (dp / ep ranks of one expert-parallel rank), so each expert-parallel rank's
    folder holds its experts' buffer; the dense optimizer's DP rank 0 is at
    expert-parallel rank 0 (ranks are ordered tp, ep, then the rest of dp), so the
    other ranks' folders hold None for it. With the experts cut over `etp` ranks the
    folder is `writer`'s ((rank, expert piece), see writers): the dense states are there
    when rank < tp (its data-parallel rank is 0), the experts' when rank < etp * ep
    (its expert-data-parallel rank is 0), None otherwise; a stage's tp * dp ranks make
    tp * dp / (etp * ep) expert-data-parallel ranks."""
    etp = etp or tp
    rank, piece = writer or (tp_rank + tp * ep_rank, tp_rank)
    model, optimizers = moe_optimizer(truth, tp_rank, stage, ep_rank, tp, pp, ep, grouped,
                                      PADDED_VOCAB, etp, piece)
    dense, experts = moe_parts(model)
    dense_entry, dense_dist = as_distopt(dense, optimizers[0], stage, dp, bucket_size)
    expert_entry, expert_dist = as_distopt(experts, optimizers[1], stage,
                                           max(dp * tp // (etp * ep), 1), bucket_size)
    return (model, [dense_entry, expert_entry],
            [dense_dist if rank < tp else None, expert_dist if rank < etp * ep else None])


# The MoE model's distributed optimizer: dp=4 (expert-data-parallel 2 at ep=2) and
# buckets of 1000 elements on stage 0, which cut both its dense and its experts' buffer.
MOE_BUCKET = 1000


def moe_adam_truth(freq=1, bias=False):
    """The MoE model trained 3 AdamW steps: moe-adam.truth.pt (make_megatron_dist.py
    --moe --optim lays out the same one); with `freq` or `bias` (see full_moe) the
    mixed-layer or expert-bias variant."""
    seed = 7 + 10 * (freq - 1) + 100 * bias
    return train(full_moe(seed=seed, dtype=torch.float32, freq=freq, bias=bias),
                 torch.Generator().manual_seed(seed))


def write_moe_optim(outdir, freq=1, bias=False):
    """The MoE model trained 3 AdamW steps (moe-adam.truth.pt) and saved with Megatron's
    ChainedOptimizer: moe-adam-tp2ep2 with the mixed-precision optimizer (SequentialMLP
    names) and moe-distopt-tp2pp2ep2 with the distributed one (TEGroupedMLP names).
    With `freq` or `bias` (see full_moe) the names start moe-freqN / moe-bias instead
    of moe, and the truth is their .truth.pt."""
    name = "moe" + (f"-freq{freq}" if freq != 1 else "") + ("-bias" if bias else "")
    truth = moe_adam_truth(freq, bias)
    torch.save(truth, os.path.join(outdir, (name if name != "moe" else "moe-adam") + ".truth.pt"))
    settings = dict(lr=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.1)
    args = moe_args(2, 1, 2, False, freq=freq, bias=bias)
    vars(args).update(settings)
    save_moe(outdir, name + "-adam-tp2ep2", args, lambda t, p, e, _: (
        *moe_optimizer(truth, t, p, e, 2, 1, 2, False), None))
    args = moe_args(2, 2, 2, True, freq=freq, bias=bias)
    vars(args).update(settings, data_parallel_size=DP, use_distributed_optimizer=True,
                      overlap_grad_reduce=True, ddp_bucket_size=MOE_BUCKET,
                      accumulate_allreduce_grads_in_fp32=True,
                      untie_embeddings_and_output_weights=True, ckpt_format="torch")
    save_moe(outdir, name + "-distopt-tp2pp2ep2", args, lambda t, p, e, _: moe_distopt(
        truth, t, p, e, 2, 2, 2, True, DP, MOE_BUCKET))


def write_moe_etp(outdir, etp):
    """The trained MoE model (moe-adam.truth.pt) with its routed experts cut over `etp`
    expert-tensor-parallel ranks (--expert-tensor-parallel-size), saved as Megatron saves
    it (see writers). etp 1:
      moe-etp1-adam-tp2/           tp=2 ep=1, the mixed-precision optimizer, SequentialMLP
                                   names: both folders hold every expert whole.
      moe-etp1-distopt-tp2pp2/     tp=2 pp=2 ep=1, the distributed optimizer (dp=4, so the
                                   experts' optimizer shards over 8 ranks), TEGroupedMLP
                                   names: mp_rank_01_PPP's distrib_optim.pt holds None
                                   for the experts (rank 1 is not their DP rank 0).
      moe-etp1-adam-tp2ep2/        tp=2 ep=2, mixed: only mp_rank_00_000 and
                                   mp_rank_01_001 exist.
      moe-etp1-distopt-tp2ep4/     tp=2 ep=4, distributed (dp=2, expert-data-parallel 1):
                                   mp_rank_00_000, 01_001, 00_002, 01_003, the last two
                                   with None for the dense optimizer.
    etp 2 (more than tp, which Megatron saves but cannot be read back whole):
      moe-etp2-adam-tp1ep2/        tp=1 ep=2, mixed: ranks 2e and 2e+1 both write
                                   mp_rank_00_00e, the second's expert piece 1 staying."""
    truth = moe_adam_truth()
    torch.save(truth, os.path.join(outdir, "moe-adam.truth.pt"))
    settings = dict(lr=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.1)
    distributed = dict(use_distributed_optimizer=True, overlap_grad_reduce=True,
                       ddp_bucket_size=MOE_BUCKET, accumulate_allreduce_grads_in_fp32=True,
                       untie_embeddings_and_output_weights=True, ckpt_format="torch")
    layouts = ([("adam-tp2", 2, 1, 1, False, None), ("distopt-tp2pp2", 2, 2, 1, True, 4),
                ("adam-tp2ep2", 2, 1, 2, False, None), ("distopt-tp2ep4", 2, 1, 4, False, 2)]
               if etp == 1 else [("adam-tp1ep2", 1, 1, 2, False, None)])
    for name, tp, pp, ep, grouped, dp in layouts:
        args = moe_args(tp, pp, ep, grouped, etp=etp)
        vars(args).update(settings)
        if dp:
            vars(args).update(distributed, data_parallel_size=dp)
            shard = (lambda t, p, e, w, tp=tp, pp=pp, ep=ep, grouped=grouped, dp=dp: moe_distopt(
                truth, t, p, e, tp, pp, ep, grouped, dp, MOE_BUCKET, etp, w))
        else:
            shard = (lambda t, p, e, w, tp=tp, pp=pp, ep=ep, grouped=grouped: (*moe_optimizer(
                truth, t, p, e, tp, pp, ep, grouped, PADDED_VOCAB, etp, w[1]), None))
        save_moe(outdir, f"moe-etp{etp}-{name}", args, shard)


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    opts = sys.argv[2:]
    freq = int(opts[opts.index("--moe-layer-freq") + 1]) if "--moe-layer-freq" in opts else 1
    if "--moe" in opts and "--etp" in opts:
        write_moe_etp(outdir, int(opts[opts.index("--etp") + 1]))
        return
    if "--moe" in opts and "--optim" in opts:
        write_moe_optim(outdir, freq, "--expert-bias" in opts)
        return
    if "--moe" in sys.argv[2:] and "--shared-experts" in sys.argv[2:]:
        sd = full_moe(seed=6, shared=True)
        torch.save(sd, os.path.join(outdir, "moe-shared.truth.pt"))
        write_manifest(outdir, "moe-shared", sd)
        write_moe(outdir, "moe-shared-tp2ep2", sd, tp=2, pp=1, ep=2, grouped=False)
        sd = {n: t for n, t in sd.items() if not n.endswith("shared_expert_gate.weight")}
        torch.save(sd, os.path.join(outdir, "moe-shared-nogate.truth.pt"))
        write_moe(outdir, "moe-shared-nogate-tp1pp2ep2", sd, tp=1, pp=2, ep=2, grouped=True)
        return
    if "--moe" in sys.argv[2:]:
        sd = full_moe(seed=5)
        torch.save(sd, os.path.join(outdir, "moe.truth.pt"))
        write_manifest(outdir, "moe", sd)
        write_moe(outdir, "moe-tp1ep2", sd, tp=1, pp=1, ep=2, grouped=False)
        write_moe(outdir, "moe-tp2pp2ep2", sd, tp=2, pp=2, ep=2, grouped=True)
        return
    truth = write_trained(outdir, "mcore-adam", seed=3)
    write_distopt(outdir, "mcore-distopt", truth)
    write(outdir, "mcore", heads=4, groups=2, swiglu=True, biases=False, dtype=torch.bfloat16,
          legacy=False, seed=1)
    write(outdir, "legacy", heads=4, groups=4, swiglu=False, biases=True, dtype=torch.float16,
          legacy=True, seed=2)


if __name__ == "__main__":
    main()
