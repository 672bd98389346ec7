#!/usr/bin/env python3
"""Writes the checkpoint fixtures loom's tests read, with Debian's torch 1.13.

Usage: make_fixtures.py OUTDIR

  gpt.pt            Megatron-style checkpoint: nested dicts, a tiny GPT state dict
                    (bf16/fp16/fp32/int64, q/k/v views of one fused storage, a
                    transposed view), argparse.Namespace, an enum, a class restored by
                    BUILD, numpy and Python RNG state, a Parameter.
  weights.pt        the flat state dict alone (what torch.load(weights_only=True) takes)
  weights_p4.pt, weights_p5.pt
                    the same saved with pickle protocols 4 and 5 (FRAME, MEMOIZE,
                    SHORT_BINUNICODE, STACK_GLOBAL instead of protocol 2's opcodes)
  hf_safetensors/   HF sharded safetensors (bytes written here by hand: no pip package)
  hf_bin/           HF sharded pytorch_model-*.bin with pytorch_model.bin.index.json
  *.json            manifests: every tensor's dtype, shape, stride, offset, sha256 of
                    its row-major bytes and which tensors share a storage
"""
import argparse
import collections
import hashlib
import json
import os
import random
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_like  # noqa: E402

SAFETENSORS_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.int32: "I32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float32: "F32", torch.float64: "F64",
}


def raw_bytes(t):
    """Row-major bytes of t (bf16 has no numpy dtype: go through a same-size int view)."""
    t = t.detach().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def walk(value, path=""):
    """Tensors reachable through dicts (str/int keys), lists and tuples: loom's
    collectTensors() naming."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, (str, int)) and not isinstance(k, bool):
                yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}.{i}" if path else str(i))


def manifest(root):
    tensors, storages = [], {}
    for name, t in walk(root):
        tensors.append({
            "name": name, "dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
            "stride": list(t.stride()), "offset": t.storage_offset(),
            "sha256": hashlib.sha256(raw_bytes(t)).hexdigest(),
        })
        storages.setdefault(t.storage().data_ptr(), []).append(name)
    shared = [names for names in storages.values() if len(names) > 1]
    return {"tensors": tensors, "shared_storages": shared}


def tiny_gpt(gen):
    hidden, vocab, seq = 16, 64, 32
    sd = collections.OrderedDict()
    sd["embedding.word_embeddings.weight"] = torch.randn(vocab, hidden, generator=gen).bfloat16()
    sd["embedding.position_embeddings.weight"] = torch.randn(seq, hidden, generator=gen)
    qkv = torch.randn(3 * hidden, hidden, generator=gen).half()
    sd["layers.0.self_attention.query_key_value.weight"] = qkv
    # Views into the fused storage at offsets, as split checkpoints hold them.
    q, k, v = qkv.split(hidden)
    sd["layers.0.self_attention.query.weight"] = q
    sd["layers.0.self_attention.key.weight"] = k
    sd["layers.0.self_attention.value.weight"] = v
    fc1 = torch.randn(4 * hidden, hidden, generator=gen)
    sd["layers.0.mlp.dense_h_to_4h.weight"] = fc1
    sd["layers.0.mlp.dense_h_to_4h_t.weight"] = fc1.t()  # non-contiguous view
    sd["layers.0.mlp.dense_h_to_4h.bias"] = torch.randn(4 * hidden, generator=gen).bfloat16()
    sd["layers.0.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float64)
    sd["position_ids"] = torch.arange(seq, dtype=torch.int64).unsqueeze(0)
    sd["attention_mask"] = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    sd["quant.int8"] = torch.randint(-128, 127, (5,), dtype=torch.int8, generator=gen)
    sd["quant.int16"] = torch.randint(-1000, 1000, (3, 2), dtype=torch.int16, generator=gen)
    sd["quant.int32"] = torch.randint(-10**6, 10**6, (7,), dtype=torch.int32, generator=gen)
    sd["quant.uint8"] = torch.randint(0, 255, (2, 2), dtype=torch.uint8, generator=gen)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    return sd


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = raw_bytes(t)
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def shards_of(sd, count):
    names = list(sd)
    per = -(-len(names) // count)
    return [collections.OrderedDict((n, sd[n]) for n in names[i:i + per])
            for i in range(0, len(names), per)]


def write_hf(directory, sd, kind, count):
    os.makedirs(directory, exist_ok=True)
    shards = shards_of(sd, count)
    weight_map = {}
    for i, shard in enumerate(shards):
        if kind == "safetensors":
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(os.path.join(directory, fname), shard, {"format": "pt"})
        else:
            fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
            torch.save(shard, os.path.join(directory, fname))
        weight_map.update({n: fname for n in shard})
    index = "model.safetensors.index.json" if kind == "safetensors" else \
        "pytorch_model.bin.index.json"
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(directory, index), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    out = parser.parse_args().outdir
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    random.seed(5)
    np.random.seed(7)

    sd = tiny_gpt(gen)
    head = torch.nn.Linear(16, 4)
    with torch.no_grad():
        head.weight.copy_(torch.randn(4, 16, generator=gen))
        head.bias.zero_()
    checkpoint = {
        "args": argparse.Namespace(num_layers=1, hidden_size=16, tensor_model_parallel_size=2,
                                   params_dtype=torch.bfloat16, lr=3e-4, data_path=["a", "b"]),
        "checkpoint_version": 3.0,
        "iteration": 10,
        "model_type": megatron_like.ModelType.encoder_or_decoder,
        "model": {"language_model": sd, "output_layer": head.state_dict()},
        "optimizer": {"loss_scaler": megatron_like.LossScaler(),
                      "param_groups": [{"lr": 3e-4, "params": [0, 1], "betas": (0.9, 0.95)}],
                      "master": torch.nn.Parameter(torch.randn(3, generator=gen))},
        "rng_state": [{"random_rng_state": random.getstate(),
                       "np_rng_state": np.random.get_state(),
                       "torch_rng_state": torch.get_rng_state()}],
        "tags": {"wd", "no_wd"},
        "blob": b"\x00\x01binary",
        "big": 2**40, "negative": -7, "none": None, "flag": True,
    }
    torch.save(checkpoint, os.path.join(out, "gpt.pt"))
    with open(os.path.join(out, "gpt.json"), "w") as f:
        json.dump(manifest(checkpoint), f, indent=1)

    torch.save(sd, os.path.join(out, "weights.pt"))
    for protocol in (4, 5):
        torch.save(sd, os.path.join(out, f"weights_p{protocol}.pt"), pickle_protocol=protocol)
    with open(os.path.join(out, "weights.json"), "w") as f:
        json.dump(manifest(sd), f, indent=1)

    # HF checkpoints hold contiguous, unshared tensors.
    hf = collections.OrderedDict((n, t.clone().contiguous()) for n, t in sd.items()
                                 if n != "empty")
    write_hf(os.path.join(out, "hf_safetensors"), hf, "safetensors", 3)
    write_hf(os.path.join(out, "hf_bin"), hf, "bin", 2)
    with open(os.path.join(out, "hf.json"), "w") as f:
        json.dump(manifest(hf), f, indent=1)


if __name__ == "__main__":
    main()
