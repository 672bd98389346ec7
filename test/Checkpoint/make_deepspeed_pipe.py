#!/usr/bin/env python3
"""Trains two tiny Megatron-DeepSpeed GPTs 3 Adam steps and saves them as DeepSpeed's
PipelineModule and Megatron-DeepSpeed save them, with tensor and pipeline parallelism.

Usage: make_deepspeed_pipe.py OUTDIR

DeepSpeed cannot be installed here, so the files follow the code that writes them, read
at microsoft/DeepSpeed 38327e07 and microsoft/Megatron-DeepSpeed f4157bea:

* GPTModelPipe (megatron/model/gpt_model.py) lists its layers as 0 `_to_float16` (a
  function), 1 the embedding (TiedLayerSpec 'embed' of EmbeddingPipe, or
  LayerSpec(EmbeddingPipe) with --untie-embeddings-and-output-weights), 2..L+1 the
  transformer layers, L+2 the final norm (LayerNorm or RMSNorm), L+3 the head (the tied
  'embed' spec with forward_fn=_logits_helper, or LMHeadPipe), L+4 `float16_to_fp32`,
  and partitions them with partition_method='type:transformer'.
* PipelineModule (deepspeed/runtime/pipe/module.py) splits that list with
  partition_balanced over the transformer layers (deepspeed/runtime/utils.py, copied
  below), registers its tied modules first (`tied_modules.embed.word_embeddings.weight`)
  and every other layer under its index (`3.self_attention.dense.weight`), and saves each
  layer that has a state_dict as layer_XX-model_YY-model_states.pt (ckpt_layer_path,
  save_state_dict: XX the index, YY the tensor-parallel rank from
  ProcessTopology.get_rank_repr; data-parallel rank 0 writes them all,
  clone_tensors_for_torch_save keeps the OrderedDict). The tied head is a
  functools.partial, which has no state_dict and so no file.
* The engine (deepspeed/runtime/engine.py, _save_checkpoint, _get_ckpt_name,
  _get_zero_ckpt_name) saves mp_rank_MM_model_states.pt with module=None
  (PipelineEngine.module_state_dict wrote the layer files instead) and param_shapes
  under those names, and [bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt. MM is
  PipelineParallelGrid.get_model_parallel_rank (deepspeed/runtime/pipe/topology.py): the
  rank among those of one data-parallel rank, over PipeModelDataParallelTopology's axes
  (pipe, data, model), so stage * tp + tp rank; mp_world_size is pp * tp.
* Megatron-DeepSpeed groups each stage's parameters (get_param_groups,
  megatron/optimizer/__init__.py): weight-decayed ones, then biases and vectors, each in
  named_parameters() order.
* The stage holding the tied head also holds the embedding module and optimizes its own
  copy: word_embeddings' gradient is all-reduced over the tied stages
  (PipelineModule.allreduce_tied_weight_gradients), so both copies stay equal, while the
  copy of the position embeddings gets no gradient and drifts under weight decay.
  ds_to_universal.py skips these copies on stages after the first
  (pipeline_replicated_parameter_patterns of UniversalCheckpointInfo).
* SwiGLU: each tp rank's dense_h_to_4h holds [gate; up] of its slice (ParallelMLP chunks
  its output in two), which ds_to_universal.py joins as all gates, then all ups
  (parameter_with_2_sub_params_cat_dim_0).

Folders, each with `latest` naming global_step3/:
  pipe/         a GPT-2-like model (tied embeddings, learned positions, LayerNorm, GELU,
                biases), 4 layers, tp=2, pp=2, dp=2, DeepSpeed's BF16_Optimizer (bf16
                without ZeRO, as BLOOM was trained)
  swiglu/       a Llama-like model (untied head, no position embedding, RMSNorm, SwiGLU,
                no biases) run with --no-pipeline-parallel: tp=2, dp=2, ZeRO-1
  swiglu_pipe/  the same model as a GPTModelPipe, 3 layers (stages of 2 and 1), tp=2,
                pp=2, dp=2, ZeRO-1
truth_pipe.pt, truth_swiglu.pt: the full tensors under Megatron-DeepSpeed's own
(non-pipeline) names, {name: {"param" (bf16), "fp32", "exp_avg", "exp_avg_sq"}},
"step", and in truth_pipe.pt "stale": the last stage's copy of the position
embeddings, {"fp32", "exp_avg", "exp_avg_sq"}.
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_deepspeed import STEPS, partitions, truth_of  # noqa: E402
from megatron_like import (LossScaler, megatron_deepspeed_tp_slice,  # noqa: E402
                           pipe_name_of)

TP, PP, DP = 2, 2, 2
HIDDEN, HEADS, VOCAB, SEQ = 8, 2, 32, 6
GPT2 = dict(layers=4, ffn=16, tied=True, positions=True, norm="layernorm", swiglu=False, bias=True)
LLAMA = dict(layers=3, ffn=8, tied=False, positions=False, norm="rmsnorm", swiglu=True, bias=False)
EMB = "language_model.embedding."
ENC = "language_model.encoder."


def shapes_of(cfg):
    """The parameters in named_parameters() order, under GPTModel's names."""
    out = collections.OrderedDict()
    out[EMB + "word_embeddings.weight"] = (VOCAB, HIDDEN)
    if cfg["positions"]:
        out[EMB + "position_embeddings.weight"] = (SEQ, HIDDEN)
    fc1 = 2 * cfg["ffn"] if cfg["swiglu"] else cfg["ffn"]
    for n in range(cfg["layers"]):
        layer = f"{ENC}layers.{n}."
        for norm in ("input_layernorm", "self_attention", "post_attention_layernorm", "mlp"):
            if norm == "self_attention":
                out[layer + "self_attention.query_key_value.weight"] = (3 * HIDDEN, HIDDEN)
                if cfg["bias"]:
                    out[layer + "self_attention.query_key_value.bias"] = (3 * HIDDEN,)
                out[layer + "self_attention.dense.weight"] = (HIDDEN, HIDDEN)
                if cfg["bias"]:
                    out[layer + "self_attention.dense.bias"] = (HIDDEN,)
            elif norm == "mlp":
                out[layer + "mlp.dense_h_to_4h.weight"] = (fc1, HIDDEN)
                if cfg["bias"]:
                    out[layer + "mlp.dense_h_to_4h.bias"] = (fc1,)
                out[layer + "mlp.dense_4h_to_h.weight"] = (HIDDEN, cfg["ffn"])
                if cfg["bias"]:
                    out[layer + "mlp.dense_4h_to_h.bias"] = (HIDDEN,)
            else:
                out[layer + norm + ".weight"] = (HIDDEN,)
                if cfg["norm"] == "layernorm":
                    out[layer + norm + ".bias"] = (HIDDEN,)
    out[ENC + "final_layernorm.weight"] = (HIDDEN,)
    if cfg["norm"] == "layernorm":
        out[ENC + "final_layernorm.bias"] = (HIDDEN,)
    if not cfg["tied"]:
        out["language_model.output_layer.weight"] = (VOCAB, HIDDEN)
    return out


