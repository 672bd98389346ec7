#!/usr/bin/env python3
"""Writes a torch DCP checkpoint with torch 1.13's own writer and 2 gloo processes.

Usage: make_dcp.py OUTDIR

  dcp/       .metadata + __0_0.distcp, __1_0.distcp from
             torch.distributed._shard.checkpoint.save_state_dict: a ShardedTensor
             row-split over the 2 ranks (chunks with offsets), a replicated plain tensor
             (written once, by the coordinator) and a bytes entry.
  dcp.json   the full tensors (sorted by name, sha256 of row-major bytes).
  dcp_optim/ a training run's checkpoint: a tiny model trained 3 Adam steps by 2 gloo
             processes (gradients all-reduced), saved with model and optimizer as
             torch 2's get_state_dict and DCP flatten_state_dict key them (below),
             parameters and moments row-split over the ranks as ShardedTensors (as
             FSDP's sharded state dict chunks them), steps as plain tensors and the
             optimizer's settings as bytes entries.
  dcp_optim.pt    the truth, full tensors: {"model": state dict, "optim": Adam's
             state dict keyed by parameter fqn (get_state_dict's form)}.
  dcp_optim.json  every tensor key of dcp_optim/ with its sha256, the step and the
             groups.
"""
import hashlib
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

from make_fixtures import SAFETENSORS_DTYPES, raw_bytes  # noqa: E402

WORLD = 2
STEPS = 3


def full_tensors():
    gen = torch.Generator().manual_seed(3)
    return {"layer.weight": torch.randn(10, 6, generator=gen),
            "embed.weight": torch.randn(8, 4, generator=gen).bfloat16(),
            "bias": torch.randn(5, generator=gen).double()}


def worker(rank, outdir, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    full = full_tensors()
    state = {}
    for name in ("layer.weight", "embed.weight"):
        t = full[name]
        rows = [(0, 6), (6, t.shape[0])] if name == "layer.weight" else [(0, 4), (4, 8)]
        begin, end = rows[rank]
        metas = [ShardMetadata(shard_offsets=[b, 0], shard_sizes=[e - b, t.shape[1]],
                               placement=f"rank:{r}/cpu") for r, (b, e) in enumerate(rows)]
        local = [Shard(t[begin:end].clone(), metas[rank])]
        state[name] = init_from_local_shards(local, list(t.shape))
    state["bias"] = full["bias"]
    state["note"] = b"written by make_dcp.py"
    dcp.save_state_dict(state, dcp.FileSystemWriter(os.path.join(outdir, "dcp")))
    dist.barrier()
    dist.destroy_process_group()


class Tiny(torch.nn.Module):
    """Embedding, a biased projection and an unbiased output layer: rows that do not
    divide by the 2 ranks (3) and 1-D parameters (the bias) among them."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6)
        self.proj = torch.nn.Linear(6, 8)
        self.out = torch.nn.Linear(8, 3, bias=False)

    def forward(self, ids):
        return self.out(torch.tanh(self.proj(self.embed(ids))))


def tiny_and_adam():
    """The model and its Adam, two groups (decay for matrices only), as the run and the
    judge (check_dcp_optim.py) build them."""
    torch.manual_seed(5)
    model = Tiny()
    named = dict(model.named_parameters())
    decay = [n for n, p in named.items() if p.dim() > 1]
    no_decay = [n for n, p in named.items() if p.dim() <= 1]
    adam = torch.optim.Adam([{"params": [named[n] for n in decay], "weight_decay": 0.1},
                             {"params": [named[n] for n in no_decay], "weight_decay": 0.0}],
                            lr=0.01, betas=(0.9, 0.95), eps=1e-6)
    return model, adam, decay + no_decay


def batch(step, rank):
    gen = torch.Generator().manual_seed(100 * step + rank)
    return torch.randint(0, 10, (4,), generator=gen), torch.randint(0, 3, (4,), generator=gen)


def train_step(model, adam, step, ranks):
    """One data-parallel step: each rank's batch, gradients averaged (all_reduce when a
    process group runs, else summed here over `ranks` batches)."""
    adam.zero_grad()
    if dist.is_initialized():
        ids, labels = batch(step, dist.get_rank())
        torch.nn.functional.cross_entropy(model(ids), labels).backward()
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    else:
        for rank in range(ranks):
            ids, labels = batch(step, rank)
            (torch.nn.functional.cross_entropy(model(ids), labels) / ranks).backward()
    adam.step()


def fqn_state_dicts(model, adam, order):
    """What torch 2's get_state_dict(model, optim) returns: the model's state dict and
    Adam's with states and groups keyed by parameter fqn instead of index
    (torch/distributed/checkpoint/state_dict.py, _get_optim_state_dict)."""
    osd = adam.state_dict()
    state = {order[i]: dict(s) for i, s in osd["state"].items()}
    groups = [dict(g, params=[order[i] for i in g["params"]]) for g in osd["param_groups"]]
    return dict(model.state_dict()), {"state": state, "param_groups": groups}


def flatten(value, path, out):
    """torch 2's flatten_state_dict (torch/distributed/checkpoint/_nested_dict.py and
    _traverse.py, traverse_state_dict): dicts are walked with str keys, lists by index
    unless every item is a leaf (then the list is one value), anything else is a leaf;
    a leaf's key is its path joined with '.'."""
    def terminal(v):
        if isinstance(v, dict):
            return False
        if isinstance(v, list):
            return all(terminal(x) and not isinstance(x, torch.Tensor) for x in v)
        return True
    if terminal(value) and not isinstance(value, dict):
        out[".".join(path)] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, path + (str(k),), out)
    else:
        for i, v in enumerate(value):
            flatten(v, path + (str(i),), out)


