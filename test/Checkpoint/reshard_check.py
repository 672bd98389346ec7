#!/usr/bin/env python3
"""Judges loom reshard's outputs with torch, independently of loom's own readers.

  reshard_check.py loss CKPT [CKPT ...]
      Computes a language-model loss on a fixed batch with each checkpoint and
      checks they agree (relative 1e-5). A Megatron mcore folder runs as Megatron
      would: every TP rank's fused QKV and [gate; up] shards, column- and
      row-parallel partial products summed over ranks, the vocabulary-parallel
      embedding and output layer with padding rows dropped, stage after stage. An
      HF folder (safetensors, read here by hand) or a torch state dict runs the
      same Llama-like model on full tensors. So equal losses mean each layout put
      every row where its format says it belongs.
  reshard_check.py same A B
      The two Megatron folders hold the same shards (mp_rank_* folders) with
      bit-identical tensors (dtype, shape, bytes) under the same keys, and the same
      optimizer state when A has one: masters, moments, step and group settings.
      With the distributed optimizer, the distrib_optim.pt files must be equal too.
  reshard_check.py optim CKPT TRUTH
      CKPT is a Megatron folder with optimizer state for the model make_megatron.py
      trained (TRUTH, its mcore-adam.truth.pt). Each shard must hold exactly what
      Megatron would save for its tp rank and stage (make_megatron.megatron_optimizer
      cuts the truth by Megatron's rules). Then each rank resumes: torch's AdamW over
      the rank's fp32 masters, grouped the Megatron way, loads the shard's optimizer
      state and takes one step; the masters must equal the truth's after the same step
      on full tensors, cut the same way, bit for bit. A shard saved with the
      distributed optimizer (distrib_optim.pt beside it) is read back as Megatron's
      DistributedOptimizer loads it: each parameter's fp32 master and moments from its
      place in the grad buffer (make_megatron.distopt_layout, with the bucketing the
      shard's args give), the step from the param_groups; the buffer's padding must be
      zero.
  reshard_check.py moe CKPT TRUTH
      CKPT is a Megatron folder of make_megatron.py --moe's mixture of experts (TRUTH,
      its moe.truth.pt of full Mixtral-named tensors). Its mp_rank folders must be the
      ones get_checkpoint_name gives for the args' tp, pp and ep, and each rank's model
      dict exactly what Megatron saves there (make_megatron.moe_shard cuts the truth):
      the same keys in registration order, every tensor bit-identical; the args' shared
      experts (moe_shared_expert_intermediate_size, moe_shared_expert_gate) those of
      the truth.
  reshard_check.py moe-optim CKPT TRUTH
      CKPT is a Megatron folder of make_megatron.py --moe --optim's trained mixture of
      experts (TRUTH, its moe-adam.truth.pt), saved with Megatron's ChainedOptimizer:
      its folders and models as `moe` requires, and under "optimizer" the list of the
      dense parameters' optimizer and the experts' (make_megatron.moe_optimizer cuts the
      truth by Megatron's rules). Each optimizer of each rank must hold exactly Megatron's
      state and resume as `optim` resumes one. With the distributed optimizer (the args'
      use_distributed_optimizer) each folder's distrib_optim.pt must be
      ChainedOptimizer.save_parameter_state's list: the dense buffer (None past
      expert-parallel rank 0, whose folder has it) and the experts' buffer, each read
      back by Megatron's rules for the args' bucketing and its data-parallel group; the
      groups' settings must be the run's.
      Both take the experts' own tensor parallelism from
      args.expert_tensor_parallel_size (etp, default tp): the folders must then be the
      ones Megatron's writing ranks give (make_megatron.writers: rank r writes folder
      (r % tp, (r / etp) % ep) with expert piece r % etp, for r below max(tp, etp * ep)),
      and distrib_optim.pt holds the dense states where r < tp, the experts' where
      r < etp * ep, None otherwise.
  reshard_check.py moe-hf DIR TRUTH
      DIR is a Hugging Face folder (safetensors read here by hand): it must hold
      exactly TRUTH's tensors, bit for bit in the same dtype, and a Mixtral config.json
      with the fixture's experts (and shared_expert_intermediate_size, Qwen2-MoE's key,
      when TRUTH has shared experts).
"""
import glob
import json
import os
import struct
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_like  # noqa: E402,F401  (fixtures may pickle its classes)

ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
             "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


