#!/usr/bin/env python3
"""Writes tiny Megatron-LM checkpoints with tp=2 pp=2 the way Megatron lays them out.

Usage: make_megatron.py OUTDIR

  mcore/   Llama-like (GQA: 4 heads in 2 query groups, SwiGLU, RMSNorm, bf16, no
           biases) with mcore names: decoder.layers.N.self_attention.linear_qkv.weight,
           linear_fc1 = [gate; up] per TP rank, TE-fused norm weights.
  legacy/  GPT-like (MHA, GELU, LayerNorm and biases, learned positions, fp16) with
           legacy names: language_model.encoder.layers.N.self_attention.query_key_value.
  *.json   the full Hugging Face–style tensors each was cut from (sorted by name,
           sha256 of row-major bytes): what loom's unsharding must give back.

Both: latest_checkpointed_iteration.txt, iter_0000100/mp_rank_TT_PPP/model_optim_rng.pt,
layers numbered from 0 on each stage, vocabulary 250 padded to 256 (a multiple of
128 * tp), argparse.Namespace args.
"""
import argparse
import collections
import json
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import SAFETENSORS_DTYPES, raw_bytes  # noqa: E402
import hashlib  # noqa: E402

TP, PP, LAYERS, HIDDEN, HEAD_DIM, FFN, VOCAB, SEQ = 2, 2, 4, 32, 8, 48, 250, 16
PADDED_VOCAB = 256


