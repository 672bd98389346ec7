#!/usr/bin/env python3
"""Judges what loom writes from Megatron checkpoints in formats torch reads itself, against
the truth the fixture recorded, without loom.

Usage:
  check_megatron_dist.py torch-dist ROOT TRUTH.pt TP PP HEADS GROUPS [EP] [--distopt]
      ROOT is a Megatron-core torch_dist checkpoint (`--to megatron:...,format=torch_dist`).
      latest_checkpointed_iteration.txt names the iteration folder; its metadata.json
      says torch_dist; common.pt (torch.load) holds the args with the written degrees,
      shape and padded vocabulary, checkpoint_version 3.0, the iteration, the optimizer's
      two groups without params and the step as common_step. The DCP folder holds
      exactly mcore's sharded keys of the model and of its fp32 masters and Adam moments
      (optimizer.state.{fp32_param,exp_avg,exp_avg_sq}.<key>); torch 1.13's own DCP
      reader loads them in 2 gloo processes into ShardedTensors cut as mcore's tp=2
      ranks ask for them (per layer of a stacked key, column- and row-parallel halves,
      SwiGLU's gate and up halves at rank and 2 + rank), and every global tensor must
      equal the one built from the truth by mcore's rules, bit for bit: layers stacked,
      QKV fused per query group, fc1 as [gate; up], vocabulary rows padded with zeros.
      A mixture of experts (make_megatron.py --moe's truth, no optimizer): the args
      also say num_experts, expert_model_parallel_size EP and
      expert_tensor_parallel_size TP, common.pt has no optimizer entry
      (no_save_optim), and torch loads the keys in 4 processes as mcore's tp=2 ep=2
      ranks ask for them, the routed experts at their (layer, expert) rows
      (make_megatron_dist.py's rules, mcore_globals and mcore_boxes). With the
      trained MoE truth (make_megatron.py --moe --optim's) the optimizer is a
      ChainedOptimizer's: common.pt's "optimizer" is {0: the dense optimizer's two
      groups, 1: the experts' one group}, each {"optimizer": {"param_groups" without
      params, "state": {"common_step": step}}} with the truth run's AdamW settings
      (ChainedOptimizer.sharded_state_dict, optimizer.py), and the states of every
      parameter, experts' included, are keyed optimizer.state.<state>.<key> without
      a chained_<i>. prefix (content_metadata's chained_optim_avoid_prefix). A truth
      with dense layers between its MoE layers (make_megatron.py --moe-layer-freq N)
      must be keyed layer by layer (decoder.layers.<N>.*, no stacked axis) and its args
      say moe_layer_freq N; one with expert biases has the experts' biases at their
      rows of mlp.experts.experts.linear_fc{1,2}.bias and the experts' optimizer two
      groups (weights, then biases).
      With --distopt the optimizer is Megatron's DistributedOptimizer in its
      fully_reshardable form (distrib_optimizer.py, sharded_param_state_fully_reshardable):
      the masters are keyed optimizer.state.param.<key>; the args say
      use_distributed_optimizer and dist_ckpt_optim_fully_reshardable; content_metadata,
      where load_checkpoint (training/checkpointing.py) takes the sharding type from,
      names fully_reshardable (one of the forms it loads at another tp and pp); and each
      optimizer part of common.pt is what DistributedOptimizer.sharded_state_dict leaves
      there: {"optimizer": {"param_groups": groups without params, each with the step
      its load_state_dict requires to be one}, "param_state_sharding_type":
      "fully_reshardable"}.
  check_megatron_dist.py same-dcp ROOT_A ROOT_B
      two torch_dist checkpoints hold the same tensor keys, shapes, dtypes and bits
      (torch's DCP reader loading each tensor whole); bytes entries are not compared.
  check_megatron_dist.py universal FILE.h5 TRUTH.pt
      h5py reads loom's universal file of a model without optimizer states
      (make_megatron.py's MoE truth, {name: tensor}): exactly the truth's parameters,
      each with the truth's bytes.
  check_megatron_dist.py dcp DIR TRUTH.pt
      DIR is `--to dcp` of make_megatron.py's trained mcore model: torch's DCP reader loads
      model.<name> (the fp32 master), optim.state.<name>.{exp_avg,exp_avg_sq,step} and the
      optim.param_groups entries over 2 gloo ranks (split where loom did not split); the
      tensors must equal the truth's, the groups be Megatron's (weight-decayed matrices,
      then vectors) with the run's AdamW settings, and torch's AdamW loaded from it must
      take one more step to the truth's values, bit for bit.

TRUTH.pt is make_megatron.py's ({name: {param, fp32, exp_avg, exp_avg_sq}, "step"}, or
{name: tensor} for its MoE models) or make_megatron_dist.py's ({"model": ..., "optim":
{"state": ...}}).
"""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dcp_shim  # noqa: E402,F401  (before torch: see dcp_shim.py)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed._shard.sharded_tensor import (  # noqa: E402
    init_from_local_shards, Shard, ShardMetadata)