def megatron_shards(root):
    """(tp, pp, args, {(tp_rank, stage): model dict})."""
    with open(os.path.join(root, "latest_checkpointed_iteration.txt")) as f:
        it = f.read().strip()
    iter_dir = os.path.join(root, "release" if it == "release" else f"iter_{int(it):07d}")
    shards = {}
    args = None
    for d in sorted(glob.glob(os.path.join(iter_dir, "mp_rank_*"))):
        parts = os.path.basename(d)[len("mp_rank_"):].split("_")
        tp_rank, stage = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        sd = torch.load(os.path.join(d, "model_optim_rng.pt"), map_location="cpu")
        shards[(tp_rank, stage)] = {k: v.float() for k, v in sd["model"].items()}
        args = args or sd["args"]
    tp = 1 + max(k[0] for k in shards)
    pp = 1 + max(k[1] for k in shards)
    assert args.tensor_model_parallel_size == tp and args.pipeline_model_parallel_size == pp, \
        f"{root}: args say tp={args.tensor_model_parallel_size} pp={args.pipeline_model_parallel_size}"
    return tp, pp, args, shards


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def attention(q, k, v, qpg):
    """q: [T, H, d]; k, v: [T, G, d]; head h uses group h // qpg; causal."""
    k = k.repeat_interleave(qpg, dim=1)
    v = v.repeat_interleave(qpg, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / q.shape[-1] ** 0.5
    t = q.shape[0]
    scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(t, -1)


def megatron_loss(root, tokens):
    tp, pp, a, shards = megatron_shards(root)
    heads, groups, hd = a.num_attention_heads, a.num_query_groups, a.kv_channels
    qpg, gpr = heads // groups, groups // tp
    padded, vocab = a.padded_vocab_size, a.vocab_size
    rows = padded // tp
    x = 0
    for r in range(tp):  # vocabulary-parallel embedding: each rank looks up its rows
        e = shards[(r, 0)]["embedding.word_embeddings.weight"]
        local = tokens - r * rows
        mine = (local >= 0) & (local < rows)
        x = x + e[local.clamp(0, rows - 1)] * mine.unsqueeze(-1)
    for stage in range(pp):
        s0 = shards[(0, stage)]
        layers = sorted({int(k.split(".")[2]) for k in s0 if k.startswith("decoder.layers.")})
        for i in layers:
            p = f"decoder.layers.{i}."
            n = rms(x, s0[p + "self_attention.linear_qkv.layer_norm_weight"])
            out = 0
            for r in range(tp):
                s = shards[(r, stage)]
                qkv = (n @ s[p + "self_attention.linear_qkv.weight"].T).reshape(-1, gpr, (qpg + 2) * hd)
                q = qkv[..., :qpg * hd].reshape(-1, gpr * qpg, hd)
                k = qkv[..., qpg * hd:(qpg + 1) * hd]
                v = qkv[..., (qpg + 1) * hd:]
                out = out + attention(q, k, v, qpg) @ s[p + "self_attention.linear_proj.weight"].T
            x = x + out
            n = rms(x, s0[p + "mlp.linear_fc1.layer_norm_weight"])
            out = 0
            for r in range(tp):
                s = shards[(r, stage)]
                gate, up = (n @ s[p + "mlp.linear_fc1.weight"].T).chunk(2, dim=-1)
                out = out + (torch.nn.functional.silu(gate) * up) @ s[p + "mlp.linear_fc2.weight"].T
            x = x + out
    last = shards[(0, pp - 1)]
    n = rms(x, last["decoder.final_layernorm.weight"])
    logits = torch.cat([n @ shards[(r, pp - 1)]["output_layer.weight"].T for r in range(tp)], -1)
    return torch.nn.functional.cross_entropy(logits[:-1, :vocab], tokens[1:]).item()


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[lo:hi]), dtype=ST_DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).float()
    return out


def full_tensors(path):
    if os.path.isdir(path):
        sd = {}
        for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
            sd.update(read_safetensors(f))
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        return sd, config
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in sd.items()}, None


