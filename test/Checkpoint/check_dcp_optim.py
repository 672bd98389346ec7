#!/usr/bin/env python3
"""Judges checkpoints loom made from make_dcp.py's training run (dcp_optim/), against
the truth that run recorded (dcp_optim.pt), without loom.

Usage:
  check_dcp_optim.py dcp DIR TRUTH.pt
      torch 1.13's DCP reader loads DIR in 2 gloo processes into the flat state dict
      torch 2's get_state_dict + flatten_state_dict give for the model and its Adam
      (every key the truth has; parameters and moments as ShardedTensors split in
      halves, a split loom did not write); the tensors must equal the truth's bit for
      bit and the settings be the same values. Then the model and Adam are loaded
      from it and take one more training step beside the truth: the parameters must
      stay equal bit for bit.
  check_dcp_optim.py universal FILE.h5 TRUTH.pt
      h5py reads loom's universal file: every parameter, exp_avg and exp_avg_sq (and
      fp32 master, when the truth has one) equal to the truth's bit for bit, and the
      step. (make_megatron_dist.py's truth has this form too.)
  check_dcp_optim.py same A.h5 B.h5
      two universal files hold the same datasets, bytes and attributes.
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dcp_shim  # noqa: E402,F401  (before torch: see dcp_shim.py)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed._shard.sharded_tensor import init_from_local_shards, Shard, ShardMetadata  # noqa: E402
import torch.distributed._shard.checkpoint as dcp  # noqa: E402

from make_dcp import WORLD, STEPS, flatten, tiny_and_adam, train_step  # noqa: E402


def fail(message):
    sys.exit(f"check_dcp_optim: {message}")


def halves(t, rank):
    """t split in rows over the ranks in halves (the first gets the odd row)."""
    half = (t.shape[0] + 1) // 2
    bounds = [(0, half), (half, t.shape[0])]
    metas = [ShardMetadata(shard_offsets=[b] + [0] * (t.dim() - 1),
                           shard_sizes=[e - b] + list(t.shape[1:]), placement=f"rank:{r}/cpu")
             for r, (b, e) in enumerate(bounds)]
    b, e = bounds[rank]
    return init_from_local_shards([Shard(torch.zeros_like(t[b:e]), metas[rank])], list(t.shape))


def load_worker(rank, directory, truth_flat, port, outdir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    state = {}
    for key, value in truth_flat.items():
        if isinstance(value, torch.Tensor):
            state[key] = halves(value, rank) if value.dim() > 0 else torch.zeros_like(value)
        else:
            state[key] = None  # a bytes entry: torch.load'ed into place
    dcp.load_state_dict(state, dcp.FileSystemReader(directory))
    out = {k: v.local_shards()[0].tensor if hasattr(v, "local_shards") else v
           for k, v in state.items()}
    torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8),
        b.contiguous().view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8))


def unflatten(flat, truth):
    """The nested {"model", "optim"} dicts back from flat keys, shaped as `truth`."""
    def walk(node, path):
        if isinstance(node, dict):
            return {k: walk(v, path + (str(k),)) for k, v in node.items()}
        if isinstance(node, list) and not all(not isinstance(x, (dict, list)) for x in node):
            return [walk(v, path + (str(i),)) for i, v in enumerate(node)]
        return flat[".".join(path)]
    return walk(truth, ())


def check_dcp(directory, truth_path):
    truth = torch.load(truth_path)
    flat = {}
    flatten(truth, (), flat)
    parts = dcp_shim.run_ranks(load_worker, (directory, flat), WORLD)
    loaded = {}
    for key, value in flat.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            got = torch.cat([parts[0][key], parts[1][key]])
        else:
            got = parts[0][key]
            if not isinstance(value, torch.Tensor) and parts[1][key] != got:
                fail(f"{key}: the ranks read {got!r} and {parts[1][key]!r}")
        if isinstance(value, torch.Tensor):
            if not isinstance(got, torch.Tensor) or not same_bits(got, value):
                fail(f"{key}: {got!r} where the run saved {value!r}")
        elif got != value or type(got) is not type(value):
            fail(f"{key}: {got!r} where the run saved {value!r}")
        loaded[key] = got
    nested = unflatten(loaded, truth)

    # Resume: the loaded model and Adam step beside the truth's.
    def build(state):
        model, adam, order = tiny_and_adam()
        model.load_state_dict(state["model"])
        index = {name: i for i, name in enumerate(order)}
        adam.load_state_dict({
            "state": {index[n]: s for n, s in state["optim"]["state"].items()},
            "param_groups": [dict(g, params=[index[n] for n in g["params"]])
                             for g in state["optim"]["param_groups"]]})
        return model, adam
    resumed, reference = build(nested), build(truth)
    for model, adam in (resumed, reference):
        train_step(model, adam, STEPS, WORLD)
    for (name, a), b in zip(resumed[0].state_dict().items(), reference[0].state_dict().values()):
        if not same_bits(a, b):
            fail(f"{name} differs from the truth's after one more Adam step")
    print(f"torch loaded {len(flat)} entries from {directory} over {WORLD} ranks; "
          f"model and Adam resume to the truth's step {STEPS + 1}")


def check_universal(path, truth_path):
    import h5py
    import numpy as np
    from make_fixtures import raw_bytes
    truth = torch.load(truth_path)
    with h5py.File(path, "r") as f:
        count = 0
        for name, t in truth["model"].items():
            got = f["params"][name][()]
            if np.asarray(got).tobytes() != raw_bytes(t):  # bf16 is stored as uint16
                fail(f"params/{name} differs from the truth")
            count += 1
            state = truth["optim"]["state"][name]
            group = f["optimizer"][name]
            for moment in [k for k in state if k != "step"]:  # with "fp32" when kept
                got = group[moment][()]
                if np.asarray(got).tobytes() != raw_bytes(state[moment]):
                    fail(f"optimizer/{name}/{moment} differs from the truth")
                count += 1
            if group.attrs["step"] != int(state["step"].item()):
                fail(f"optimizer/{name} has step {group.attrs['step']}")
    print(f"{path}: {count} datasets equal the run's, step {STEPS}")


def check_same(a, b):
    import h5py

    def items(f):
        out = {"/": dict(f.attrs)}
        f.visititems(lambda name, obj: out.__setitem__(name, (
            obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None, dict(obj.attrs))))
        return out
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = items(fa), items(fb)
    if ia.keys() != ib.keys():
        fail(f"{a} and {b} hold different objects: {sorted(ia.keys() ^ ib.keys())}")
    for key in ia:
        if repr(ia[key]) != repr(ib[key]):
            fail(f"{key} differs between {a} and {b}")
    print(f"{a} and {b}: {len(ia)} objects equal")


def main():
    mode = sys.argv[1]
    if mode == "dcp":
        check_dcp(sys.argv[2], sys.argv[3])
    elif mode == "universal":
        check_universal(sys.argv[2], sys.argv[3])
    elif mode == "same":
        check_same(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
