#!/usr/bin/env python3
"""Resharding throughput against the disk and against a torch peer, in one run.

Usage: reshard_bench.py [--layers N] [--work DIR] [--loom PATH] [--keep] [--mpi N]
                        [--max-memory-mib M]

Builds a synthetic Megatron mcore checkpoint with tp=2 pp=2 (Llama-like: hidden
2048, 16 heads in 4 query groups, SwiGLU ffn 5632, vocabulary 32000, bf16; about
0.09 GiB per layer plus 0.25 GiB of embeddings; 20 layers by default, 2 GiB), then
reshards it to tp=1 pp=4 three ways and prints one table:

  disk    sequential write of the same number of bytes (64 MiB blocks, fsync),
          buffered and with O_DIRECT, and read back: the bandwidth limits of this
          machine, measured now (loom writes large tensors with O_DIRECT where the
          file system allows it, so its limit is the faster write);
  memcpy  one copy of a 1 GiB buffer;
  loom    `loom reshard --to megatron:tp=1,pp=4` (its peak RSS as its --json reports it);
  torch   the usual script: torch.load every shard, torch.cat the TP parts (QKV
          regrouped per query group, fc1 as [gate; up]), torch.save each new shard,
          then os.sync(): loom fsyncs every file before renaming it into place, so
          the peer is timed to the same durability.

Ratios printed: loom's bytes written per second over the disk's write bandwidth
(target >= 0.8) and torch's time over loom's (target >= 5).

With --mpi N, also `loom reshard --to universal` in one process and under
`mpirun -n N loom reshard --mpi` (one file, parallel HDF5), and their time ratio.
"""
import argparse
import collections
import json
import mmap
import os
import shutil
import subprocess
import sys
import time

import torch

HIDDEN, HEADS, GROUPS, HD, FFN, VOCAB, PADDED = 2048, 16, 4, 128, 5632, 32000, 32256
TP, PP = 2, 2


