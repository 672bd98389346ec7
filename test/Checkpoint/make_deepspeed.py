#!/usr/bin/env python3
"""Trains tiny models a few Adam steps and saves them the way DeepSpeed does.

Usage: make_deepspeed.py OUTDIR
       make_deepspeed.py edit FILE CODE
           loads FILE (the stand-in classes importable), runs the Python statement
           CODE with the loaded object as `c`, and saves it back: the damaged
           checkpoints of the error tests.

DeepSpeed is not packaged by Debian, so this lays the files out by DeepSpeed's
rules (the ones its zero_to_fp32.py and ds_to_universal.py read back), each folder
with `latest` naming global_step3/:

  zero1/ (dp=2)   mp_rank_00_model_states.pt (module: the bf16 parameters;
                  param_shapes: each optimizer group's parameters) and
                  zero_pp_rank_R_mp_rank_00_optim_states.pt, one per rank. Each
                  group's fp32 masters are flattened, padded to a multiple of 2*dp
                  and cut in dp equal partitions; rank R saves its partition without
                  the padding (single_partition_of_fp32_groups), Adam's exp_avg /
                  exp_avg_sq over the padded partition (base_optimizer_state), and
                  where each parameter's part lies in it (param_slice_mappings of
                  fragment_address, stage_1_and_2.py state_dict()).
  zero3/ (dp=2)   every parameter cut on its own in dp parts of ceil(numel/dp) (the
                  last padded), each rank's parts concatenated per group
                  (fp32_flat_groups), Adam's state alongside (optimizer_state_dict),
                  zero_pp_rank_R_mp_rank_00_model_states.pt per rank; the stage an
                  IntEnum, as DeepSpeed pickles it.
  bf16/ (dp=2)    DeepSpeed's BF16_Optimizer (bf16_optimizer.py state_dict()): ZeRO-1's
                  partitions, but the fp32 one saved with its padding, no zero_stage,
                  group_paddings and per-group partition_count; files named
                  bf16_zero_pp_rank_R_mp_rank_00_optim_states.pt; Adam's step a tensor,
                  as torch's Adam keeps it.
  tp2/ (tp=2, dp=2, ZeRO-1)  a one-layer Megatron-DeepSpeed GPT: mp rank M's
                  mp_rank_0M_model_states.pt holds its tensor-parallel slices (cut as
                  megatron_like.megatron_deepspeed_tp_dim says; param_shapes gives the
                  slices' shapes; Megatron's args ride along) and
                  zero_pp_rank_R_mp_rank_0M_optim_states.pt ZeRO-1's partitions of
                  those slices.

  truth.pt (zero1, zero3, bf16) and truth_gpt.pt (tp2): the full tensors,
  {name: {"param" (bf16), "fp32", "exp_avg", "exp_avg_sq"}}, and "step".
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from megatron_like import (LossScaler, ZeroStageEnum, fragment_address,  # noqa: E402
                           megatron_deepspeed_tp_dim)

DP, STEPS = 2, 3
SHAPES = collections.OrderedDict([
    ("embed.weight", (50, 12)), ("layers.0.weight", (12, 12)), ("layers.0.bias", (12,)),
    ("layers.1.weight", (20, 12)), ("layers.1.bias", (20,)), ("norm.weight", (20,)),
    ("head.weight", (7, 20)), ("scale", (3,)),
])
# Two optimizer groups, as with weight decay on matrices only.
GROUPS = [[n for n, s in SHAPES.items() if len(s) == 2], [n for n, s in SHAPES.items() if len(s) == 1]]

# A one-layer GPT under Megatron-DeepSpeed's names, for tp=2.
TP, HIDDEN, FFN, VOCAB, SEQ = 2, 8, 16, 32, 6
LAYER = "language_model.encoder.layers.0."
GPT = collections.OrderedDict([
    ("language_model.embedding.word_embeddings.weight", (VOCAB, HIDDEN)),
    ("language_model.embedding.position_embeddings.weight", (SEQ, HIDDEN)),
    (LAYER + "input_layernorm.weight", (HIDDEN,)), (LAYER + "input_layernorm.bias", (HIDDEN,)),
    (LAYER + "self_attention.query_key_value.weight", (3 * HIDDEN, HIDDEN)),
    (LAYER + "self_attention.query_key_value.bias", (3 * HIDDEN,)),
    (LAYER + "self_attention.dense.weight", (HIDDEN, HIDDEN)),
    (LAYER + "self_attention.dense.bias", (HIDDEN,)),
    (LAYER + "post_attention_layernorm.weight", (HIDDEN,)),
    (LAYER + "post_attention_layernorm.bias", (HIDDEN,)),
    (LAYER + "mlp.dense_h_to_4h.weight", (FFN, HIDDEN)), (LAYER + "mlp.dense_h_to_4h.bias", (FFN,)),
    (LAYER + "mlp.dense_4h_to_h.weight", (HIDDEN, FFN)), (LAYER + "mlp.dense_4h_to_h.bias", (HIDDEN,)),
    ("language_model.encoder.final_layernorm.weight", (HIDDEN,)),
    ("language_model.encoder.final_layernorm.bias", (HIDDEN,)),
])
GPT_GROUPS = [[n for n, s in GPT.items() if len(s) == 2], [n for n, s in GPT.items() if len(s) == 1]]


def train():
    gen = torch.Generator().manual_seed(3)
    params = {n: torch.nn.Parameter(torch.randn(*s, generator=gen)) for n, s in SHAPES.items()}
    opt = torch.optim.Adam([{"params": [params[n] for n in g], "weight_decay": wd}
                            for g, wd in zip(GROUPS, (0.1, 0.0))], lr=1e-2)
    for _ in range(STEPS):
        x = torch.randn(8, 12, generator=gen)
        tokens = torch.randint(0, 50, (8,), generator=gen)
        h = params["embed.weight"][tokens] + x
        h = torch.tanh(h @ params["layers.0.weight"].T + params["layers.0.bias"])
        h = (h @ params["layers.1.weight"].T + params["layers.1.bias"]) * params["norm.weight"]
        loss = (h @ params["head.weight"].T).pow(2).mean() * params["scale"].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return truth_of(params, opt)


def truth_of(params, opt):
    truth = {n: {"param": p.detach().to(torch.bfloat16), "fp32": p.detach().clone(),
                 "exp_avg": opt.state[p]["exp_avg"].clone(),
                 "exp_avg_sq": opt.state[p]["exp_avg_sq"].clone()} for n, p in params.items()}
    truth["step"] = STEPS
    return truth


def train_gpt():
    gen = torch.Generator().manual_seed(5)
    params = {n: torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.5) for n, s in GPT.items()}
    opt = torch.optim.Adam([{"params": [params[n] for n in g], "weight_decay": wd}
                            for g, wd in zip(GPT_GROUPS, (0.1, 0.0))], lr=1e-2)
    p = {n[len(LAYER):] if n.startswith(LAYER) else n.split(".")[-2] + "." + n.split(".")[-1]: v
         for n, v in params.items()}
    norm = torch.nn.functional.layer_norm
    for _ in range(STEPS):
        tokens = torch.randint(0, VOCAB, (SEQ,), generator=gen)
        h = p["word_embeddings.weight"][tokens] + p["position_embeddings.weight"]
        x = norm(h, (HIDDEN,), p["input_layernorm.weight"], p["input_layernorm.bias"])
        q, k, v = (x @ p["self_attention.query_key_value.weight"].T
                   + p["self_attention.query_key_value.bias"]).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.T / math.sqrt(HIDDEN), dim=-1) @ v
        h = h + attn @ p["self_attention.dense.weight"].T + p["self_attention.dense.bias"]
        x = norm(h, (HIDDEN,), p["post_attention_layernorm.weight"], p["post_attention_layernorm.bias"])
        x = torch.nn.functional.gelu(x @ p["mlp.dense_h_to_4h.weight"].T + p["mlp.dense_h_to_4h.bias"])
        h = h + x @ p["mlp.dense_4h_to_h.weight"].T + p["mlp.dense_4h_to_h.bias"]
        h = norm(h, (HIDDEN,), p["final_layernorm.weight"], p["final_layernorm.bias"])
        loss = torch.nn.functional.cross_entropy(h @ p["word_embeddings.weight"].T, tokens.roll(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return truth_of(params, opt)


def model_states(shapes, groups, stage, module, tp=1, extra=None):
    state = {"module": module, "buffer_names": [], "optimizer": None,
             "param_shapes": [collections.OrderedDict((n, torch.Size(shapes[n])) for n in g)
                              for g in groups],
             "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None,
             "lr_scheduler": None, "data_sampler": None, "random_ltd": None,
             "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": STEPS,
             "global_samples": STEPS * 8, "dp_world_size": DP, "mp_world_size": tp,
             "ds_config": {"zero_optimization": {"stage": stage}, "train_batch_size": 8},
             "ds_version": "0.14.0"}
    state.update(extra or {})
    return state


def flat(truth, names, key):
    return torch.cat([truth[n][key].reshape(-1) for n in names])


def partitions(states, names, keep_padding, dp=DP):
    """ZeRO-1/2's (and BF16_Optimizer's) partitions of one group of one mp rank's
    parameters over `dp` ranks (a MoE group's over its expert-data-parallel ranks):
    per rank, the fp32 / exp_avg / exp_avg_sq partitions, the group's padding (on the
    last rank) and param_slice_mappings."""
    numels = [math.prod(states[n]["fp32"].shape) for n in names]
    total, align = sum(numels), 2 * dp
    padded = align * math.ceil(total / align)
    size = padded // dp
    flats = {key: torch.cat([states[n][key].reshape(-1) for n in names] + [torch.zeros(padded - total)])
             for key in ("fp32", "exp_avg", "exp_avg_sq")}
    out = []
    for r in range(dp):
        lo, hi = r * size, (r + 1) * size
        part = {key: flat[lo:hi].clone() for key, flat in flats.items()}
        padding = padded - total if r == dp - 1 else 0
        if not keep_padding:  # stage_1_and_2.py, _get_groups_without_padding
            part["fp32"] = part["fp32"][:size - padding].clone()
        mappings, offset = collections.OrderedDict(), 0
        for n, numel in zip(names, numels):
            b, e = max(offset, lo), min(offset + numel, hi)
            if b < e:
                mappings[n] = fragment_address(numel=e - b, start=b - lo)
            offset += numel
        out.append((part, padding, mappings))
    return out


def save_zero1(states, shapes, groups, root, mp=0, tp=1, bf16_optimizer=False, extra=None,
               step=STEPS):
    """One mp rank's model states and ZeRO-1 (or BF16_Optimizer) optimizer files."""
    module = collections.OrderedDict((n, states[n]["param"]) for n in shapes)
    torch.save(model_states(shapes, groups, 1, module, tp, extra),
               os.path.join(root, f"mp_rank_{mp:02d}_model_states.pt"))
    per_group = [partitions(states, names, bf16_optimizer) for names in groups]
    for r in range(DP):
        save_optim_states([group[r] for group in per_group], [DP] * len(groups), bf16_optimizer,
                          step, os.path.join(root, optim_file_name(r, mp, bf16_optimizer)))