def row_sharded(t, rank):
    """t as FSDP's sharded state dict holds it: torch.chunk over the ranks along
    dimension 0 (torch/distributed/fsdp/_shard_utils.py, _create_chunk_sharded_tensor)."""
    chunks = torch.chunk(t, WORLD, dim=0)
    metas, begin = [], 0
    for r, c in enumerate(chunks):
        metas.append(ShardMetadata(shard_offsets=[begin] + [0] * (t.dim() - 1),
                                   shard_sizes=list(c.shape), placement=f"rank:{r}/cpu"))
        begin += c.shape[0]
    return init_from_local_shards([Shard(chunks[rank].clone(), metas[rank])], list(t.shape))


def optim_worker(rank, outdir, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    model, adam, order = tiny_and_adam()
    for step in range(STEPS):
        train_step(model, adam, step, WORLD)
    msd, osd = fqn_state_dicts(model, adam, order)
    flat = {}
    flatten({"model": msd, "optim": osd}, (), flat)
    state = {k: row_sharded(v, rank) if isinstance(v, torch.Tensor) and v.dim() > 0 else v
             for k, v in flat.items()}
    dcp.save_state_dict(state, dcp.FileSystemWriter(os.path.join(outdir, "dcp_optim")))
    if rank == 0:
        torch.save({"model": msd, "optim": osd}, os.path.join(outdir, "dcp_optim.pt"))
        manifest = [{"name": k, "dtype": SAFETENSORS_DTYPES[v.dtype], "shape": list(v.shape),
                     "stride": list(v.contiguous().stride()), "offset": 0,
                     "sha256": hashlib.sha256(raw_bytes(v)).hexdigest()}
                    for k, v in sorted(flat.items()) if isinstance(v, torch.Tensor)]
        with open(os.path.join(outdir, "dcp_optim.json"), "w") as f:
            json.dump({"tensors": manifest, "step": STEPS,
                       "groups": [g["params"] for g in osd["param_groups"]]}, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    outdir = sys.argv[1]
    os.makedirs(os.path.join(outdir, "dcp"), exist_ok=True)
    os.makedirs(os.path.join(outdir, "dcp_optim"), exist_ok=True)
    mp.spawn(worker, args=(outdir, free_port()), nprocs=WORLD, join=True)
    mp.spawn(optim_worker, args=(outdir, free_port()), nprocs=WORLD, join=True)
    tensors = [{"name": n, "dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                "stride": list(t.stride()), "offset": 0,
                "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()}
               for n, t in sorted(full_tensors().items())]
    with open(os.path.join(outdir, "dcp.json"), "w") as f:
        json.dump({"tensors": tensors}, f, indent=1)


if __name__ == "__main__":
    main()