def full_model(gen, dtype, heads, groups, swiglu, biases):
    """HF (Llama) names -> tensors."""
    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)
    sd = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN), "lm_head.weight": rand(VOCAB, HIDDEN),
          "model.norm.weight": rand(HIDDEN)}
    if biases:
        sd["model.norm.bias"] = rand(HIDDEN)
        sd["model.embed_positions.weight"] = rand(SEQ, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = rand(HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = rand(HIDDEN)
        sd[p + "self_attn.q_proj.weight"] = rand(heads * HEAD_DIM, HIDDEN)
        sd[p + "self_attn.k_proj.weight"] = rand(groups * HEAD_DIM, HIDDEN)
        sd[p + "self_attn.v_proj.weight"] = rand(groups * HEAD_DIM, HIDDEN)
        sd[p + "self_attn.o_proj.weight"] = rand(HIDDEN, heads * HEAD_DIM)
        if swiglu:
            sd[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
        if biases:
            for n in ("input_layernorm", "post_attention_layernorm"):
                sd[p + n + ".bias"] = rand(HIDDEN)
            sd[p + "self_attn.q_proj.bias"] = rand(heads * HEAD_DIM)
            sd[p + "self_attn.k_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.v_proj.bias"] = rand(groups * HEAD_DIM)
            sd[p + "self_attn.o_proj.bias"] = rand(HIDDEN)
            sd[p + "mlp.up_proj.bias"] = rand(FFN)
            sd[p + "mlp.down_proj.bias"] = rand(HIDDEN)
    return sd


def fuse_qkv(q, k, v, heads, groups, rank):
    """Megatron's fused QKV for one TP rank: per query group, its q heads then k then v."""
    per_group = heads // groups
    q = q.reshape(groups, per_group * HEAD_DIM, *q.shape[1:])
    k = k.reshape(groups, HEAD_DIM, *k.shape[1:])
    v = v.reshape(groups, HEAD_DIM, *v.shape[1:])
    fused = torch.cat([q, k, v], dim=1)
    mine = fused.chunk(TP, dim=0)[rank]
    return mine.reshape(-1, *mine.shape[2:]).clone()


def pad_vocab(t):
    return torch.cat([t, torch.zeros(PADDED_VOCAB - VOCAB, *t.shape[1:], dtype=t.dtype)])


def shard(sd, heads, groups, swiglu, biases, legacy, tp_rank, stage):
    """One (tp_rank, stage) shard with local layer numbers, mcore or legacy names."""
    def col(t):
        return t.chunk(TP, dim=0)[tp_rank].clone()

    def row(t):
        return t.chunk(TP, dim=1)[tp_rank].clone()

    names = {  # HF suffix -> (legacy, mcore)
        "input_layernorm": ("input_norm", "self_attention.linear_qkv.layer_norm_"),
        "post_attention_layernorm": ("post_attention_norm", "mlp.linear_fc1.layer_norm_"),
    }
    out = collections.OrderedDict()
    per_stage = LAYERS // PP
    if stage == 0:
        out["embedding.word_embeddings.weight"] = col(pad_vocab(sd["model.embed_tokens.weight"]))
        if "model.embed_positions.weight" in sd:
            out["embedding.position_embeddings.weight"] = sd["model.embed_positions.weight"].clone()
    layers = "encoder.layers." if legacy else "decoder.layers."
    for local in range(per_stage):
        p = f"model.layers.{stage * per_stage + local}."
        m = f"{layers}{local}."
        kinds = ["weight"] + (["bias"] if biases else [])
        for hf, (leg, mc) in names.items():
            for kind in kinds:
                out[m + (f"{leg}.{kind}" if legacy else f"{mc}{kind}")] = sd[p + hf + "." + kind].clone()
        attn = "self_attention.query_key_value." if legacy else "self_attention.linear_qkv."
        for kind in kinds:
            out[m + attn + kind] = fuse_qkv(sd[p + "self_attn.q_proj." + kind],
                                            sd[p + "self_attn.k_proj." + kind],
                                            sd[p + "self_attn.v_proj." + kind], heads, groups, tp_rank)
        proj = "self_attention.dense." if legacy else "self_attention.linear_proj."
        out[m + proj + "weight"] = row(sd[p + "self_attn.o_proj.weight"])
        if biases:
            out[m + proj + "bias"] = sd[p + "self_attn.o_proj.bias"].clone()
        fc1 = "mlp.dense_h_to_4h." if legacy else "mlp.linear_fc1."
        fc2 = "mlp.dense_4h_to_h." if legacy else "mlp.linear_fc2."
        for kind in kinds:
            if swiglu:
                out[m + fc1 + kind] = torch.cat([col(sd[p + "mlp.gate_proj." + kind]),
                                                 col(sd[p + "mlp.up_proj." + kind])])
            else:
                out[m + fc1 + kind] = col(sd[p + "mlp.up_proj." + kind])
        out[m + fc2 + "weight"] = row(sd[p + "mlp.down_proj.weight"])
        if biases:
            out[m + fc2 + "bias"] = sd[p + "mlp.down_proj.bias"].clone()
    if stage == PP - 1:
        final = "encoder.final_norm." if legacy else "decoder.final_layernorm."
        for kind in ["weight"] + (["bias"] if biases else []):
            out[final + kind] = sd["model.norm." + kind].clone()
        out["output_layer.weight"] = col(pad_vocab(sd["lm_head.weight"]))
    if not legacy:
        return out
    # Legacy nests the language model: embedding / encoder / output_layer.
    nested = {"embedding": {}, "encoder": collections.OrderedDict(), "output_layer": {}}
    for name, t in out.items():
        head, rest = name.split(".", 1)
        if head == "embedding":
            kind, leaf = rest.split(".", 1)
            nested["embedding"].setdefault(kind, {})[leaf] = t
        elif head == "encoder":
            nested["encoder"][rest] = t
        else:
            nested["output_layer"][rest] = t
    return {"language_model": {k: v for k, v in nested.items() if v}}


def write(outdir, name, heads, groups, swiglu, biases, dtype, legacy, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = full_model(gen, dtype, heads, groups, swiglu, biases)
    root = os.path.join(outdir, name)
    os.makedirs(root)
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("100")
    args = argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=heads,
        group_query_attention=groups != heads, num_query_groups=groups, kv_channels=HEAD_DIM,
        ffn_hidden_size=FFN, swiglu=swiglu, padded_vocab_size=PADDED_VOCAB, vocab_size=VOCAB,
        tensor_model_parallel_size=TP, pipeline_model_parallel_size=PP,
        params_dtype=dtype, iteration=100)
    for stage in range(PP):
        for tp_rank in range(TP):
            d = os.path.join(root, "iter_0000100", f"mp_rank_{tp_rank:02d}_{stage:03d}")
            os.makedirs(d)
            model = shard(sd, heads, groups, swiglu, biases, legacy, tp_rank, stage)
            torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 100,
                        "model": model, "rng_state": [{"random_rng_state": None}]},
                       os.path.join(d, "model_optim_rng.pt"))
    tensors = [{"name": n, "dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                "stride": list(t.stride()), "offset": 0,
                "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()} for n, t in sorted(sd.items())]
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump({"tensors": tensors}, f, indent=1)


def main():
    outdir = sys.argv[1]
    write(outdir, "mcore", heads=4, groups=2, swiglu=True, biases=False, dtype=torch.bfloat16,
          legacy=False, seed=1)
    write(outdir, "legacy", heads=4, groups=4, swiglu=False, biases=True, dtype=torch.float16,
          legacy=True, seed=2)


if __name__ == "__main__":
    main()