def shard(layer_count, tp_rank, stage, gen):
    out = collections.OrderedDict()
    per = layer_count // PP
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    if stage == 0:
        out["embedding.word_embeddings.weight"] = rand(PADDED // TP, HIDDEN)
    for i in range(per):
        p = f"decoder.layers.{i}."
        out[p + "self_attention.linear_qkv.layer_norm_weight"] = rand(HIDDEN)
        out[p + "self_attention.linear_qkv.weight"] = rand((HEADS + 2 * GROUPS) * HD // TP, HIDDEN)
        out[p + "self_attention.linear_proj.weight"] = rand(HIDDEN, HEADS * HD // TP)
        out[p + "mlp.linear_fc1.layer_norm_weight"] = rand(HIDDEN)
        out[p + "mlp.linear_fc1.weight"] = rand(2 * FFN // TP, HIDDEN)
        out[p + "mlp.linear_fc2.weight"] = rand(HIDDEN, FFN // TP)
    if stage == PP - 1:
        out["decoder.final_layernorm.weight"] = rand(HIDDEN)
        out["output_layer.weight"] = rand(PADDED // TP, HIDDEN)
    return out


def make_source(root, layers):
    import argparse as ap
    args = ap.Namespace(num_layers=layers, hidden_size=HIDDEN, num_attention_heads=HEADS,
                        group_query_attention=True, num_query_groups=GROUPS, kv_channels=HD,
                        ffn_hidden_size=FFN, swiglu=True, padded_vocab_size=PADDED,
                        vocab_size=VOCAB, tensor_model_parallel_size=TP,
                        pipeline_model_parallel_size=PP)
    gen = torch.Generator().manual_seed(0)
    os.makedirs(root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("10")
    for stage in range(PP):
        for r in range(TP):
            d = os.path.join(root, "iter_0000010", f"mp_rank_{r:02d}_{stage:03d}")
            os.makedirs(d)
            torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 10,
                        "model": shard(layers, r, stage, gen)}, os.path.join(d, "model_optim_rng.pt"))


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(root) for f in fs)


def direct_write_bandwidth(path, nbytes, block):
    """Sequential O_DIRECT writes of 64 MiB and an fsync: the disk without the page
    cache's dirty-page throttling (None where the file system refuses O_DIRECT)."""
    aligned = mmap.mmap(-1, len(block))  # page-aligned, as O_DIRECT wants
    aligned.write(block)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    except OSError:
        return None
    start = time.perf_counter()
    try:
        for _ in range(-(-nbytes // len(block))):
            os.write(fd, aligned)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.remove(path)
    return -(-nbytes // len(block)) * len(block) / (time.perf_counter() - start)


def disk_bandwidth(path, nbytes):
    block = bytearray(os.urandom(64 << 20))
    direct = direct_write_bandwidth(path, nbytes, block)
    start = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())
    write = nbytes / (time.perf_counter() - start)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(block):
            pass
    read = nbytes / (time.perf_counter() - start)
    os.remove(path)
    return write, direct, read


def memcpy_bandwidth():
    a = torch.empty(1 << 30, dtype=torch.uint8)
    a.fill_(1)
    b = torch.empty_like(a)
    b.copy_(a)
    start = time.perf_counter()
    b.copy_(a)
    return (1 << 30) / (time.perf_counter() - start)


def torch_peer(src, out, layers):
    """tp2pp2 -> tp1pp4 the way a hand-written script does it."""
    it = os.path.join(src, "iter_0000010")
    shards = {(r, s): torch.load(os.path.join(it, f"mp_rank_{r:02d}_{s:03d}", "model_optim_rng.pt"))
              for r in range(TP) for s in range(PP)}
    args = shards[(0, 0)]["args"]
    per_old, per_new, new_pp = layers // PP, layers // 4, 4
    full = {}
    for s in range(PP):
        for name in shards[(0, s)]["model"]:
            parts = [shards[(r, s)]["model"][name] for r in range(TP)]
            if name.startswith("decoder.layers."):
                i = int(name.split(".")[2]) + s * per_old
                key = "layers.%d.%s" % (i, name.split(".", 3)[3])
            else:
                key = name
            if "layer_norm" in name or "final_layernorm" in name:
                full[key] = parts[0]
            elif "linear_proj" in name or "linear_fc2" in name:
                full[key] = torch.cat(parts, dim=1)
            elif "linear_fc1.weight" in name:
                gates, ups = zip(*(p.chunk(2) for p in parts))
                full[key] = torch.cat(list(gates) + list(ups))
            else:  # qkv (groups stay in rank order at tp=1) and vocabulary rows
                full[key] = torch.cat(parts)
    args.tensor_model_parallel_size, args.pipeline_model_parallel_size = 1, new_pp
    for s in range(new_pp):
        model = collections.OrderedDict()
        if s == 0:
            model["embedding.word_embeddings.weight"] = full["embedding.word_embeddings.weight"]
        for j in range(per_new):
            prefix = "layers.%d." % (s * per_new + j)
            for key, t in full.items():
                if key.startswith(prefix):
                    model["decoder.layers.%d.%s" % (j, key[len(prefix):])] = t
        if s == new_pp - 1:
            model["decoder.final_layernorm.weight"] = full["decoder.final_layernorm.weight"]
            model["output_layer.weight"] = full["output_layer.weight"]
        d = os.path.join(out, "iter_0000010", f"mp_rank_00_{s:03d}")
        os.makedirs(d)
        torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 10, "model": model},
                   os.path.join(d, "model_optim_rng.pt"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--work", default="/tmp/loom-reshard-bench")
    parser.add_argument("--loom", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin", "loom"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--mpi", type=int, default=0, help="also time the universal target under mpirun -n N")
    parser.add_argument("--max-memory-mib", type=int, default=256,
                        help="loom's --max-memory (source bytes kept resident), in MiB")
    a = parser.parse_args()
    if a.layers % 4:
        sys.exit("--layers must divide by 4 (pp=2 and pp=4)")
    shutil.rmtree(a.work, ignore_errors=True)
    src = os.path.join(a.work, "src")
    print(f"making a {a.layers}-layer tp=2 pp=2 checkpoint in {src} ...", flush=True)
    make_source(src, a.layers)
    size = tree_bytes(src)

    buffered_bw, direct_bw, read_bw = disk_bandwidth(os.path.join(a.work, "disk.bin"), size)
    # loom writes large tensors around the page cache where it can: its limit is
    # the faster of the two ways to the disk.
    write_bw = max(buffered_bw, direct_bw or 0)
    copy_bw = memcpy_bandwidth()

    out = os.path.join(a.work, "loom-out")
    start = time.perf_counter()
    run = subprocess.run([a.loom, "reshard", src, out, "--to", "megatron:tp=1,pp=4", "--json",
                          "--max-memory", f"{a.max_memory_mib}MiB"],
                         check=True, stdout=subprocess.PIPE, text=True)
    loom_s = time.perf_counter() - start
    # loom's own high-water mark (VmHWM): the child's ru_maxrss would also count the
    # memory this Python process had when it forked.
    summary = json.loads(run.stdout)
    loom_rss, loom_base = summary["peak_rss_bytes"], summary["rss_before_run_bytes"]
    written = tree_bytes(out)

    peer_out = os.path.join(a.work, "torch-out")
    start = time.perf_counter()
    torch_peer(src, peer_out, a.layers)
    os.sync()
    torch_s = time.perf_counter() - start

    gib = float(1 << 30)
    largest = PADDED * HIDDEN * 2  # the embedding (and output layer), bf16, whole at tp=1
    # What the run adds to the process it starts in (libraries, the program, parsed
    # headers): the tensor being assembled, plus the mapped source bytes kept
    # resident, which --max-memory caps except for the source piece being copied
    # (one tp slice of the embedding).
    piece = largest // TP
    bound = loom_base + largest + max(a.max_memory_mib << 20, piece)
    rows = [("checkpoint", f"{size / gib:.2f} GiB in {TP * PP} files"),
            ("disk write (buffered, fsync)", f"{buffered_bw / gib:.2f} GiB/s"),
            ("disk write (O_DIRECT, fsync)",
             f"{direct_bw / gib:.2f} GiB/s" if direct_bw else "refused by the file system"),
            ("disk read", f"{read_bw / gib:.2f} GiB/s"),
            ("memcpy", f"{copy_bw / gib:.2f} GiB/s"),
            ("loom reshard", f"{loom_s:.2f} s, {written / gib / loom_s:.2f} GiB/s written, "
                             f"peak RSS {loom_rss / gib:.2f} GiB"),
            ("peak RSS bound", f"{bound / gib:.2f} GiB = largest tensor {largest / gib:.2f} GiB + "
                               f"max(--max-memory {a.max_memory_mib} MiB, source piece {piece / gib:.2f} GiB) + "
                               f"before the run {loom_base / gib:.2f} GiB ({'met' if loom_rss <= bound else 'NOT met'})"),
            ("torch peer", f"{torch_s:.2f} s"),
            ("loom / disk write", f"{written / loom_s / write_bw:.2f} (target >= 0.80)"),
            ("torch / loom time", f"{torch_s / loom_s:.1f}x (target >= 5x)")]
    if a.mpi:
        timed = {}
        for label, command in (
                ("serial", [a.loom, "reshard", src, os.path.join(a.work, "serial.h5"), "--to", "universal"]),
                ("mpi", ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", str(a.mpi), a.loom,
                         "reshard", "--mpi", src, os.path.join(a.work, "mpi.h5"), "--to", "universal"])):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            timed[label] = time.perf_counter() - start
        rows += [("universal, 1 process", f"{timed['serial']:.2f} s"),
                 (f"universal, mpirun -n {a.mpi}", f"{timed['mpi']:.2f} s "
                                                  f"({timed['serial'] / timed['mpi']:.2f}x the serial run)")]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
