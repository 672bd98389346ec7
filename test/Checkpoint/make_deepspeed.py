#!/usr/bin/env python3
"""Trains a tiny model a few Adam steps and saves it the way DeepSpeed's ZeRO does.

Usage: make_deepspeed.py OUTDIR

DeepSpeed is not packaged by Debian, so this lays the files out by DeepSpeed's
rules (the ones its zero_to_fp32.py and ds_to_universal.py read back):

  zero1/ and zero3/, each with dp=2:
    latest                          "global_step3"
    global_step3/mp_rank_00_model_states.pt          (ZeRO-1: module holds the bf16
                                                      parameters; param_shapes lists
                                                      each optimizer group's params)
    global_step3/zero_pp_rank_R_mp_rank_00_model_states.pt   (ZeRO-3, one per rank)
    global_step3/zero_pp_rank_R_mp_rank_00_optim_states.pt   (one per rank)

  ZeRO-1: each group's fp32 masters are flattened in order, padded to a multiple of
  2*dp and cut in dp equal partitions; rank R saves its partition without the padding
  (single_partition_of_fp32_groups) and Adam's exp_avg / exp_avg_sq over the padded
  partition (base_optimizer_state). ZeRO-3: every parameter is cut on its own in dp
  parts of ceil(numel/dp) (the last padded), each rank's parts concatenated per group
  (fp32_flat_groups), Adam's state alongside (optimizer_state_dict); the stage is an
  IntEnum, as DeepSpeed pickles it.

  truth.pt: the full tensors: {name: {"param" (bf16), "fp32", "exp_avg", "exp_avg_sq"}}
  and "step".
"""
import collections
import math
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from megatron_like import LossScaler, ZeroStageEnum  # noqa: E402

DP, STEPS = 2, 3
SHAPES = collections.OrderedDict([
    ("embed.weight", (50, 12)), ("layers.0.weight", (12, 12)), ("layers.0.bias", (12,)),
    ("layers.1.weight", (20, 12)), ("layers.1.bias", (20,)), ("norm.weight", (20,)),
    ("head.weight", (7, 20)), ("scale", (3,)),
])
# Two optimizer groups, as with weight decay on matrices only.
GROUPS = [[n for n, s in SHAPES.items() if len(s) == 2], [n for n, s in SHAPES.items() if len(s) == 1]]


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
    truth = {n: {"param": p.detach().to(torch.bfloat16), "fp32": p.detach().clone(),
                 "exp_avg": opt.state[p]["exp_avg"].clone(),
                 "exp_avg_sq": opt.state[p]["exp_avg_sq"].clone()} for n, p in params.items()}
    truth["step"] = STEPS
    return truth


def model_states(truth, stage, module):
    return {"module": module, "buffer_names": [], "optimizer": None,
            "param_shapes": [collections.OrderedDict((n, torch.Size(SHAPES[n])) for n in g)
                             for g in GROUPS],
            "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None,
            "lr_scheduler": None, "data_sampler": None, "random_ltd": None,
            "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": STEPS,
            "global_samples": STEPS * 8, "dp_world_size": DP, "mp_world_size": 1,
            "ds_config": {"zero_optimization": {"stage": stage}, "train_batch_size": 8},
            "ds_version": "0.14.0"}


def flat(truth, names, key):
    return torch.cat([truth[n][key].reshape(-1) for n in names])


def zero1(truth, root):
    align = 2 * DP
    parts = {r: {"fp32": [], "exp_avg": [], "exp_avg_sq": [], "pad": []} for r in range(DP)}
    for names in GROUPS:
        total = sum(math.prod(SHAPES[n]) for n in names)
        padded = align * math.ceil(total / align)
        size = padded // DP
        for key in ("fp32", "exp_avg", "exp_avg_sq"):
            full = torch.cat([flat(truth, names, key), torch.zeros(padded - total)])
            for r in range(DP):
                parts[r][key].append(full[r * size:(r + 1) * size].clone())
        for r in range(DP):
            pad = max(0, (r + 1) * size - total)
            parts[r]["pad"].append(pad)
            parts[r]["fp32"][-1] = parts[r]["fp32"][-1][:size - pad].clone()
    module = collections.OrderedDict((n, truth[n]["param"]) for n in SHAPES)
    torch.save(model_states(truth, 1, module), os.path.join(root, "mp_rank_00_model_states.pt"))
    for r in range(DP):
        base = {"state": {g: {"step": STEPS, "exp_avg": parts[r]["exp_avg"][g],
                              "exp_avg_sq": parts[r]["exp_avg_sq"][g]} for g in range(len(GROUPS))},
                "param_groups": [{"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                                  "weight_decay": wd, "amsgrad": False, "params": [g]}
                                 for g, wd in enumerate((0.1, 0.0))]}
        osd = {"loss_scaler": LossScaler(), "dynamic_loss_scale": True, "overflow": False,
               "clip_grad": 1.0, "base_optimizer_state": base,
               "single_partition_of_fp32_groups": parts[r]["fp32"], "zero_stage": 1,
               "group_paddings": parts[r]["pad"], "partition_count": [DP, DP],
               "ds_version": "0.14.0", "param_slice_mappings": []}
        torch.save({"optimizer_state_dict": osd, "ds_config": {}, "ds_version": "0.14.0"},
                   os.path.join(root, f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))


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
        torch.save(model_states(truth, 3, module),
                   os.path.join(root, f"zero_pp_rank_{r}_mp_rank_00_model_states.pt"))
        base = {"state": {g: {"step": STEPS, "exp_avg": groups[r]["exp_avg"][g],
                              "exp_avg_sq": groups[r]["exp_avg_sq"][g]} for g in range(len(GROUPS))},
                "param_groups": [{"lr": 1e-2, "params": [g]} for g in range(len(GROUPS))]}
        osd = {"zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(),
               "dynamic_loss_scale": True, "overflow": False, "partition_count": DP,
               "optimizer_state_dict": base, "fp32_flat_groups": groups[r]["fp32"]}
        torch.save({"optimizer_state_dict": osd, "ds_config": {}, "ds_version": "0.14.0"},
                   os.path.join(root, f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))


def main():
    out = sys.argv[1]
    truth = train()
    os.makedirs(out, exist_ok=True)
    torch.save(truth, os.path.join(out, "truth.pt"))
    for name, writer in (("zero1", zero1), ("zero3", zero3)):
        root = os.path.join(out, name, "global_step3")
        os.makedirs(root)
        with open(os.path.join(out, name, "latest"), "w") as f:
            f.write("global_step3")
        writer(truth, root)


if __name__ == "__main__":
    main()