def hf_loss(path, tokens, config):
    sd, own = full_tensors(path)
    config = own or config
    heads, groups = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config["head_dim"]
    x = sd["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        n = rms(x, sd[p + "input_layernorm.weight"])
        q = (n @ sd[p + "self_attn.q_proj.weight"].T).reshape(-1, heads, hd)
        k = (n @ sd[p + "self_attn.k_proj.weight"].T).reshape(-1, groups, hd)
        v = (n @ sd[p + "self_attn.v_proj.weight"].T).reshape(-1, groups, hd)
        x = x + attention(q, k, v, heads // groups) @ sd[p + "self_attn.o_proj.weight"].T
        n = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(n @ sd[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (n @ sd[p + "mlp.up_proj.weight"].T)) @ sd[p + "mlp.down_proj.weight"].T
    logits = rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T
    return torch.nn.functional.cross_entropy(logits[:-1], tokens[1:]).item()


def loss_cmd(paths):
    tokens = torch.randint(0, 250, (16,), generator=torch.Generator().manual_seed(7))
    config = None
    losses = []
    for path in paths:
        if os.path.exists(os.path.join(path, "latest_checkpointed_iteration.txt")):
            _, _, a, _ = megatron_shards(path)
            config = {"num_attention_heads": a.num_attention_heads,
                      "num_key_value_heads": a.num_query_groups, "head_dim": a.kv_channels,
                      "num_hidden_layers": a.num_layers}
            losses.append(megatron_loss(path, tokens))
        else:
            losses.append(hf_loss(path, tokens, config))
        print(f"{path}: loss {losses[-1]:.6f}")
    ok = all(abs(l - losses[0]) <= 1e-5 * abs(losses[0]) for l in losses)
    print("losses agree" if ok else "LOSSES DIFFER")
    return 0 if ok else 1


def shard_files(root):
    """mp_rank folder -> file, whatever the iteration (HF keeps none, so it restarts at 0)."""
    return {os.path.basename(os.path.dirname(p)): p
            for p in glob.glob(os.path.join(root, "*/mp_rank_*/model_optim_rng.pt"))}


def same_cmd(a, b):
    fa, fb = shard_files(a), shard_files(b)
    if sorted(fa) != sorted(fb):
        print(f"different shards: {sorted(fa)} vs {sorted(fb)}")
        return 1
    n = 0
    for rel in sorted(fa):
        whole_x = torch.load(fa[rel], map_location="cpu")
        whole_y = torch.load(fb[rel], map_location="cpu")
        x, y = whole_x["model"], whole_y["model"]
        if set(x) != set(y):
            print(f"{rel}: keys differ: {sorted(set(x) ^ set(y))}")
            return 1
        for k in x:
            if not same_tensor(x[k], y[k]):
                print(f"{rel}: {k} differs")
                return 1
            n += 1
        states = same_optimizer(rel, whole_x.get("optimizer"), whole_y.get("optimizer"))
        if states is None:
            return 1
        n += states
        dist = same_distopt(rel, fa[rel], fb[rel])
        if dist is None:
            return 1
        n += dist
    print(f"identical: {len(fa)} files, {n} tensors")
    return 0


def load_shards(root):
    """{relative mp_rank path: the whole saved dict}."""
    return {rel: torch.load(path, map_location="cpu") for rel, path in shard_files(root).items()}


def distopt_as_mixed(mm, entry, dist, model, stage, dp, bucket):
    """A distributed optimizer's state in the mixed-precision optimizer's form
    (fp32_from_fp16_params and torch's state_dict), read the way Megatron's
    DistributedOptimizer loads it: `entry` is its state_dict() from model_optim_rng.pt,
    `dist` its part of distrib_optim.pt, `model` the parameters it holds; states from
    the buffer laid out for `dp` and `bucket`, the step from the groups
    (load_state_dict). A string says what is wrong."""
    groups_saved = entry["optimizer"]["param_groups"]
    if set(entry["optimizer"]) != {"param_groups"} or \
            any("params" in g for g in groups_saved):
        return "the optimizer entry is not DistributedOptimizer.state_dict()'s"
    steps = {g.get("step") for g in groups_saved}
    if len(steps) != 1 or None in steps:
        return f"param_groups carry steps {steps}, Megatron wants one"
    states = mm.distopt_states(dist, model, stage, dp, bucket)
    if isinstance(states, str):
        return "distrib_optim.pt: " + states
    step = torch.tensor(float(steps.pop()))  # one per state: torch's Adam steps it in place
    groups = mm.megatron_groups(model)
    order = sum(groups, [])
    param_groups, at = [], 0
    for g, names in zip(groups_saved, groups):
        param_groups.append(dict(g, params=list(range(at, at + len(names)))))
        at += len(names)
    return {"fp32_from_fp16_params": [[states["fp32"][n] for n in g] for g in groups],
            "optimizer": {"state": {i: {"step": step.clone(), "exp_avg": states["exp_avg"][n],
                                        "exp_avg_sq": states["exp_avg_sq"][n]}
                                    for i, n in enumerate(order)},
                          "param_groups": param_groups}}


def plain(x):
    """Group settings compared by value: tuples as lists, numbers as floats."""
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    return float(x)


def step_of(x):
    return int(x.item()) if torch.is_tensor(x) else int(x)


def same_tensor(x, y):
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def same_tree(rel, x, y, where):
    """Equal object trees (dict keys in order, tensors bit for bit); the tensors compared
    or None."""
    if torch.is_tensor(x) or torch.is_tensor(y):
        if not (torch.is_tensor(x) and torch.is_tensor(y) and same_tensor(x, y)):
            print(f"{rel}: {where} differs")
            return None
        return 1
    if isinstance(x, dict) and isinstance(y, dict):
        if list(x) != list(y):
            print(f"{rel}: {where} has keys {list(x)} vs {list(y)}")
            return None
        n = 0
        for k in x:
            m = same_tree(rel, x[k], y[k], f"{where}[{k!r}]")
            if m is None:
                return None
            n += m
        return n
    if isinstance(x, list) and isinstance(y, list):  # ChainedOptimizer's lists
        if len(x) != len(y):
            print(f"{rel}: {where} lists {len(x)} vs {len(y)} items")
            return None
        n = 0
        for i, (a, b) in enumerate(zip(x, y)):
            m = same_tree(rel, a, b, f"{where}[{i}]")
            if m is None:
                return None
            n += m
        return n
    if x != y or type(x) != type(y):
        print(f"{rel}: {where} is {x!r} vs {y!r}")
        return None
    return 0


def same_distopt(rel, model_x, model_y):
    """The distrib_optim.pt beside two model_optim_rng.pt files agree; the tensors
    compared or None."""
    px, py = (os.path.join(os.path.dirname(p), "distrib_optim.pt") for p in (model_x, model_y))
    if os.path.exists(px) != os.path.exists(py):
        print(f"{rel}: only one has distrib_optim.pt")
        return None
    if not os.path.exists(px):
        return 0
    return same_tree(rel, torch.load(px), torch.load(py), "distrib_optim.pt")


def same_optimizer(rel, x, y):
    """Megatron optimizer entries x and y agree; returns the tensors compared or None."""
    if (x is None) != (y is None):
        print(f"{rel}: only one holds optimizer state")
        return None
    if x is None:
        return 0
    if isinstance(x, list) or isinstance(y, list):  # ChainedOptimizer: each in turn
        if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y)):
            print(f"{rel}: optimizer entries are not lists of as many optimizers")
            return None
        n = 0
        for a, b in zip(x, y):
            m = same_optimizer(rel, a, b)
            if m is None:
                return None
            n += m
        return n
    if ("fp32_from_fp16_params" in x) != ("fp32_from_fp16_params" in y):
        print(f"{rel}: one optimizer is distributed, the other not")
        return None
    if "fp32_from_fp16_params" not in x:  # the distributed optimizer: groups only
        gx, gy = x["optimizer"]["param_groups"], y["optimizer"]["param_groups"]
        if [{k: plain(v) for k, v in g.items()} for g in gx] != \
                [{k: plain(v) for k, v in g.items()} for g in gy]:
            print(f"{rel}: param_groups differ: {gx} vs {gy}")
            return None
        return 0
    n = 0
    fx, fy = x["fp32_from_fp16_params"], y["fp32_from_fp16_params"]
    if [len(g) for g in fx] != [len(g) for g in fy]:
        print(f"{rel}: fp32 master groups differ in size")
        return None
    for gx, gy in zip(fx, fy):
        for a, b in zip(gx, gy):
            if not same_tensor(a, b):
                print(f"{rel}: an fp32 master differs")
                return None
            n += 1
    sx, sy = x["optimizer"]["state"], y["optimizer"]["state"]
    if sorted(sx) != sorted(sy):
        print(f"{rel}: optimizer state indices differ")
        return None
    for i in sx:
        for k in ("exp_avg", "exp_avg_sq"):
            if not same_tensor(sx[i][k], sy[i][k]):
                print(f"{rel}: state {i} {k} differs")
                return None
            n += 1
        if step_of(sx[i]["step"]) != step_of(sy[i]["step"]):
            print(f"{rel}: state {i} step differs")
            return None
    px, py = x["optimizer"]["param_groups"], y["optimizer"]["param_groups"]
    if [{k: plain(v) for k, v in g.items()} for g in px] != \
            [{k: plain(v) for k, v in g.items()} for g in py]:
        print(f"{rel}: param_groups differ: {px} vs {py}")
        return None
    return n


def stepped_truth(mm, truth):
    """The truth's fp32 masters one more step on, with zero gradients, as every rank will
    take it: {name: tensor}."""
    names = [n for n in truth if n != "step"]
    full = {n: torch.nn.Parameter(truth[n]["fp32"].clone()) for n in names}
    opt = mm.adamw([[full[n] for n in names if not mm.no_weight_decay(n, full[n])],
                    [full[n] for n in names if mm.no_weight_decay(n, full[n])]])
    for n in names:
        opt.state[full[n]] = {"step": torch.tensor(float(truth["step"])),
                              "exp_avg": truth[n]["exp_avg"].clone(),
                              "exp_avg_sq": truth[n]["exp_avg_sq"].clone()}
        full[n].grad = torch.zeros_like(full[n])
    opt.step()
    return {n: full[n].detach() for n in names}


def judge_optimizer(mm, got, want, model, expected, step):
    """One optimizer of a rank, both in the mixed-precision form: `got` must hold
    exactly Megatron's `want` for the parameters of `model` (registration order), and
    resume: torch's AdamW over its fp32 masters, grouped the Megatron way, loads it and
    steps once to `expected` ({name: the stepped truth's cut}), bit for bit. Returns
    what is wrong, or None."""
    if got is None or [len(g) for g in got["fp32_from_fp16_params"]] != \
            [len(g) for g in want["fp32_from_fp16_params"]]:
        return "no optimizer state, or groups of other sizes than Megatron's"
    for a, b in zip(sum(got["fp32_from_fp16_params"], []), sum(want["fp32_from_fp16_params"], [])):
        if not same_tensor(a, b):
            return "an fp32 master is not Megatron's shard of the truth"
    if [g["params"] for g in got["optimizer"]["param_groups"]] != \
            [g["params"] for g in want["optimizer"]["param_groups"]]:
        return "param_groups hold other indices than Megatron's"
    for i, s in want["optimizer"]["state"].items():
        if i not in got["optimizer"]["state"] or \
                not all(same_tensor(got["optimizer"]["state"][i][k], s[k]) for k in ("exp_avg", "exp_avg_sq")) \
                or step_of(got["optimizer"]["state"][i]["step"]) != step:
            return f"state {i} is not Megatron's shard of the truth"
    # Resume: load the state into the rank's own AdamW and step once.
    groups = mm.megatron_groups(model)
    masters = dict(zip(sum(groups, []), sum(got["fp32_from_fp16_params"], [])))
    params = {n: torch.nn.Parameter(masters[n].clone()) for n in model}
    rank_opt = mm.adamw([[params[n] for n in g] for g in groups])
    rank_opt.load_state_dict(got["optimizer"])
    for g, settings in zip(rank_opt.param_groups, mm.GROUP_SETTINGS):
        g.update(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=settings["weight_decay"])
    for p in params.values():
        p.grad = torch.zeros_like(p)
    rank_opt.step()
    for n in model:
        if not torch.equal(params[n].detach(), expected[n]):
            return f"{n} resumes to other values than the truth"
    return None


def optim_cmd(root, truth_path):
    import make_megatron as mm
    truth = torch.load(truth_path)
    files = shard_files(root)
    shards = load_shards(root)
    tp, pp = 1, 1
    for rel in shards:
        parts = rel[len("mp_rank_"):].split("_")
        tp, pp = max(tp, int(parts[0]) + 1), max(pp, int(parts[1]) + 1 if len(parts) > 1 else 1)
    stepped = stepped_truth(mm, truth)
    checked = distributed = 0
    for rel, sd in sorted(shards.items()):
        parts = rel[len("mp_rank_"):].split("_")
        tp_rank, stage = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        model, optimizer = mm.megatron_optimizer(truth, tp_rank, stage, tp, pp)
        if list(sd["model"]) != list(model) or \
                not all(same_tensor(sd["model"][k], model[k]) for k in model):
            print(f"{rel}: the model differs from Megatron's shard of the truth")
            return 1
        got = sd.get("optimizer")
        dist_path = os.path.join(os.path.dirname(files[rel]), "distrib_optim.pt")
        if got is not None and os.path.exists(dist_path):
            got = distopt_as_mixed(mm, got, torch.load(dist_path), model, stage,
                                   *mm.distopt_bucket_size(sd["args"]))
            if isinstance(got, str):
                print(f"{rel}: {got}")
                return 1
            distributed += 1
        expected = mm.shard(stepped, mm.MCORE["heads"], mm.MCORE["groups"], mm.MCORE["swiglu"],
                            mm.MCORE["biases"], mm.MCORE["legacy"], tp_rank, stage, tp, pp)
        wrong = judge_optimizer(mm, got, optimizer, model, expected, truth["step"])
        if wrong:
            print(f"{rel}: {wrong}")
            return 1
        checked += len(model)
    kind = "" if not distributed else \
        "distributed " if distributed == len(shards) else "PARTLY distributed "
    print(f"megatron {kind}optimizer state: {len(shards)} shards (tp={tp}, pp={pp}), {checked} "
          f"parameters resume as the truth does, step {truth['step']}")
    return 0


def weights_of(truth):
    """{name: tensor} of a truth of full tensors, or of a trained one ({name: {"param",
    ...}, "step"}): its bf16 parameters."""
    return {n: v["param"] if isinstance(v, dict) else v for n, v in truth.items() if n != "step"}


def moe_checkpoint(mm, root, truth_path):
    """(truth, args, (tp, pp, ep, grouped), [(mp_rank folder, file, (tp rank, stage,
    ep rank))]) of a Megatron folder of the truth's mixture of experts, or None after
    saying what is wrong: the args must describe the truth's experts and the folders
    be the ones get_checkpoint_name gives for the args' tp, pp and ep."""
    truth = torch.load(truth_path)
    files = shard_files(root)
    args = torch.load(files[min(files)], map_location="cpu")["args"]
    tp, pp, ep = (args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                  args.expert_model_parallel_size)
    if (args.num_experts, args.moe_router_topk, args.moe_ffn_hidden_size) != \
            (mm.EXPERTS, mm.TOPK, mm.MOE_FFN):
        print(f"args: num_experts {args.num_experts}, moe_router_topk {args.moe_router_topk}, "
              f"moe_ffn_hidden_size {args.moe_ffn_hidden_size}")
        return None
    # Shared experts (SharedExpertMLP) as the truth has them: their size and gate.
    shared = (mm.SHARED_FFN if "model.layers.0.mlp.shared_expert.up_proj.weight" in truth
              else None, "model.layers.0.mlp.shared_expert_gate.weight" in truth)
    got = (getattr(args, "moe_shared_expert_intermediate_size", None),
           bool(getattr(args, "moe_shared_expert_gate", False)))
    if got != shared:
        print(f"args: moe_shared_expert_intermediate_size, moe_shared_expert_gate {got}, "
              f"expected {shared}")
        return None
    # Dense layers between MoE layers as the truth has them (a layer without a
    # router): args.moe_layer_freq must give that pattern (an int N: every Nth layer
    # from 0; a list: 1 or 0 per layer), args.ffn_hidden_size their MLP's rows.
    names = weights_of(truth)
    routed = [f"model.layers.{i}.block_sparse_moe.gate.weight" in names for i in range(mm.LAYERS)]
    freq = getattr(args, "moe_layer_freq", 1)
    pattern = ([i % freq == 0 for i in range(mm.LAYERS)] if isinstance(freq, int)
               else [bool(x) for x in freq])
    if pattern != routed:
        print(f"args: moe_layer_freq {freq} gives MoE layers {pattern}, the truth's are {routed}")
        return None
    if not all(routed) and args.ffn_hidden_size != mm.FFN:
        print(f"args: ffn_hidden_size {args.ffn_hidden_size}, the dense layers have {mm.FFN} rows")
        return None
    # The folders the writing ranks give (make_megatron.writers), each with its writer:
    # every (tp rank, ep rank) when the experts split over tp, fewer when over fewer
    # expert-tensor-parallel ranks.
    etp = getattr(args, "expert_tensor_parallel_size", None) or tp
    ranks = {mm.rank_dir(t, p, e, pp, ep): (t, p, e, (r, piece))
             for p in range(pp) for r, t, e, piece in mm.writers(tp, ep, etp)}
    if sorted(ranks) != sorted(files):
        print(f"folders {sorted(files)}, expected {sorted(ranks)} for tp={tp} pp={pp} ep={ep}"
              f" etp={etp}")
        return None
    return (truth, args, (tp, pp, ep, bool(getattr(args, "moe_grouped_gemm", False)), etp),
            [(rel, files[rel], ranks[rel]) for rel in sorted(ranks)])


def same_model(rel, model, want):
    """A rank's model dict is `want`: the same keys in order, every tensor bit-identical;
    the tensors compared, or None."""
    if list(model) != list(want):
        print(f"{rel}: keys {list(model)}\n  expected {list(want)}")
        return None
    for k in want:
        if not same_tensor(model[k], want[k]):
            print(f"{rel}: {k} differs from the truth's cut")
            return None
    return len(want)


def moe_cmd(root, truth_path):
    import make_megatron as mm
    checkpoint = moe_checkpoint(mm, root, truth_path)
    if checkpoint is None:
        return 1
    truth, args, (tp, pp, ep, grouped, etp), ranks = checkpoint
    truth = weights_of(truth)
    n = 0
    for rel, path, (t, p, e, (_, piece)) in ranks:
        model = torch.load(path, map_location="cpu")["model"]
        checked = same_model(rel, model, mm.moe_shard(truth, t, p, e, tp, pp, ep, grouped,
                                                      args.padded_vocab_size, etp, piece))
        if checked is None:
            return 1
        n += checked
    print(f"megatron moe: {len(ranks)} shards (tp={tp}, pp={pp}, ep={ep}{etp_text(tp, etp)}), "
          f"{n} tensors are the truth's cut")
    return 0


def etp_text(tp, etp):
    """", etp=N" when the experts split over other ranks than tp."""
    return f", etp={etp}" if etp != tp else ""


def moe_optim_cmd(root, truth_path):
    import make_megatron as mm
    checkpoint = moe_checkpoint(mm, root, truth_path)
    if checkpoint is None:
        return 1
    truth, args, (tp, pp, ep, grouped, etp), ranks = checkpoint
    distributed = bool(getattr(args, "use_distributed_optimizer", False))
    dp, bucket = mm.distopt_bucket_size(args)
    stepped = stepped_truth(mm, truth)
    resumed = [0, 0]
    for rel, path, (t, p, e, (writer, piece)) in ranks:
        sd = torch.load(path, map_location="cpu")
        model, optimizers = mm.moe_optimizer(truth, t, p, e, tp, pp, ep, grouped,
                                             args.padded_vocab_size, etp, piece)
        if same_model(rel, sd["model"], model) is None:
            return 1
        got = sd.get("optimizer")
        if not isinstance(got, list) or len(got) != 2:
            print(f"{rel}: the optimizer entry is not ChainedOptimizer's list of the dense "
                  f"and the experts' optimizers")
            return 1
        dist = None
        if distributed:
            # Each optimizer's states where the writer is its data-parallel rank 0
            # (dense: below tp; experts: below etp * ep), None elsewhere.
            dist_path = os.path.join(os.path.dirname(path), "distrib_optim.pt")
            dist = torch.load(dist_path) if os.path.exists(dist_path) else None
            held = (writer < tp, writer < etp * ep)
            if not isinstance(dist, list) or len(dist) != 2 or \
                    any((d is None) == h for d, h in zip(dist, held)):
                want = ", ".join(f"{what} {'of DP rank 0' if h else 'None'}"
                                 for what, h in zip(("dense states", "experts' states"), held))
                print(f"{rel}: distrib_optim.pt is not ChainedOptimizer.save_parameter_state's "
                      f"[{want}]")
                return 1
        expected = mm.moe_shard(stepped, t, p, e, tp, pp, ep, grouped, args.padded_vocab_size,
                                etp, piece)
        for o, (part, want) in enumerate(zip(mm.moe_parts(model), optimizers)):
            what = ("the experts'" if o else "the dense") + " optimizer"
            got_o = got[o]
            if distributed:
                # The experts' buffers are padded for the expert-data-parallel group
                # (dp / ep ranks; args written without data_parallel_size say dp 1).
                group_dp = max(dp * tp // (etp * ep), 1) if o else dp
                groups = mm.as_distopt(part, want, p, group_dp, bucket)[0]["optimizer"]["param_groups"]
                if [{k: plain(v) for k, v in g.items()} for g in got_o["optimizer"]["param_groups"]] != \
                        [{k: plain(v) for k, v in g.items()} for g in groups]:
                    print(f"{rel}: {what}'s param_groups are not the run's: {got_o}")
                    return 1
                if dist[o] is None:
                    continue  # another folder's writer is this optimizer's DP rank 0
                got_o = distopt_as_mixed(mm, got_o, dist[o], part, p, group_dp, bucket)
                if isinstance(got_o, str):
                    print(f"{rel}: {what}: {got_o}")
                    return 1
            wrong = judge_optimizer(mm, got_o, want, part, expected, truth["step"])
            if wrong:
                print(f"{rel}: {what}: {wrong}")
                return 1
            resumed[o] += len(part)
    print(f"megatron moe {'distributed ' if distributed else ''}optimizer state: {len(ranks)} "
          f"shards (tp={tp}, pp={pp}, ep={ep}{etp_text(tp, etp)}), "
          f"ChainedOptimizer [dense, experts]: "
          f"{resumed[0]} dense and {resumed[1]} expert parameters resume as the truth does, "
          f"step {truth['step']}")
    return 0


def moe_hf_cmd(path, truth_path):
    truth = weights_of(torch.load(truth_path))
    got = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            data = fh.read()
        for name, e in header.items():
            if name != "__metadata__":
                lo, hi = e["data_offsets"]
                got[name] = torch.frombuffer(bytearray(data[lo:hi]),
                                             dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"])
    if sorted(got) != sorted(truth):
        print(f"names differ: {sorted(set(got) ^ set(truth))[:6]}")
        return 1
    for name in truth:
        if not same_tensor(got[name], truth[name]):
            print(f"{name} differs")
            return 1
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    import make_megatron as mm
    shared = "model.layers.0.mlp.shared_expert.up_proj.weight" in truth
    # Dense layers between MoE layers as Qwen2-MoE's config lists them: mlp_only_layers
    # (with decoder_sparse_step 1), intermediate_size theirs, moe_intermediate_size an
    # expert's.
    dense = [i for i in range(mm.LAYERS)
             if f"model.layers.{i}.block_sparse_moe.gate.weight" not in truth]
    want = {"model_type": "mixtral", "num_local_experts": mm.EXPERTS,
            "num_experts_per_tok": mm.TOPK,
            "intermediate_size": mm.FFN if dense else mm.MOE_FFN,
            "moe_intermediate_size": mm.MOE_FFN if dense else None,
            "mlp_only_layers": dense or None, "decoder_sparse_step": 1 if dense else None,
            "shared_expert_intermediate_size": mm.SHARED_FFN if shared else None}
    if any(config.get(k) != v for k, v in want.items()):
        print(f"config.json: {config}")
        return 1
    print(f"hf: {len(truth)} Mixtral tensors equal the truth, config says "
          f"{mm.EXPERTS} experts, top-{mm.TOPK}" +
          (f", shared experts of {mm.SHARED_FFN} rows" if shared else "") +
          (f", dense layers {dense}" if dense else ""))
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "moe":
        return moe_cmd(sys.argv[2], sys.argv[3])
    if cmd == "moe-optim":
        return moe_optim_cmd(sys.argv[2], sys.argv[3])
    if cmd == "moe-hf":
        return moe_hf_cmd(sys.argv[2], sys.argv[3])
    if cmd == "optim":
        return optim_cmd(sys.argv[2], sys.argv[3])
    if cmd == "loss":
        return loss_cmd(sys.argv[2:])
    if cmd == "same":
        return same_cmd(sys.argv[2], sys.argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