def optim_file_name(rank, mp, bf16_optimizer):
    return f"{'bf16_' if bf16_optimizer else ''}zero_pp_rank_{rank}_mp_rank_{mp:02d}_optim_states.pt"


def save_optim_states(parts, partition_count, bf16_optimizer, step, path,
                      group_settings=({"weight_decay": 0.1}, {"weight_decay": 0.0})):
    """One rank's ZeRO-1/2 (or BF16_Optimizer) file from its groups' partitions
    (`partitions` entries); group_settings are each torch param_group's own keys."""
    base = {"state": {g: {"step": step, "exp_avg": part["exp_avg"], "exp_avg_sq": part["exp_avg_sq"]}
                      for g, (part, _, _) in enumerate(parts)},
            "param_groups": [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                              **settings, "params": [g]} for g, settings in enumerate(group_settings)]}
    fp32 = [part["fp32"] for part, _, _ in parts]
    paddings = [padding for _, padding, _ in parts]
    mappings = [m for _, _, m in parts]
    if bf16_optimizer:
        osd = {"clip_grad": 1.0, "base_optimizer_state": base,
               "single_partition_of_fp32_groups": fp32, "group_paddings": paddings,
               "partition_count": partition_count, "ds_version": "0.14.0",
               "param_slice_mappings": mappings}
    else:
        osd = {"loss_scaler": LossScaler(), "dynamic_loss_scale": True, "overflow": False,
               "clip_grad": 1.0, "base_optimizer_state": base,
               "single_partition_of_fp32_groups": fp32, "zero_stage": 1,
               "group_paddings": paddings, "partition_count": partition_count,
               "ds_version": "0.14.0", "param_slice_mappings": mappings}
    torch.save({"optimizer_state_dict": osd, "ds_config": {}, "ds_version": "0.14.0"}, path)