import torch.distributed._shard.checkpoint as dcp  # noqa: E402

from check_dcp_optim import load_worker, same_bits  # noqa: E402
from make_megatron_dist import Dims, mcore_boxes, mcore_globals  # noqa: E402

WORLD = 2
# DCP state name -> the truth's, for the mixed-precision optimizer; the distributed
# optimizer's fully_reshardable form names the master "param" (get_parameter_state_dp_zero).
STATES = {"fp32_param": "fp32", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}
DISTOPT_STATES = {"param": "fp32", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


def fail(message):
    sys.exit(f"check_megatron_dist: {message}")


def load_truth(path):
    """{name: {"param", "fp32", "exp_avg", "exp_avg_sq"}} and the step (None for a
    model without optimizer states)."""
    t = torch.load(path)
    if all(isinstance(v, torch.Tensor) for v in t.values()):
        return {n: {"param": v} for n, v in t.items()}, None
    if "model" in t and "optim" in t:
        states = t["optim"]["state"]
        step = int(next(iter(states.values()))["step"].item())
        return {n: dict(param=p, **{k: v for k, v in states[n].items() if k != "step"})
                for n, p in t["model"].items()}, step
    step = t.pop("step")
    return t, step


def mcore_load_worker(rank, directory, requests, world, port, outdir):
    """Loads the keys as mcore's rank `rank` of `world` (tp=2, and ep = world / 2 for
    the experts) would: replicated ones whole, the others as ShardedTensors of its
    boxes (make_megatron_dist.mcore_boxes)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    state = {}
    for key, (shape, dtype, cut) in requests.items():
        if cut is None:
            state[key] = torch.zeros(shape, dtype=dtype)
            continue
        boxes = mcore_boxes(key, shape, cut, world)
        metas = [ShardMetadata(shard_offsets=o, shard_sizes=s, placement=f"rank:{r}/cpu")
                 for r, o, s in boxes]
        mine = [Shard(torch.zeros(s, dtype=dtype), m)
                for m, (r, o, s) in zip(metas, boxes) if r == rank]
        state[key] = init_from_local_shards(mine, list(shape))
    dcp.load_state_dict(state, dcp.FileSystemReader(directory))
    out = {}
    for key, value in state.items():
        if hasattr(value, "local_shards"):
            out[key] = [(s.metadata.shard_offsets, s.tensor) for s in value.local_shards()]
        elif rank == 0:
            out[key] = [([0] * value.dim(), value)]
    torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def iteration_folder(root):
    """The iteration folder latest_checkpointed_iteration.txt names, checked to be
    torch_dist by its metadata.json, and the iteration."""
    with open(os.path.join(root, "latest_checkpointed_iteration.txt")) as f:
        iteration = int(f.read())
    folder = os.path.join(root, f"iter_{iteration:07d}")
    with open(os.path.join(folder, "metadata.json")) as f:
        config = json.load(f)
    if config.get("sharded_backend") != "torch_dist":
        fail(f"metadata.json is {config}")
    return folder, iteration


def check_common(folder, iteration, want, step, expert_groups=0, distopt=False):
    """common.pt: the args `want` says, checkpoint_version 3.0, the iteration, and the
    optimizer's two groups without params and the step as common_step (none when
    `step` is None: --no-save-optim); a ChainedOptimizer's parts when
    `expert_groups` (the experts' optimizer's groups) is not 0; the distributed
    optimizer's fully_reshardable parts when `distopt`."""
    common = torch.load(os.path.join(folder, "common.pt"))
    metadata = common.get("content_metadata", {})
    if distopt:
        # load_checkpoint takes the sharding type from the checkpoint's content_metadata
        # and refuses a tp/pp change unless it is a model-space one.
        if metadata != {"distrib_optim_sharding_type": "fully_reshardable",
                        "distrib_optim_fully_reshardable_mem_efficient": False,
                        "singleton_local_shards": False,
                        "chained_optim_avoid_prefix": True}:
            fail(f"common.pt: content_metadata is {metadata}, not a fully_reshardable run's")
    elif "distrib_optim_sharding_type" in metadata:
        fail(f"common.pt: content_metadata is {metadata}, a distributed optimizer's")
    args = common["args"]
    for name, value in want.items():
        if getattr(args, name, None) != value:
            fail(f"common.pt: args.{name} is {getattr(args, name, None)!r}, not {value!r}")
    if repr(common.get("checkpoint_version")) != "3.0" or common.get("iteration") != iteration:
        fail(f"common.pt: checkpoint_version {common.get('checkpoint_version')}, iteration "
             f"{common.get('iteration')}")
    if step is None:
        if "optimizer" in common:
            fail("common.pt holds an optimizer entry, and the truth has no optimizer")
        return
    if not expert_groups:
        check_optimizer_part(common["optimizer"], "optimizer", step, 2, None, distopt)
        return
    # A ChainedOptimizer's two parts, with the settings the truth was trained with.
    import make_megatron
    if sorted(common["optimizer"]) != [0, 1]:
        fail(f"common.pt: optimizer has keys {sorted(common['optimizer'])}, a "
             f"ChainedOptimizer's are 0 and 1")
    reference = make_megatron.adamw([[torch.nn.Parameter(torch.zeros(1))],
                                     [torch.nn.Parameter(torch.zeros(1))]])
    settings = [{k: v for k, v in g.items() if k != "params"}
                for g in reference.state_dict()["param_groups"]]
    check_optimizer_part(common["optimizer"][0], "optimizer[0]", step, 2, settings, distopt)
    check_optimizer_part(common["optimizer"][1], "optimizer[1]", step, expert_groups,
                         settings[:expert_groups], distopt)
    if metadata.get("chained_optim_avoid_prefix") is not True:
        fail(f"common.pt: content_metadata is {metadata}, without chained_optim_avoid_prefix")