def no_wd(name, shape):
    """Megatron's default no_weight_decay_cond."""
    return name.endswith(".bias") or len(shape) == 1


def train(cfg, seed):
    """3 Adam steps of the full model, with a stale copy of the position embeddings
    trained on zero gradients as the tied stage's copy is (returned apart)."""
    shapes = shapes_of(cfg)
    gen = torch.Generator().manual_seed(seed)
    p = {n: torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.5) for n, s in shapes.items()}
    stale = None
    if cfg["tied"] and cfg["positions"]:
        stale = torch.nn.Parameter(p[EMB + "position_embeddings.weight"].detach().clone())
    groups = [[p[n] for n, s in shapes.items() if not no_wd(n, s)] + ([stale] if stale is not None else []),
              [p[n] for n, s in shapes.items() if no_wd(n, s)]]
    opt = torch.optim.Adam([{"params": g, "weight_decay": wd} for g, wd in zip(groups, (0.1, 0.0))], lr=1e-2)

    def norm(x, name):
        if cfg["norm"] == "layernorm":
            return torch.nn.functional.layer_norm(x, (HIDDEN,), p[name + ".weight"], p[name + ".bias"])
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * p[name + ".weight"]

    def linear(x, name):
        y = x @ p[name + ".weight"].T
        return y + p[name + ".bias"] if cfg["bias"] else y

    for _ in range(STEPS):
        tokens = torch.randint(0, VOCAB, (SEQ,), generator=gen)
        h = p[EMB + "word_embeddings.weight"][tokens]
        if cfg["positions"]:
            h = h + p[EMB + "position_embeddings.weight"]
        for n in range(cfg["layers"]):
            layer = f"{ENC}layers.{n}."
            x = norm(h, layer + "input_layernorm")
            qkv = linear(x, layer + "self_attention.query_key_value").view(SEQ, HEADS, 3, HIDDEN // HEADS)
            q, k, v = qkv.unbind(2)
            attn = torch.softmax(torch.einsum("shd,thd->hst", q, k) / math.sqrt(HIDDEN // HEADS), -1)
            h = h + linear(torch.einsum("hst,thd->shd", attn, v).reshape(SEQ, HIDDEN),
                           layer + "self_attention.dense")
            x = linear(norm(h, layer + "post_attention_layernorm"), layer + "mlp.dense_h_to_4h")
            if cfg["swiglu"]:
                gate, up = x.chunk(2, dim=-1)
                x = torch.nn.functional.silu(gate) * up
            else:
                x = torch.nn.functional.gelu(x)
            h = h + linear(x, layer + "mlp.dense_4h_to_h")
        h = norm(h, ENC + "final_layernorm")
        head = p[EMB + "word_embeddings.weight"] if cfg["tied"] else p["language_model.output_layer.weight"]
        loss = torch.nn.functional.cross_entropy(h @ head.T, tokens.roll(1))
        opt.zero_grad()
        loss.backward()
        if stale is not None:
            stale.grad = torch.zeros_like(stale)
        opt.step()
    truth = truth_of(p, opt)
    if stale is not None:
        truth["stale"] = {"fp32": stale.detach().clone(), "exp_avg": opt.state[stale]["exp_avg"].clone(),
                          "exp_avg_sq": opt.state[stale]["exp_avg_sq"].clone()}
    return truth


def partition_uniform(num_items, num_parts):
    """deepspeed/runtime/utils.py, with numpy's arange spelled out."""
    parts = [0] * (num_parts + 1)
    if num_items <= num_parts:
        for p in range(num_parts + 1):
            parts[p] = min(p, num_items)
        return parts
    chunksize = num_items // num_parts
    residual = num_items - (chunksize * num_parts)
    parts = list(range(0, (num_parts + 1) * chunksize, chunksize))
    for i in range(residual):
        for j in range(i + 1, num_parts + 1):
            parts[j] += 1
    return parts


def partition_balanced(weights, num_parts):
    """deepspeed/runtime/utils.py: the linear partition problem by dynamic programming."""
    n, m = len(weights), num_parts
    if n <= m:
        return partition_uniform(n, m)
    inf = math.inf
    dp_max = [[inf] * (m + 1) for _ in range(n + 1)]
    dp_min = [[inf] * (m + 1) for _ in range(n + 1)]
    dp_cost = [[inf] * (m + 1) for _ in range(n + 1)]
    position = [[0] * (m + 1) for _ in range(n + 1)]
    prefix_sum = [0] * (n + 1)
    for i, w in enumerate(weights):
        prefix_sum[i + 1] = prefix_sum[i] + w
    dp_max[0][0] = 0
    dp_cost[0][0] = 0
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            for k in range(i):
                max_sum = max(dp_max[k][j - 1], prefix_sum[i] - prefix_sum[k])
                min_sum = min(dp_min[k][j - 1], prefix_sum[i] - prefix_sum[k])
                cost = max_sum - min_sum
                if dp_cost[i][j] >= cost:
                    dp_cost[i][j] = cost
                    dp_max[i][j] = max_sum
                    dp_min[i][j] = min_sum
                    position[i][j] = k
    parts = [n]
    for i in reversed(range(1, m + 1)):
        parts.append(position[parts[-1]][i])
    parts.reverse()
    return parts


def pipe_layout(cfg):
    """Each stage's parameters in named_parameters() order: (pipeline name, GPTModel
    name, layer index or None for a tied copy, key in the layer file)."""
    layers = cfg["layers"]
    specs = 1 + 1 + layers + 1 + 1 + 1  # _to_float16 .. float16_to_fp32
    weights = [1 if 2 <= i < 2 + layers else 0 for i in range(specs)]
    parts = partition_balanced(weights, PP)
    stage_of = {i: s for s in range(PP) for i in range(parts[s], parts[s + 1])}
    stages = [[] for _ in range(PP)]
    embed_stage, head_stage = stage_of[1], stage_of[layers + 3]
    for name in shapes_of(cfg):
        pipe, index, key = pipe_name_of(name, layers, cfg["tied"])
        stages[stage_of[index]].append((pipe, name, index, key))
    if cfg["tied"] and head_stage != embed_stage:
        copies = [(pipe, name, None, key) for pipe, name, _, key in stages[embed_stage]
                  if pipe.startswith("tied_modules.")]
        stages[head_stage][:0] = copies  # tied_modules is registered before the layers
    return stages


def args_of(cfg, pipeline):
    return argparse.Namespace(
        num_layers=cfg["layers"], hidden_size=HIDDEN, ffn_hidden_size=cfg["ffn"],
        num_attention_heads=HEADS, padded_vocab_size=VOCAB, max_position_embeddings=SEQ,
        tensor_model_parallel_size=TP, pipeline_model_parallel_size=PP if pipeline else 1,
        no_pipeline_parallel=not pipeline, swiglu=cfg["swiglu"],
        untie_embeddings_and_output_weights=not cfg["tied"],
        add_position_embedding=cfg["positions"], normalization=cfg["norm"],
        add_bias_linear=cfg["bias"], bf16=True, deepspeed=True)


def client_state(cfg, pipeline):
    """What Megatron-DeepSpeed's save_checkpoint hands the engine (checkpointing.py)."""
    return {"args": args_of(cfg, pipeline), "checkpoint_version": 3.0, "iteration": STEPS,
            "tokens": STEPS * SEQ,
            "universal_checkpoint_info": {"universal_checkpoint_version": 0.2,
                                          "original_vocab_size": VOCAB, "padded_vocab_size": VOCAB}}


def save_rank(root, states, groups, shapes, mp, mp_world, module, bf16_optimizer, cfg, pipeline):
    """One mp rank's model states and its dp ranks' optimizer files, as
    make_deepspeed.save_zero1 writes them but with module given (None for a pipeline)."""
    model = {"module": module, "buffer_names": [], "optimizer": None,
             "param_shapes": [collections.OrderedDict((n, torch.Size(shapes[n])) for n in g) for g in groups],
             "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None,
             "lr_scheduler": None, "data_sampler": None, "random_ltd": None,
             "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": STEPS,
             "global_samples": STEPS * 8, "dp_world_size": DP, "mp_world_size": mp_world,
             "ds_config": {"zero_optimization": {"stage": 0 if bf16_optimizer else 1},
                           "bf16": {"enabled": True}, "train_batch_size": 8},
             "ds_version": "0.14.0"}
    model.update(client_state(cfg, pipeline))
    torch.save(model, os.path.join(root, f"mp_rank_{mp:02d}_model_states.pt"))
    per_group = [partitions(states, names, bf16_optimizer) for names in groups]
    step = torch.tensor(float(STEPS)) if bf16_optimizer else STEPS
    for r in range(DP):
        parts = [group[r] for group in per_group]
        base = {"state": {g: {"step": step, "exp_avg": part["exp_avg"], "exp_avg_sq": part["exp_avg_sq"]}
                          for g, (part, _, _) in enumerate(parts)},
                "param_groups": [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": wd,
                                  "amsgrad": False, "params": [g]} for g, wd in enumerate((0.1, 0.0))]}
        osd = {"clip_grad": 1.0, "base_optimizer_state": base,
               "single_partition_of_fp32_groups": [part["fp32"] for part, _, _ in parts],
               "group_paddings": [padding for _, padding, _ in parts],
               "partition_count": [DP] * len(groups), "ds_version": "0.14.0",
               "param_slice_mappings": [m for _, _, m in parts]}
        if not bf16_optimizer:
            osd.update({"loss_scaler": LossScaler(), "dynamic_loss_scale": False, "overflow": False,
                        "zero_stage": 1})
        prefix = "bf16_" if bf16_optimizer else ""
        torch.save({"optimizer_state_dict": osd, "ds_config": {}, "ds_version": "0.14.0"},
                   os.path.join(root, f"{prefix}zero_pp_rank_{r}_mp_rank_{mp:02d}_optim_states.pt"))


def sliced(truth, name, mp, swiglu, stale=False):
    keys = ("fp32", "exp_avg", "exp_avg_sq") if stale else ("param", "fp32", "exp_avg", "exp_avg_sq")
    source = truth["stale"] if stale else truth[name]
    return {k: megatron_deepspeed_tp_slice(source[k], name, mp, TP, swiglu) for k in keys}


def save_pipe(truth, cfg, root, bf16_optimizer):
    stages = pipe_layout(cfg)
    for s, params in enumerate(stages):
        for t in range(TP):
            states, shapes = {}, collections.OrderedDict()
            for pipe, name, index, _ in params:
                copy = index is None
                states[pipe] = sliced(truth, name, t, cfg["swiglu"],
                                      stale=copy and name.endswith("position_embeddings.weight"))
                if copy and "param" not in states[pipe]:  # only fp32 and moments are kept per stage
                    states[pipe]["param"] = None
                shapes[pipe] = tuple(states[pipe]["fp32"].shape)
            groups = [[pipe for pipe, name, _, _ in params if not no_wd(name, shapes_of(cfg)[name])],
                      [pipe for pipe, name, _, _ in params if no_wd(name, shapes_of(cfg)[name])]]
            save_rank(root, states, groups, shapes, s * TP + t, PP * TP, None, bf16_optimizer, cfg, True)
            # save_state_dict: every built layer with a state_dict, its tensors cloned.
            by_layer = collections.OrderedDict()
            for pipe, name, index, key in params:
                if index is not None:
                    by_layer.setdefault(index, collections.OrderedDict())[key] = states[pipe]["param"].clone()
            for index, state in by_layer.items():
                torch.save(state, os.path.join(root, f"layer_{index:02d}-model_{t:02d}-model_states.pt"))


def save_flat(truth, cfg, root):
    """--no-pipeline-parallel: GPTModel's names, the module in mp_rank_MM_model_states.pt."""
    shapes_full = shapes_of(cfg)
    groups = [[n for n, s in shapes_full.items() if not no_wd(n, s)],
              [n for n, s in shapes_full.items() if no_wd(n, s)]]
    for t in range(TP):
        states = {n: sliced(truth, n, t, cfg["swiglu"]) for n in shapes_full}
        shapes = collections.OrderedDict((n, tuple(states[n]["param"].shape)) for n in shapes_full)
        module = collections.OrderedDict((n, states[n]["param"]) for n in shapes_full)
        save_rank(root, states, groups, shapes, t, TP, module, False, cfg, False)


def main():
    out = sys.argv[1]
    gpt2, llama = train(GPT2, 7), train(LLAMA, 11)
    os.makedirs(out, exist_ok=True)
    torch.save(gpt2, os.path.join(out, "truth_pipe.pt"))
    torch.save(llama, os.path.join(out, "truth_swiglu.pt"))
    for name, writer in (("pipe", lambda root: save_pipe(gpt2, GPT2, root, True)),
                         ("swiglu", lambda root: save_flat(llama, LLAMA, root)),
                         ("swiglu_pipe", lambda root: save_pipe(llama, LLAMA, root, False))):
        root = os.path.join(out, name, "global_step3")
        os.makedirs(root)
        with open(os.path.join(out, name, "latest"), "w") as f:
            f.write("global_step3")
        writer(root)


if __name__ == "__main__":
    main()
