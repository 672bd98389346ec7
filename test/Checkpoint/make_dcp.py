#!/usr/bin/env python3
"""Writes a torch DCP checkpoint with torch 1.13's own writer and 2 gloo processes.

Usage: make_dcp.py OUTDIR

  dcp/       .metadata + __0_0.distcp, __1_0.distcp from
             torch.distributed._shard.checkpoint.save_state_dict: a ShardedTensor
             row-split over the 2 ranks (chunks with offsets), a replicated plain tensor
             (written once, by the coordinator) and a bytes entry.
  dcp.json   the full tensors (sorted by name, sha256 of row-major bytes).
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


def main():
    outdir = sys.argv[1]
    os.makedirs(os.path.join(outdir, "dcp"), exist_ok=True)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(outdir, port), nprocs=WORLD, join=True)
    tensors = [{"name": n, "dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                "stride": list(t.stride()), "offset": 0,
                "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()}
               for n, t in sorted(full_tensors().items())]
    with open(os.path.join(outdir, "dcp.json"), "w") as f:
        json.dump({"tensors": tensors}, f, indent=1)


if __name__ == "__main__":
    main()