def check_optimizer_part(part, what, step, groups, settings, distopt=False):
    """One optimizer's part of common.pt: its groups without params (weight-decayed,
    then not), `settings` when given, and the step as common_step; or, `distopt`, the
    step in every group (DistributedOptimizer.load_state_dict asserts they agree) and
    the fully_reshardable sharding type its load_state_dict dispatches on."""
    optimizer = part["optimizer"]
    if distopt:
        if set(part) != {"optimizer", "param_state_sharding_type"} or \
                part["param_state_sharding_type"] != "fully_reshardable" or \
                set(optimizer) != {"param_groups"}:
            fail(f"common.pt: {what} is {part}, not DistributedOptimizer.sharded_state_dict's "
                 f"fully_reshardable common part")
        steps = {g.get("step") for g in optimizer["param_groups"]}
        if len(steps) != 1 or int(steps.pop()) != step:
            fail(f"common.pt: {what}'s groups have steps {steps}, not {step}")
    else:
        common_step = optimizer["state"].get("common_step")
        if set(optimizer["state"]) != {"common_step"} or int(common_step) != step:
            fail(f"common.pt: {what}.optimizer.state is {optimizer['state']}")
    param_groups = optimizer["param_groups"]
    if len(param_groups) != groups or any("params" in g for g in param_groups) or \
            param_groups[0]["weight_decay"] <= 0 or \
            (groups > 1 and param_groups[1]["weight_decay"] != 0.0):
        fail(f"common.pt: {what} param_groups are {param_groups}")
    for g, want in enumerate(settings or []):
        for key, value in want.items():
            if param_groups[g].get(key) != value:
                fail(f"common.pt: {what} group {g} has {key} = {param_groups[g].get(key)!r}, "
                     f"the run's {value!r}")


def load_globals(folder, requests, world):
    """The global tensors `requests` ({key: (shape, dtype, cut)}) as torch's DCP reader
    loads them into the ShardedTensors mcore's `world` ranks ask for, put together."""
    parts = dcp_shim.run_ranks(mcore_load_worker, (folder, requests, world), world)
    out = {}
    for key, (shape, dtype, cut) in requests.items():
        got = torch.zeros(shape, dtype=dtype)
        for part in parts:
            for offsets, chunk in part.get(key, []):
                got[tuple(slice(o, o + s) for o, s in zip(offsets, chunk.shape))] = chunk
        out[key] = got
    return out


def layer_freq(moe):
    """args.moe_layer_freq as Megatron reads it for the MoE layers `moe` (one flag per
    layer): the int N when layers 0, N, 2N, ... route, else the list of 1 and 0."""
    for n in range(1, len(moe) + 1):
        if all(m == (i % n == 0) for i, m in enumerate(moe)):
            return n
    return [int(m) for m in moe]


