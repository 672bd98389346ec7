#!/usr/bin/env python3
"""Judges a loom universal checkpoint with h5py (Debian's python3-h5py), not with loom.

Usage: check_universal.py FILE.h5 MANIFEST.json
       check_universal.py same A.h5 B.h5
       check_universal.py same-tensors A.h5 B.h5

The manifest lists datasets with the dtype, shape and SHA-256 of the bytes loom meant
to store. h5py must find each dataset with that shape, a dtype attribute naming it, an
HDF5 type whose numpy form matches it (float16 as float16, bfloat16 as 16-bit
integers), the same bytes, and the root attributes the format requires.

`same` compares two universal files (a serial and an MPI run): the same groups and
datasets, each with the same HDF5 type, shape, chunk shape, Fletcher-32 filter,
bytes and attributes (dtype, xxh3_64, step), and the same root attributes.
`same-tensors` compares two conversions of one model from different sources the same
way, of the root attributes only the iteration and tokens seen (source_format,
source_layout and name_mapping say where each came from).
"""
import hashlib
import json
import sys

import h5py
import numpy as np

NUMPY = {
    "bool": np.uint8, "uint8": np.uint8, "int8": np.int8, "int16": np.int16,
    "int32": np.int32, "int64": np.int64, "float16": np.float16, "bfloat16": np.uint16,
    "float32": np.float32, "float64": np.float64,
}


def same(a_path, b_path, root_attrs=None):
    """`root_attrs`: the root attributes to compare, all when None."""
    failures, datasets = [], 0
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        def attrs(obj):
            return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.attrs.items()}
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        if sorted(names_a) != sorted(names_b):
            failures.append(f"different objects: {sorted(set(names_a) ^ set(names_b))[:5]}")
        root_a, root_b = attrs(a), attrs(b)
        if root_attrs is not None:
            root_a, root_b = ({k: r.get(k) for k in root_attrs} for r in (root_a, root_b))
        if root_a != root_b:
            failures.append(f"root attributes differ: {root_a} vs {root_b}"
                            if root_attrs else "root attributes differ")
        for name in sorted(set(names_a) & set(names_b)):
            x, y = a[name], b[name]
            if attrs(x) != attrs(y):
                failures.append(f"{name}: attributes differ: {attrs(x)} vs {attrs(y)}")
            if isinstance(x, h5py.Dataset):
                datasets += 1
                if (x.dtype, x.shape, x.chunks, x.fletcher32) != (y.dtype, y.shape, y.chunks, y.fletcher32):
                    failures.append(f"{name}: {(x.dtype, x.shape, x.chunks, x.fletcher32)} vs "
                                    f"{(y.dtype, y.shape, y.chunks, y.fletcher32)}")
                elif np.ascontiguousarray(x[()]).tobytes() != np.ascontiguousarray(y[()]).tobytes():
                    failures.append(f"{name}: bytes differ")
    for failure in failures:
        print(failure)
    if not failures:
        print(f"same: {datasets} datasets with their attributes, chunks and bytes")
    sys.exit(1 if failures else 0)


def main():
    if sys.argv[1] == "same":
        return same(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "same-tensors":
        return same(sys.argv[2], sys.argv[3], ("iteration", "tokens_seen"))
    path, manifest_path = sys.argv[1:3]
    with open(manifest_path) as f:
        manifest = json.load(f)
    failures = []
    with h5py.File(path, "r") as f:
        if f.attrs.get("loom_format") != "loom-universal" or f.attrs.get("format_version") != 1:
            failures.append("root attributes loom_format/format_version missing")
        for attr in ("model_config", "source_layout", "name_mapping"):
            json.loads(f.attrs[attr])
        for want in manifest["tensors"]:
            name = want["dataset"]
            ds = f[name]
            data = ds[()]
            if ds.attrs["dtype"] != want["dtype"]:
                failures.append(f"{name}: dtype attribute {ds.attrs['dtype']}")
            if data.dtype != np.dtype(NUMPY[want["dtype"]]).newbyteorder("<"):
                failures.append(f"{name}: h5py reads {data.dtype}")
            if list(data.shape) != want["shape"]:
                failures.append(f"{name}: shape {list(data.shape)}")
            if hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest() != want["sha256"]:
                failures.append(f"{name}: bytes differ")
    for failure in failures:
        print(failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
