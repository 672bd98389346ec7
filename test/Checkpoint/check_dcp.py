#!/usr/bin/env python3
"""Loads a DCP checkpoint written by loom with torch 1.13's own DCP reader.

Usage: check_dcp.py DIR MANIFEST|STATE_DICT.pt

MANIFEST lists the tensors ({"tensors": [{"name", "dtype" (torch name), "shape",
"sha256" of row-major bytes}]}); a .pt file instead is a state dict torch.load
reads, whose tensors the checkpoint must hold. Two loads, each must give those bytes:
  1. one process (no_dist): every tensor into a plain tensor;
  2. two gloo processes: every tensor of 2+ rows into a ShardedTensor split in rows
     over the two ranks, a split loom did not write, so torch's planner reads across
     loom's chunk boundaries; the ranks' shards are put back together here.
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
from torch.distributed._shard.sharded_tensor import init_from_local_shards, Shard, ShardMetadata  # noqa: E402
import torch.distributed._shard.checkpoint as dcp  # noqa: E402

from make_fixtures import raw_bytes  # noqa: E402

WORLD = 2


def empty(entry):
    return torch.zeros(entry["shape"], dtype=getattr(torch, entry["dtype"]))


def rows_of(rank, rows):
    half = (rows + 1) // 2
    return (0, half) if rank == 0 else (half, rows)


def worker(rank, directory, manifest, port, outdir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    state = {}
    for entry in manifest:
        full = empty(entry)
        if full.dim() == 0 or full.shape[0] < WORLD:
            state[entry["name"]] = full
            continue
        metas = []
        for r in range(WORLD):
            b, e = rows_of(r, full.shape[0])
            metas.append(ShardMetadata(shard_offsets=[b] + [0] * (full.dim() - 1),
                                       shard_sizes=[e - b] + list(full.shape[1:]),
                                       placement=f"rank:{r}/cpu"))
        b, e = rows_of(rank, full.shape[0])
        local = [Shard(full[b:e].clone(), metas[rank])]
        state[entry["name"]] = init_from_local_shards(local, list(full.shape))
    dcp.load_state_dict(state, dcp.FileSystemReader(directory))
    out = {}
    for name, value in state.items():
        out[name] = value.local_shards()[0].tensor if hasattr(value, "local_shards") else value
    torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def check(name, tensor, entry, how):
    digest = hashlib.sha256(raw_bytes(tensor.contiguous())).hexdigest()
    if list(tensor.shape) != entry["shape"] or digest != entry["sha256"]:
        sys.exit(f"{how}: {name}: shape {list(tensor.shape)} sha256 {digest}, "
                 f"expected {entry['shape']} {entry['sha256']}")


def main():
    directory, manifest_path = sys.argv[1], sys.argv[2]
    if manifest_path.endswith(".pt"):
        manifest = [{"name": n, "dtype": str(t.dtype).split(".")[1], "shape": list(t.shape),
                     "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()}
                    for n, t in torch.load(manifest_path, weights_only=True).items()]
    else:
        with open(manifest_path) as f:
            manifest = json.load(f)["tensors"]

    state = {e["name"]: empty(e) for e in manifest}
    dcp.load_state_dict(state, dcp.FileSystemReader(directory), no_dist=True)
    for e in manifest:
        check(e["name"], state[e["name"]], e, "one process")

    parts = dcp_shim.run_ranks(worker, (directory, manifest), WORLD)
    for e in manifest:
        name = e["name"]
        if len(e["shape"]) == 0 or e["shape"][0] < WORLD:
            for r in range(WORLD):
                check(name, parts[r][name], e, f"rank {r}")
        else:
            check(name, torch.cat([parts[0][name], parts[1][name]]), e, "two ranks")
    print(f"torch loaded {len(manifest)} tensors from {directory}, in one process and in two")


if __name__ == "__main__":
    main()