def check_torch_dist(root, truth_path, tp, pp, heads, groups, ep=1, distopt=False):
    truth, step = load_truth(truth_path)
    d = Dims(truth, lambda n: truth[n]["param"], heads, groups, tp)
    folder, iteration = iteration_folder(root)
    want = dict(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                num_layers=d.layers, num_attention_heads=heads, num_query_groups=groups,
                kv_channels=d.head_dim, vocab_size=d.vocab, padded_vocab_size=d.padded,
                swiglu=True, ckpt_format="torch_dist", no_save_optim=step is None,
                no_save_rng=True)
    if step is not None:
        want["use_distributed_optimizer"] = distopt
    if distopt:
        want["dist_ckpt_optim_fully_reshardable"] = True
    expert_groups = 0
    if d.experts:
        want.update(num_experts=d.experts, expert_model_parallel_size=ep,
                    expert_tensor_parallel_size=tp, moe_layer_freq=layer_freq(d.moe))
        expert_groups = 1 + any(n.endswith(".w2.bias") for n in truth)
    check_common(folder, iteration, want, step, expert_groups, distopt)

    # Expected global tensors: the model's (the truth's dtype) and each state's (fp32).
    expected = dict(mcore_globals(lambda n: truth[n]["param"], d))
    if step is not None:
        for dcp_name, name in (DISTOPT_STATES if distopt else STATES).items():
            for key, (t, cut) in mcore_globals(lambda n: truth[n][name], d).items():
                expected[f"optimizer.state.{dcp_name}.{key}"] = (t, cut)
    held = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    if set(held) != set(expected):
        fail(f"the DCP keys differ from mcore's: {sorted(set(held) ^ set(expected))}")
    world = WORLD * (2 if d.experts else 1)
    requests = {k: (tuple(t.shape), t.dtype, cut) for k, (t, cut) in expected.items()}
    loaded = load_globals(folder, requests, world)
    for key, (t, cut) in expected.items():
        if not same_bits(loaded[key], t):
            fail(f"{key} differs from the truth (mcore's layout of it)")
    ranks = "tp=2 ep=2" if d.experts else "tp=2"
    print(f"torch loaded {len(expected)} tensors of {folder} as mcore's {ranks} ranks ask "
          f"for them: all equal the truth; iteration {iteration}, step {step}, tp={tp} "
          f"pp={pp}" + (f" ep={ep}, {d.experts} experts" if d.experts else "") +
          f", vocabulary {d.vocab} padded to {d.padded}" +
          ("; layers keyed one by one" if d.per_layer else "") +
          ("; the distributed optimizer's fully_reshardable states" if distopt else ""))


def check_same_dcp(root_a, root_b):
    """Two torch_dist checkpoints hold the same tensor keys, each of the same dtype,
    shape and bits (torch's DCP reader loading them whole)."""
    (a, _), (b, _) = iteration_folder(root_a), iteration_folder(root_b)
    metas = [dcp.FileSystemReader(f).read_metadata().state_dict_metadata for f in (a, b)]
    keys = [{k for k, v in m.items() if hasattr(v, "size")} for m in metas]
    if keys[0] != keys[1]:
        fail(f"the tensor keys differ: {sorted(keys[0] ^ keys[1])}")
    for key in sorted(keys[0]):
        ma, mb = metas[0][key], metas[1][key]
        if (tuple(ma.size), ma.properties.dtype) != (tuple(mb.size), mb.properties.dtype):
            fail(f"{key}: {tuple(ma.size)} {ma.properties.dtype} vs {tuple(mb.size)} "
                 f"{mb.properties.dtype}")
    requests = {k: (tuple(metas[0][k].size), metas[0][k].properties.dtype, None) for k in keys[0]}
    got_a, got_b = load_globals(a, requests, 1), load_globals(b, requests, 1)
    for key in sorted(keys[0]):
        if not same_bits(got_a[key], got_b[key]):
            fail(f"{key} differs between {a} and {b}")
    print(f"same: {len(keys[0])} tensors of {a} and {b}, keys, shapes, dtypes and bits")


