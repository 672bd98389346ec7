#!/usr/bin/env python3
"""Trains a tiny MoE GPT a few Adam steps and saves it the way DeepSpeed's MoE does.

Usage: make_deepspeed_moe.py OUTDIR

DeepSpeed is not packaged by Debian, so this lays the files out by the code it
follows (microsoft/DeepSpeed 38327e07, microsoft/Megatron-DeepSpeed f4157bea):

  * the model is Megatron-DeepSpeed's GPT with 4 layers, layers 1 and 3 MoE
    (get_num_experts_per_layer, expert_interval 2) of 4 experts each: DeepSpeed's
    MoE(ParallelMLP) names them ...layers.N.mlp.deepspeed_moe.gate.wg.weight and
    ...mlp.deepspeed_moe.experts.deepspeed_experts.E.dense_h_to_4h.weight (moe/layer.py,
    moe/experts.py), a top-1 gate routing each token to one expert;
  * optimizer groups as Megatron-DeepSpeed's get_param_groups makes them (weight decay
    on matrices only), then split_params_into_different_moe_groups_for_optimizer:
    the experts of each group in a group of their own, appended;
  * engine.py _save_moe_checkpoint: each MoE layer's (numbered among the MoE modules)
    expert E in layer_L_expert_E_mp_rank_00_model_states.pt, {global name: tensor};
    mp_rank_00_model_states.pt the rest of the module, num_experts and no
    param_shapes; expp_rank_R_mp_rank_00_optim_states.pt {'optimizer': None} for each
    expert-parallel rank R (ZeRO keeps the optimizer);
  * ZeRO-1 (stage_1_and_2.py): dense groups partitioned over dp as without MoE; a
    group of experts holds dp rank r's local experts (those of expert-parallel rank
    r % ep, named by their local index, as param_slice_mappings names them) and is
    partitioned over its expert-data-parallel group, dp / ep ranks, where r is rank
    r // ep (utils/groups.py _get_expert_parallel_ranks); partition_count per group.

  moe/       ZeRO-1, dp=4, ep=2
  moe_bf16/  BF16_Optimizer (bf16_zero_pp_rank_* files, fp32 partitions with padding),
             dp=2, ep=2
  truth.pt   {name: {"param" (bf16), "fp32", "exp_avg", "exp_avg_sq"}}, "step", and
             "groups" (the optimizer groups, experts under their global names),
             "num_experts" and "moe_modules".
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_deepspeed import optim_file_name, partitions, save_optim_states, truth_of  # noqa: E402

STEPS, HIDDEN, FFN, VOCAB, SEQ, LAYERS, EXPERTS = 3, 8, 16, 32, 6, 4, 4
MOE_LAYERS = [i for i in range(LAYERS) if (i + 1) % 2 == 0]
EXPERT_PREFIX = ".deepspeed_moe.experts.deepspeed_experts."


def layer_prefix(i):
    return f"language_model.encoder.layers.{i}."


def mlp_shapes(prefix):
    return [(prefix + "dense_h_to_4h.weight", (FFN, HIDDEN)), (prefix + "dense_h_to_4h.bias", (FFN,)),
            (prefix + "dense_4h_to_h.weight", (HIDDEN, FFN)), (prefix + "dense_4h_to_h.bias", (HIDDEN,))]


def shapes():
    """named_parameters() order of the whole model, experts under their global index."""
    out = [("language_model.embedding.word_embeddings.weight", (VOCAB, HIDDEN)),
           ("language_model.embedding.position_embeddings.weight", (SEQ, HIDDEN))]
    for i in range(LAYERS):
        p = layer_prefix(i)
        out += [(p + "input_layernorm.weight", (HIDDEN,)), (p + "input_layernorm.bias", (HIDDEN,)),
                (p + "self_attention.query_key_value.weight", (3 * HIDDEN, HIDDEN)),
                (p + "self_attention.query_key_value.bias", (3 * HIDDEN,)),
                (p + "self_attention.dense.weight", (HIDDEN, HIDDEN)),
                (p + "self_attention.dense.bias", (HIDDEN,)),
                (p + "post_attention_layernorm.weight", (HIDDEN,)),
                (p + "post_attention_layernorm.bias", (HIDDEN,))]
        if i in MOE_LAYERS:
            out.append((p + "mlp.deepspeed_moe.gate.wg.weight", (EXPERTS, HIDDEN)))
            for e in range(EXPERTS):
                out += mlp_shapes(f"{p}mlp{EXPERT_PREFIX}{e}.")
        else:
            out += mlp_shapes(p + "mlp.")
    out += [("language_model.encoder.final_layernorm.weight", (HIDDEN,)),
            ("language_model.encoder.final_layernorm.bias", (HIDDEN,))]
    return collections.OrderedDict(out)


SHAPES = shapes()


def is_expert(name):
    return EXPERT_PREFIX in name


def groups():
    """get_param_groups (weight decay, no weight decay), then the experts of each in a
    group of their own."""
    wd = [n for n, s in SHAPES.items() if len(s) > 1]
    no_wd = [n for n, s in SHAPES.items() if len(s) == 1]
    dense = [[n for n in g if not is_expert(n)] for g in (wd, no_wd)]
    return dense + [[n for n in g if is_expert(n)] for g in (wd, no_wd)]


GROUPS = groups()


def train():
    gen = torch.Generator().manual_seed(7)
    params = {n: torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.5) for n, s in SHAPES.items()}
    opt = torch.optim.Adam([{"params": [params[n] for n in g], "weight_decay": wd}
                            for g, wd in zip(GROUPS, (0.1, 0.0, 0.1, 0.0))], lr=1e-2)
    norm = torch.nn.functional.layer_norm

    def mlp(x, prefix):
        x = torch.nn.functional.gelu(x @ params[prefix + "dense_h_to_4h.weight"].T
                                     + params[prefix + "dense_h_to_4h.bias"])
        return x @ params[prefix + "dense_4h_to_h.weight"].T + params[prefix + "dense_4h_to_h.bias"]

    for _ in range(STEPS):
        tokens = torch.randint(0, VOCAB, (SEQ,), generator=gen)
        h = params["language_model.embedding.word_embeddings.weight"][tokens] \
            + params["language_model.embedding.position_embeddings.weight"]
        for i in range(LAYERS):
            p = lambda n: params[layer_prefix(i) + n]  # noqa: E731
            x = norm(h, (HIDDEN,), p("input_layernorm.weight"), p("input_layernorm.bias"))
            q, k, v = (x @ p("self_attention.query_key_value.weight").T
                       + p("self_attention.query_key_value.bias")).chunk(3, dim=-1)
            attn = torch.softmax(q @ k.T / math.sqrt(HIDDEN), dim=-1) @ v
            h = h + attn @ p("self_attention.dense.weight").T + p("self_attention.dense.bias")
            x = norm(h, (HIDDEN,), p("post_attention_layernorm.weight"), p("post_attention_layernorm.bias"))
            if i in MOE_LAYERS:  # top-1 gating: each token through its expert, scaled by its gate
                gates = torch.softmax(x @ p("mlp.deepspeed_moe.gate.wg.weight").T, dim=-1)
                choice = gates.argmax(dim=-1)
                out = torch.stack([mlp(x[t], f"{layer_prefix(i)}mlp{EXPERT_PREFIX}{int(e)}.") * gates[t, e]
                                   for t, e in enumerate(choice)])
                # Every expert trains: a small load-balancing term over all of them.
                out = out + 1e-3 * sum(mlp(x, f"{layer_prefix(i)}mlp{EXPERT_PREFIX}{e}.").mean()
                                       for e in range(EXPERTS))
                h = h + out
            else:
                h = h + mlp(x, layer_prefix(i) + "mlp.")
        h = norm(h, (HIDDEN,), params["language_model.encoder.final_layernorm.weight"],
                 params["language_model.encoder.final_layernorm.bias"])
        logits = h @ params["language_model.embedding.word_embeddings.weight"].T
        loss = torch.nn.functional.cross_entropy(logits, tokens.roll(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    truth = truth_of(params, opt)
    truth["groups"] = GROUPS
    truth["num_experts"] = [EXPERTS] * len(MOE_LAYERS)
    truth["moe_modules"] = [layer_prefix(i) + "mlp" for i in MOE_LAYERS]
    return truth


def local_name(name, ep_rank, ep):
    """The name dp ranks of expert-parallel rank ep_rank give a global expert, or None
    when the expert is not theirs."""
    module, rest = name.split(EXPERT_PREFIX)
    expert, tail = rest.split(".", 1)
    per_rank = EXPERTS // ep
    if int(expert) // per_rank != ep_rank:
        return None
    return f"{module}{EXPERT_PREFIX}{int(expert) - ep_rank * per_rank}.{tail}"


def save(truth, root, dp, ep, bf16_optimizer):
    args = argparse.Namespace(num_layers=LAYERS, hidden_size=HIDDEN, ffn_hidden_size=FFN,
                              num_attention_heads=2, padded_vocab_size=VOCAB,
                              tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
                              swiglu=False, bf16=True, num_experts=[EXPERTS], expert_interval=2,
                              moe_expert_parallel_size=ep, topk=1, mlp_type="standard",
                              create_moe_param_group=True)
    # _save_moe_checkpoint: the module without its experts, num_experts, no param_shapes.
    module = collections.OrderedDict((n, truth[n]["param"]) for n in SHAPES if not is_expert(n))
    torch.save({"module": module, "lr_scheduler": None, "data_sampler": None, "random_ltd": None,
                "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": STEPS,
                "global_samples": STEPS * 8, "dp_world_size": dp, "mp_world_size": 1,
                "num_experts": truth["num_experts"], "args": args, "checkpoint_version": 3.0,
                "iteration": STEPS}, os.path.join(root, "mp_rank_00_model_states.pt"))
    for layer, module_name in enumerate(truth["moe_modules"]):
        for e in range(EXPERTS):
            prefix = f"{module_name}{EXPERT_PREFIX}{e}."
            torch.save({n: truth[n]["param"].clone() for n in SHAPES if n.startswith(prefix)},
                       os.path.join(root, f"layer_{layer}_expert_{e}_mp_rank_00_model_states.pt"))
    for r in range(ep):
        torch.save({"optimizer": None}, os.path.join(root, f"expp_rank_{r}_mp_rank_00_optim_states.pt"))
    # Each group's partitions: dense ones over dp; a group of experts, per expert-parallel
    # rank, its local experts over the dp / ep ranks of its expert-data-parallel group.
    edp = dp // ep
    per_group, counts, settings = [], [], []
    for g, names in enumerate(GROUPS):
        settings.append({"weight_decay": 0.1 if g % 2 == 0 else 0.0, "name": "dense"})
        if not is_expert(names[0]):
            per_group.append(partitions(truth, names, bf16_optimizer, dp))
            counts.append(dp)
            continue
        settings[-1].update({"name": f"ep_size_{ep}", "moe": True})
        per_ep = []
        for ep_rank in range(ep):
            local = {local_name(n, ep_rank, ep): truth[n] for n in names if local_name(n, ep_rank, ep)}
            per_ep.append(partitions(local, list(local), bf16_optimizer, edp))
        per_group.append([per_ep[r % ep][r // ep] for r in range(dp)])
        counts.append(edp)
    step = torch.tensor(float(STEPS)) if bf16_optimizer else STEPS
    for r in range(dp):
        save_optim_states([group[r] for group in per_group], counts, bf16_optimizer, step,
                          os.path.join(root, optim_file_name(r, 0, bf16_optimizer)), settings)


def main():
    out = sys.argv[1]
    truth = train()
    os.makedirs(out, exist_ok=True)
    torch.save(truth, os.path.join(out, "truth.pt"))
    for name, dp, ep, bf16_optimizer in (("moe", 4, 2, False), ("moe_bf16", 2, 2, True)):
        root = os.path.join(out, name, "global_step3")
        os.makedirs(root)
        with open(os.path.join(out, name, "latest"), "w") as f:
            f.write("global_step3")
        save(truth, root, dp, ep, bf16_optimizer)


if __name__ == "__main__":
    main()
