#!/usr/bin/env python3
"""Checks files loom wrote against the originals, with torch itself as the judge.

  check_loom_output.py torch ORIGINAL.pt LOOM.pt [--weights-only]
      torch.load reads LOOM.pt (with weights_only=True when asked) and gets a tree
      equal to ORIGINAL.pt's: same types, keys, values, tensors equal in dtype, shape,
      stride, storage offset and bits, and the same storage sharing between tensors.
  check_loom_output.py safetensors ORIGINAL.pt LOOM.safetensors
      the safetensors file, parsed here by hand, holds ORIGINAL's tensors bit-exactly.

Exit status 0 on success; otherwise the first difference is printed.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_like  # noqa: E402,F401  (the fixtures pickle its classes)

DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
          "I32": torch.int32, "I64": torch.int64, "F16": torch.float16,
          "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


class Mismatch(Exception):
    pass


def same_tensor(a, b, path):
    if type(a) is not type(b):
        raise Mismatch(f"{path}: {type(a).__name__} vs {type(b).__name__}")
    if (a.dtype, a.shape, a.stride(), a.storage_offset()) != \
            (b.dtype, b.shape, b.stride(), b.storage_offset()):
        raise Mismatch(f"{path}: layout {a.dtype} {tuple(a.shape)} {a.stride()} "
                       f"{a.storage_offset()} vs {b.dtype} {tuple(b.shape)} {b.stride()} "
                       f"{b.storage_offset()}")
    if a.requires_grad != b.requires_grad:
        raise Mismatch(f"{path}: requires_grad differs")
    # Compare bits, not values: NaNs and -0.0 must survive too.
    if a.dtype in (torch.bfloat16, torch.float16):
        a, b = a.view(torch.int16), b.view(torch.int16)
    if not torch.equal(a, b):
        raise Mismatch(f"{path}: values differ")


def compare(a, b, path, storages):
    if isinstance(a, torch.Tensor):
        same_tensor(a, b, path)
        storages.append((path, a.storage().data_ptr(), b.storage().data_ptr()))
    elif type(a) is not type(b):
        raise Mismatch(f"{path}: {type(a).__name__} vs {type(b).__name__}")
    elif isinstance(a, dict):
        if list(a) != list(b):
            raise Mismatch(f"{path}: keys {list(a)} vs {list(b)}")
        for k in a:
            compare(a[k], b[k], f"{path}.{k}", storages)
        if getattr(a, "_metadata", None) != getattr(b, "_metadata", None):
            raise Mismatch(f"{path}: _metadata differs")
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise Mismatch(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{path}.{i}", storages)
    elif isinstance(a, np.ndarray):
        if a.dtype != b.dtype or not np.array_equal(a, b):
            raise Mismatch(f"{path}: arrays differ")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        compare(vars(a), vars(b), path + ".__dict__", storages)
    elif a != b:
        raise Mismatch(f"{path}: {a!r} vs {b!r}")


def check_torch(original, written, weights_only):
    a = torch.load(original)
    b = torch.load(written, weights_only=weights_only)
    storages = []
    compare(a, b, "root", storages)
    # Tensors that shared a storage must still share one, and only those.
    groups_a, groups_b = {}, {}
    for path, pa, pb in storages:
        groups_a.setdefault(pa, set()).add(path)
        groups_b.setdefault(pb, set()).add(path)
    if sorted(map(sorted, groups_a.values())) != sorted(map(sorted, groups_b.values())):
        raise Mismatch("storage sharing differs")


def check_safetensors(original, written):
    expected = torch.load(original)
    with open(written, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    if list(header) != list(expected):
        raise Mismatch(f"names {list(header)} vs {list(expected)}")
    base = 8 + size
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(data[base + begin:base + end]) or bytearray(1),
                             dtype=torch.uint8)[:end - begin].view(dtype).reshape(info["shape"])
        ref = expected[name].contiguous().clone()
        same_tensor(ref, t, name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["torch", "safetensors"])
    parser.add_argument("original")
    parser.add_argument("written")
    parser.add_argument("--weights-only", action="store_true")
    args = parser.parse_args()
    try:
        if args.mode == "torch":
            check_torch(args.original, args.written, args.weights_only)
        else:
            check_safetensors(args.original, args.written)
    except Mismatch as e:
        print(f"mismatch: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