def check_universal(path, truth_path):
    """loom's universal file of a model without optimizer states: exactly the truth's
    parameters, each with the truth's bytes (h5py reading it)."""
    import h5py
    import numpy as np
    from make_fixtures import raw_bytes
    truth = torch.load(truth_path)
    with h5py.File(path, "r") as f:
        names = set(f["params"].keys())
        if names != set(truth):
            fail(f"the parameters differ from the truth's: {sorted(names ^ set(truth))[:6]}")
        if "optimizer" in f and len(f["optimizer"]):
            fail(f"{path} holds optimizer states, and the truth has none")
        for name, t in truth.items():
            if np.asarray(f["params"][name][()]).tobytes() != raw_bytes(t):
                fail(f"params/{name} differs from the truth")
    print(f"{path}: {len(truth)} parameters equal the truth")


def check_dcp(directory, truth_path):
    import make_megatron
    truth, step = load_truth(truth_path)
    names = sorted(truth)
    flat = {}
    for n in names:
        flat[f"model.{n}"] = truth[n]["fp32"]
        for moment in ("exp_avg", "exp_avg_sq"):
            flat[f"optim.state.{n}.{moment}"] = truth[n][moment]
        flat[f"optim.state.{n}.step"] = torch.tensor(float(step))
    held = dcp.FileSystemReader(directory).read_metadata().state_dict_metadata
    group_keys = [k for k in held if k.startswith("optim.param_groups.")]
    if set(held) - set(group_keys) != set(flat):
        fail(f"the tensor keys differ: {sorted((set(held) - set(group_keys)) ^ set(flat))}")
    parts = dcp_shim.run_ranks(load_worker, (directory, dict(flat, **dict.fromkeys(group_keys))),
                               WORLD)
    loaded = {}
    for key, value in flat.items():
        got = torch.cat([parts[0][key], parts[1][key]]) if value.dim() else parts[0][key]
        if not same_bits(got, value):
            fail(f"{key}: differs from the truth")
        loaded[key] = got

    # The groups: Megatron's, with the settings of the run's AdamW.
    groups = {}
    for key in group_keys:
        index, setting = key[len("optim.param_groups."):].split(".", 1)
        groups.setdefault(int(index), {})[setting] = parts[0][key]
    groups = [groups[i] for i in sorted(groups)]
    full = {n: truth[n]["fp32"] for n in names}
    want_params = make_megatron.megatron_groups(full)
    reference = make_megatron.adamw([[torch.nn.Parameter(full[n].clone()) for n in g]
                                     for g in want_params])
    for g, (group, settings) in enumerate(zip(groups, reference.state_dict()["param_groups"])):
        if sorted(group["params"]) != sorted(want_params[g]):
            fail(f"optim.param_groups.{g}.params is not Megatron's group {g}")
        for key, value in settings.items():
            if key != "params" and group.get(key) != value:
                fail(f"optim.param_groups.{g}.{key} is {group.get(key)!r}, the run's {value!r}")
    if len(groups) != 2:
        fail(f"{len(groups)} groups, Megatron has 2")

    # Resume: AdamW from the loaded state and from the truth take the same next step.
    def build(get):
        params = {n: torch.nn.Parameter(get(f"model.{n}").clone()) for n in names}
        opt = torch.optim.AdamW([dict(params=[params[n] for n in g["params"]],
                                      **{k: v for k, v in g.items() if k != "params"})
                                 for g in groups])
        for n in names:
            opt.state[params[n]] = {k: get(f"optim.state.{n}.{k}").clone()
                                    for k in ("step", "exp_avg", "exp_avg_sq")}
        return params, opt
    resumed, original = build(loaded.__getitem__), build(flat.__getitem__)
    gen = torch.Generator().manual_seed(5)
    grads = {n: torch.randn(truth[n]["fp32"].shape, generator=gen) for n in names}
    for params, opt in (resumed, original):
        for n in names:
            params[n].grad = grads[n].clone()
        opt.step()
    for n in names:
        if not same_bits(resumed[0][n].detach(), original[0][n].detach()):
            fail(f"{n} differs from the truth's after one more AdamW step")
    print(f"torch loaded {len(flat)} tensors and {len(group_keys)} group entries of {directory} "
          f"over {WORLD} ranks: all equal the truth; AdamW resumes to step {step + 1}")


def main():
    mode = sys.argv[1]
    if mode == "torch-dist":
        distopt = "--distopt" in sys.argv
        numbers = [int(a) for a in sys.argv[4:] if a != "--distopt"]
        check_torch_dist(sys.argv[2], sys.argv[3], *numbers, distopt=distopt)
    elif mode == "same-dcp":
        check_same_dcp(sys.argv[2], sys.argv[3])
    elif mode == "universal":
        check_universal(sys.argv[2], sys.argv[3])
    elif mode == "dcp":
        check_dcp(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