def zero1(truth, root):
    save_zero1(truth, SHAPES, GROUPS, root)


def bf16(truth, root):
    save_zero1(truth, SHAPES, GROUPS, root, bf16_optimizer=True, step=torch.tensor(float(STEPS)))


def tp_slice(tensor, name, mp):
    dim = megatron_deepspeed_tp_dim(name)
    return tensor if dim is None else tensor.chunk(TP, dim=dim)[mp].clone()


def tp2(truth, root):
    args = argparse.Namespace(num_layers=1, hidden_size=HIDDEN, ffn_hidden_size=FFN,
                              num_attention_heads=2, padded_vocab_size=VOCAB,
                              tensor_model_parallel_size=TP, pipeline_model_parallel_size=1,
                              swiglu=False, bf16=True)
    for mp in range(TP):
        states = {n: {key: tp_slice(truth[n][key], n, mp) for key in ("param", "fp32", "exp_avg", "exp_avg_sq")}
                  for n in GPT}
        shapes = collections.OrderedDict((n, tuple(states[n]["param"].shape)) for n in GPT)
        extra = {"args": args, "checkpoint_version": 3.0, "iteration": STEPS}
        save_zero1(states, shapes, GPT_GROUPS, root, mp=mp, tp=TP, extra=extra)


def zero3(truth, root):
    groups = {r: {"fp32": [], "exp_avg": [], "exp_avg_sq": []} for r in range(DP)}
    for names in GROUPS:
        for key in ("fp32", "exp_avg", "exp_avg_sq"):
            per_rank = {r: [] for r in range(DP)}
            for n in names:
                numel = math.prod(SHAPES[n])
                part = math.ceil(numel / DP)
                padded = torch.cat([truth[n][key].reshape(-1), torch.zeros(part * DP - numel)])
                for r in range(DP):
                    per_rank[r].append(padded[r * part:(r + 1) * part])
            for r in range(DP):
                groups[r][key].append(torch.cat(per_rank[r]))
    for r in range(DP):
        # ZeRO-3 keeps no whole 16-bit parameter: the module holds empty placeholders.
        module = collections.OrderedDict((n, torch.empty(0, dtype=torch.bfloat16)) for n in SHAPES)
        torch.save(model_states(SHAPES, GROUPS, 3, module),
                   os.path.join(root, f"zero_pp_rank_{r}_mp_rank_00_model_states.pt"))
        base = {"state": {g: {"step": STEPS, "exp_avg": groups[r]["exp_avg"][g],
                              "exp_avg_sq": groups[r]["exp_avg_sq"][g]} for g in range(len(GROUPS))},
                "param_groups": [{"lr": 1e-2, "params": [g]} for g in range(len(GROUPS))]}
        osd = {"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(),
               "dynamic_loss_scale": True, "overflow": False, "partition_count": DP,
               "optimizer_state_dict": base, "fp32_flat_groups": groups[r]["fp32"]}
        torch.save({"optimizer_state_dict": osd, "ds_config": {}, "ds_version": "0.14.0"},
                   os.path.join(root, f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))


def edit(path, code):
    c = torch.load(path)
    exec(code, {"c": c, "torch": torch, "collections": collections})
    torch.save(c, path)


def main():
    if sys.argv[1] == "edit":
        return edit(*sys.argv[2:])
    out = sys.argv[1]
    truth, gpt = train(), train_gpt()
    os.makedirs(out, exist_ok=True)
    torch.save(truth, os.path.join(out, "truth.pt"))
    torch.save(gpt, os.path.join(out, "truth_gpt.pt"))
    for name, writer, model in (("zero1", zero1, truth), ("zero3", zero3, truth),
                                ("bf16", bf16, truth), ("tp2", tp2, gpt)):
        root = os.path.join(out, name, "global_step3")
        os.makedirs(root)
        with open(os.path.join(out, name, "latest"), "w") as f:
            f.write("global_step3")
        writer(model, root)


if __name__ == "__main__":
    main()
