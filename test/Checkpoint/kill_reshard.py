#!/usr/bin/env python3
"""SIGKILLs `loom reshard` at random points and checks the output is whole or absent.

Usage: kill_reshard.py LOOM WORKDIR [TRIALS]

Writes a synthetic safetensors checkpoint (64 tensors of 256 KiB) and reshards it to
hf-safetensors with 512 KiB shards (33 files), once undisturbed as the reference.
Then, TRIALS times (default 20): start the same run, kill it with SIGKILL after a
random delay within the undisturbed run's duration, and check that OUT is either
absent or byte-identical to the reference; then finish with --resume when a partial
output was left (or a fresh run when none was) and check the result is
byte-identical to the reference and that no temporary file is left anywhere.
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time


def write_source(path):
    rng = random.Random(5)
    header, data = {}, bytearray()
    for i in range(64):
        blob = rng.randbytes(256 << 10)
        header[f"layer.{i:02d}.weight"] = {"dtype": "F32", "shape": [256, 256],
                                           "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def tree(path):
    """Relative path -> bytes of every file under `path`."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def main():
    loom, work = sys.argv[1], sys.argv[2]
    trials = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    src = os.path.join(work, "src.safetensors")
    write_source(src)

    def cmd(out, *extra):
        return [loom, "reshard", src, out, "--to", "hf-safetensors:shard=512KiB", "--json", *extra]

    ref = os.path.join(work, "ref")
    start = time.monotonic()
    subprocess.run(cmd(ref), check=True, stdout=subprocess.DEVNULL)
    duration = time.monotonic() - start
    expected = tree(ref)
    print(f"reference: {len(expected)} files in {duration:.3f} s")

    rng = random.Random(11)
    out = os.path.join(work, "out")
    partial = out + ".loom-partial"
    mid_run = resumed = 0
    for trial in range(trials):
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
        proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if os.path.exists(out):
            if tree(out) != expected:
                print(f"trial {trial}: {out} exists but differs from the reference")
                return 1
        else:
            mid_run += 1
        resume = os.path.exists(partial)
        resumed += resume
        if not os.path.exists(out):
            subprocess.run(cmd(out, *(["--resume"] if resume else [])), check=True,
                           stdout=subprocess.DEVNULL)
        got = tree(out)
        if got != expected:
            print(f"trial {trial}: after {'--resume' if resume else 'a fresh run'} the output differs")
            return 1
        stray = [p for p in os.listdir(work) if ".tmp-" in p] + \
                [p for p in got if ".tmp-" in p]
        if os.path.exists(partial) or stray:
            print(f"trial {trial}: left behind {stray or partial}")
            return 1
    print(f"{trials} kills, {mid_run} mid-run, {resumed} resumed: every output was whole or "
          f"absent, and every finished run matched the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
