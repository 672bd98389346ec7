#!/usr/bin/env python3
"""Judges DeepSpeed-layout and universal outputs of loom against make_deepspeed.py's truth.

  check_deepspeed.py consolidate DIR... TRUTH
      Rebuilds the full fp32 masters, exp_avg and exp_avg_sq from DIR's ZeRO files
      by DeepSpeed's documented protocol (the one its zero_to_fp32.py follows:
      ZeRO-1/2 and BF16_Optimizer concatenate the rank partitions of each group and
      read the parameters off in param_shapes order; ZeRO-3 concatenates each
      parameter's rank parts and drops the padding; with tensor parallelism each mp
      rank's slices are joined as ds_to_universal.py joins them, SwiGLU's
      dense_h_to_4h as all gates, then all ups; a pipeline's parameters are named by
      GPTModelPipe's layer indices, its 16-bit weights are read from the
      layer_XX-model_YY files, and the tied embedding's copies on later stages are
      skipped as ds_to_universal.py skips them, their word embeddings checked equal to
      the first stage's), written here without loom or DeepSpeed, and compares them
      and the 16-bit parameters and Adam's step with TRUTH exactly; one line per DIR
      (one Python start for several outputs).
  check_deepspeed.py tied-copies DIR
      For a pipeline whose head is tied to its embedding: whether each later stage's
      copy of the embedding's parameters equals the first stage's (fp32 and moments).
  check_deepspeed.py universal FILE TRUTH
      The universal HDF5 file, read with h5py, holds TRUTH's tensors bit for bit
      (the parameter as the fp32 master when the source was ZeRO-3) and the step.
  check_deepspeed.py ds-universal DIR TRUTH
      DeepSpeed's universal folder, read the way its universal loader reads it
      (latest_universal -> tag; zero/<param>/{fp32,exp_avg,exp_avg_sq}.pt holding
      {"param": tensor}, step.pt; the module in mp_rank_00_model_states.pt), holds
      TRUTH's tensors bit for bit.
  check_deepspeed.py weights-only DIR
      Loads every .pt file under DIR with torch.load(weights_only=True); the files it
      refuses must name no global but the two DeepSpeed's own format pickles:
      Megatron-DeepSpeed's argparse.Namespace of args (model states) and DeepSpeed's
      fragment_address (param_slice_mappings, which ds_to_universal.py reads by
      attribute) — torch 1.13 has no way to allow them.
  check_deepspeed.py moe DIR TRUTH
      A DeepSpeed MoE folder (make_deepspeed_moe.py's layout) against TRUTH, every
      file predicted here from TRUTH's groups by DeepSpeed's rules, without loom: the
      module's and each layer_L_expert_E file's 16-bit weights, and per dp rank r and
      group the partition DeepSpeed's ZeRO-1/2 or BF16_Optimizer keeps — a dense group
      cut over dp, where r is rank r; a group of experts holding the experts of
      expert-parallel rank r % ep under their local names, cut over dp / ep, where r
      is rank r // ep — fp32 (with its padding only under BF16), exp_avg, exp_avg_sq,
      param_slice_mappings, group_paddings, partition_count and the step, bit for
      bit; ep is the number of expp_rank_R files.
  check_deepspeed.py same A B
      The two folders hold the same .pt files with identical tensors (ZeRO-3's empty
      module placeholders aside) and equal Adam steps (ints or tensors).
"""
import glob
import math
import os
import re
import sys

import h5py
import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_like  # noqa: E402,F401


def tag_dir(root):
    with open(os.path.join(root, "latest")) as f:
        return os.path.join(root, f.read().strip())


def optim_files(d):
    """{mp rank: [dp rank 0's file, ...]}: [bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt."""
    found = {}
    for p in glob.glob(os.path.join(d, "*zero_pp_rank_*_mp_rank_*_optim_states.pt")):
        m = re.search(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states", p)
        found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    return {mp: [ranks[r] for r in sorted(ranks)] for mp, ranks in sorted(found.items())}


def consolidate_rank(d, mp, files, layer_tp=None):
    """One mp rank's tensors (its tensor-parallel slices) from its dp ranks' files, by
    the names param_shapes gives. A pipeline stage (layer_tp: its tp rank) keeps its
    16-bit weights in layer files rather than the module."""
    optim = [torch.load(p)["optimizer_state_dict"] for p in files]
    # BF16_Optimizer records no stage: it partitions as ZeRO-1 (ds_to_universal.py
    # reads a missing zero_stage as 1).
    stage = int(optim[0].get("zero_stage", 1))
    model_file = os.path.join(d, f"mp_rank_{mp:02d}_model_states.pt" if stage <= 2
                              else f"zero_pp_rank_0_mp_rank_{mp:02d}_model_states.pt")
    model = torch.load(model_file)

    def weight(name):
        if layer_tp is None:
            return model["module"][name]
        head, _, key = name.partition(".")
        if head == "tied_modules":
            index, key = 1, key.split(".", 1)[1]
        else:
            index = int(head)
        path = os.path.join(d, f"layer_{index:02d}-model_{layer_tp:02d}-model_states.pt")
        return torch.load(path)[key] if os.path.exists(path) else None

    dp = len(optim)
    out = {}
    if stage <= 2:
        base = "base_optimizer_state"
        for g, shapes in enumerate(model["param_shapes"]):
            vecs = {"fp32": torch.cat([o["single_partition_of_fp32_groups"][g] for o in optim])}
            for k in ("exp_avg", "exp_avg_sq"):
                vecs[k] = torch.cat([o[base]["state"][g][k] for o in optim])
            offset = 0
            for name, shape in shapes.items():
                n = math.prod(shape)
                out[name] = {k: v.narrow(0, offset, n).view(shape) for k, v in vecs.items()}
                out[name]["param"] = weight(name)
                offset += n
            align = 2 * dp
            assert align * math.ceil(offset / align) == align * math.ceil(vecs["fp32"].numel() / align), \
                f"group {g}: consumed {offset} of {vecs['fp32'].numel()}"
        step = optim[0][base]["state"][0]["step"]
    else:
        base = "optimizer_state_dict"
        flat = {"fp32": [torch.cat(o["fp32_flat_groups"]) for o in optim]}
        for k in ("exp_avg", "exp_avg_sq"):
            flat[k] = [torch.cat([o[base]["state"][g][k] for g in sorted(o[base]["state"])]) for o in optim]
        offset = 0
        for shapes in model["param_shapes"]:
            for name, shape in shapes.items():
                n = math.prod(shape)
                part = math.ceil(n / dp)
                out[name] = {k: torch.cat([r[offset:offset + part] for r in v])[:n].view(shape)
                             for k, v in flat.items()}
                out[name]["param"] = out[name]["fp32"]
                offset += part
        assert offset == flat["fp32"][0].numel(), f"consumed {offset} of {flat['fp32'][0].numel()}"
        step = optim[0][base]["state"][0]["step"]
    return out, int(step), getattr(model.get("args"), "swiglu", False)


def join(slices, name, swiglu):
    """ds_to_universal.py's merge_tp_slices: replicated slices must be equal, SwiGLU's
    [gate; up] slices join as all gates then all ups, the others concatenate on their
    dimension."""
    if len(slices) == 1:
        return slices[0]
    if swiglu and megatron_like.is_swiglu_fc1(name):
        halves = [s.chunk(2, dim=0) for s in slices]
        return torch.cat([torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])])
    dim = megatron_like.megatron_deepspeed_tp_dim(name)
    if dim is None:
        assert all(torch.equal(slices[0], s) for s in slices), f"{name}: replicas differ"
        return slices[0]
    return torch.cat(slices, dim=dim)


def rank_tensors(root):
    """Per tp rank, the slices by GPTModel name (or the names param_shapes gives outside
    a pipeline), the later stages' tied copies as (tp rank, name, states), the step and
    SwiGLU."""
    d = tag_dir(root)
    pipeline = bool(glob.glob(os.path.join(d, "layer_*-model_*-model_states.pt")))
    files = optim_files(d)
    tp = len(glob.glob(os.path.join(d, "layer_01-model_*-model_states.pt"))) if pipeline else len(files)
    per_tp, copies = [{} for _ in range(tp)], []
    for mp, rank_files in files.items():
        stage, t = divmod(mp, tp)
        tensors, step, swiglu = consolidate_rank(d, mp, rank_files, t if pipeline else None)
        for name, states in tensors.items():
            if pipeline and stage > 0 and name.startswith("tied_modules."):
                copies.append((t, megatron_like.gpt_name_of(name), states))
                continue
            per_tp[t][megatron_like.gpt_name_of(name) if pipeline else name] = states
    return per_tp, copies, step, swiglu


def consolidate(root):
    """The full tensors: each mp rank's slices rebuilt from its ZeRO files, then, with
    tensor parallelism, joined as ds_to_universal.py joins them. The tied word
    embeddings' later copies must equal the first stage's (their gradients are
    all-reduced)."""
    per_tp, copies, step, swiglu = rank_tensors(root)
    out = {}
    for name in per_tp[0]:
        out[name] = {k: join([tensors[name][k] for tensors in per_tp], name, swiglu) for k in per_tp[0][name]}
    for t, name, states in copies:
        if name.endswith("word_embeddings.weight"):
            for k in ("fp32", "exp_avg", "exp_avg_sq"):
                assert torch.equal(states[k], per_tp[t][name][k]), f"tied copy of {name} {k} differs"
    return out, step


def tied_copies_cmd(root):
    per_tp, copies, _, _ = rank_tensors(root)
    if not copies:
        print("no tied copies on later stages")
        return 1
    verdict = {}
    for t, name, states in copies:
        same = all(torch.equal(states[k], per_tp[t][name][k]) for k in ("fp32", "exp_avg", "exp_avg_sq"))
        verdict[name] = verdict.get(name, True) and same
    print("; ".join(f"{name}: {'equal' if same else 'differs'}" for name, same in verdict.items()))
    return 0


def param_names(truth):
    """The parameters of a truth file (its other entries: the step, a pipeline's stale
    copies, a MoE model's groups and experts)."""
    return sorted(n for n, v in truth.items() if n != "stale" and isinstance(v, dict))


def equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def consolidate_cmd(root, truth_path):
    truth = torch.load(truth_path)
    got, step = consolidate(root)
    names = param_names(truth)
    if sorted(got) != names:
        print(f"parameters differ: {sorted(got)} vs {names}")
        return 1
    for n in names:
        for k in ("fp32", "exp_avg", "exp_avg_sq"):
            if not equal(got[n][k].contiguous(), truth[n][k]):
                print(f"{n} {k} differs")
                return 1
        param = got[n]["param"]
        want = truth[n]["param"] if param.dtype == torch.bfloat16 else truth[n]["fp32"]
        if not equal(param.contiguous(), want):
            print(f"{n} param differs ({param.dtype})")
            return 1
    if step != truth["step"]:
        print(f"step {step}, expected {truth['step']}")
        return 1
    print(f"consolidated {len(names)} parameters with fp32, exp_avg, exp_avg_sq: all equal, step {step}")
    return 0


def universal_cmd(path, truth_path):
    truth = torch.load(truth_path)
    f = h5py.File(path, "r")
    names = param_names(truth)
    for n in names:
        p = f["params"][n]
        if p.attrs["dtype"] == "bfloat16":
            want = truth[n]["param"].view(torch.int16).numpy().view(np.uint16)
        else:
            want = truth[n]["fp32"].numpy()
        if not np.array_equal(p[()], want):
            print(f"{n}: param differs")
            return 1
        group = f["optimizer"][n]
        for k in ("fp32", "exp_avg", "exp_avg_sq"):
            if k not in group:
                if k == "fp32" and p.attrs["dtype"] == "float32":
                    continue  # ZeRO-3: the parameter is the master
                print(f"{n}: no {k}")
                return 1
            if not np.array_equal(group[k][()], truth[n][k].numpy()):
                print(f"{n}: {k} differs")
                return 1
        if group.attrs["step"] != truth["step"]:
            print(f"{n}: step {group.attrs['step']}")
            return 1
    print(f"universal holds {len(names)} parameters with their optimizer states, bit for bit")
    return 0


def ds_universal_cmd(root, truth_path):
    truth = torch.load(truth_path)
    with open(os.path.join(root, "latest_universal")) as f:
        tag = os.path.join(root, f.read().strip())
    model = torch.load(os.path.join(tag, "mp_rank_00_model_states.pt"))
    names = param_names(truth)
    listed = sorted(n for group in model["param_shapes"] for n in group)
    if listed != names or sorted(os.listdir(os.path.join(tag, "zero"))) != sorted(names + ["optimizer_state.pt"]):
        print(f"parameters differ: {listed} vs {names}")
        return 1
    for n in names:
        for k in ("fp32", "exp_avg", "exp_avg_sq"):
            got = torch.load(os.path.join(tag, "zero", n, k + ".pt"))["param"]
            if not equal(got, truth[n][k]):
                print(f"{n}: {k} differs")
                return 1
        step = torch.load(os.path.join(tag, "zero", n, "step.pt"))
        if step != truth["step"]:
            print(f"{n}: step {step}, expected {truth['step']}")
            return 1
        param = model["module"][n]
        want = truth[n]["param"] if param.dtype == torch.bfloat16 else truth[n]["fp32"]
        if not equal(param, want):
            print(f"{n}: module tensor differs ({param.dtype})")
            return 1
    groups = torch.load(os.path.join(tag, "zero", "optimizer_state.pt"))["param_groups"]
    print(f"DeepSpeed universal folder holds {len(names)} parameters in {len(groups)} groups "
          f"with fp32, exp_avg, exp_avg_sq and step, bit for bit")
    return 0


ALLOWED_BY_WEIGHTS_ONLY = {"collections.OrderedDict", "torch.Size", "torch._utils._rebuild_tensor_v2",
                           "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.BFloat16Storage",
                           "torch.HalfStorage", "torch.LongStorage", "torch.IntStorage", "torch.ByteStorage"}
DEEPSPEED_FORMAT = {"argparse.Namespace", "deepspeed.utils.tensor_fragment.fragment_address"}


def pickled_globals(path):
    """The globals a torch.save file's pickle names (GLOBAL, and STACK_GLOBAL after two
    pushed strings)."""
    import pickletools
    import zipfile
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            names.add(".".join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    return names


def weights_only_cmd(root):
    loaded, refused, named = 0, 0, set()
    for path in sorted(glob.glob(os.path.join(root, "**/*.pt"), recursive=True)):
        try:
            torch.load(path, weights_only=True)
            loaded += 1
        except Exception:  # torch 1.13 raises UnpicklingError for a global it does not allow
            refused += 1
            others = pickled_globals(path) - ALLOWED_BY_WEIGHTS_ONLY
            if not others or others - DEEPSPEED_FORMAT:
                print(f"{os.path.relpath(path, root)}: refused, naming {sorted(others)}")
                return 1
            named |= others
    print(f"weights_only=True loads {loaded} files; {refused} refused, naming only "
          f"{', '.join(sorted(named)) or 'nothing'}")
    return 0


def moe_cmd(root, truth_path):
    truth = torch.load(truth_path)
    d = tag_dir(root)
    ep = len(glob.glob(os.path.join(d, "expp_rank_*_mp_rank_00_optim_states.pt")))
    files = optim_files(d)[0]
    dp, marker = len(files), ".deepspeed_moe.experts.deepspeed_experts."
    model = torch.load(os.path.join(d, "mp_rank_00_model_states.pt"))
    dense = [n for n in param_names(truth) if marker not in n]
    if sorted(model["module"]) != dense or model["num_experts"] != truth["num_experts"] \
            or "param_shapes" in model:
        print(f"module holds {sorted(model['module'])}, num_experts {model.get('num_experts')}")
        return 1
    for n in dense:
        if not equal(model["module"][n], truth[n]["param"]):
            print(f"{n}: module weight differs")
            return 1
    experts = 0
    for layer, module in enumerate(truth["moe_modules"]):
        for e in range(truth["num_experts"][layer]):
            held = torch.load(os.path.join(d, f"layer_{layer}_expert_{e}_mp_rank_00_model_states.pt"))
            want = [n for n in param_names(truth) if n.startswith(f"{module}{marker}{e}.")]
            if sorted(held) != want or not all(equal(held[n], truth[n]["param"]) for n in want):
                print(f"layer_{layer}_expert_{e}: holds {sorted(held)}, weights equal to the truth's: "
                      f"{all(equal(held[n], truth[n]['param']) for n in want if n in held)}")
                return 1
            experts += len(want)

    def local(name, rank, layer_of):
        module, rest = name.split(marker)
        expert, tail = rest.split(".", 1)
        per_rank = truth["num_experts"][layer_of[module]] // ep
        if int(expert) // per_rank != rank:
            return None
        return f"{module}{marker}{int(expert) - rank * per_rank}.{tail}"

    layer_of = {m: i for i, m in enumerate(truth["moe_modules"])}
    for r, path in enumerate(files):
        osd = torch.load(path)["optimizer_state_dict"]
        bf16 = "zero_stage" not in osd
        for g, names in enumerate(truth["groups"]):
            members = [(n, n) for n in names]
            ranks, part = dp, r
            if marker in names[0]:
                members = [(local(n, r % ep, layer_of), n) for n in names if local(n, r % ep, layer_of)]
                ranks, part = dp // ep, r // ep
            numels = [truth[n]["fp32"].numel() for _, n in members]
            total = sum(numels)
            padded = 2 * ranks * math.ceil(total / (2 * ranks))
            size = padded // ranks
            lo, hi = part * size, (part + 1) * size
            want_mappings, offset = {}, 0
            for (name, _), numel in zip(members, numels):
                b, e = max(offset, lo), min(offset + numel, hi)
                if b < e:
                    want_mappings[name] = (b - lo, e - b)
                offset += numel
            got_mappings = {n: (f.start, f.numel) for n, f in osd["param_slice_mappings"][g].items()}
            padding = padded - total if part == ranks - 1 else 0
            if got_mappings != want_mappings or osd["partition_count"][g] != ranks \
                    or osd["group_paddings"][g] != padding:
                print(f"rank {r} group {g}: mappings, partition_count {osd['partition_count'][g]} or "
                      f"padding {osd['group_paddings'][g]} are not DeepSpeed's (ranks {ranks}, part {part})")
                return 1
            state = osd["base_optimizer_state"]["state"][g]
            for k in ("fp32", "exp_avg", "exp_avg_sq"):
                flat = torch.cat([truth[n][k].reshape(-1) for _, n in members] + [torch.zeros(padded - total)])
                want = flat[lo:hi] if k != "fp32" or bf16 else flat[lo:min(hi, max(lo, total))]
                got = osd["single_partition_of_fp32_groups"][g] if k == "fp32" else state[k]
                if not equal(got, want):
                    print(f"rank {r} group {g}: {k} differs")
                    return 1
            if int(state["step"]) != truth["step"]:
                print(f"rank {r} group {g}: step {state['step']}")
                return 1
    for rank in range(ep):
        held = torch.load(os.path.join(d, f"expp_rank_{rank}_mp_rank_00_optim_states.pt"))
        if held != {"optimizer": None}:
            print(f"expp_rank_{rank}: holds {held}")
            return 1
    print(f"MoE over dp={dp}, ep={ep}: {len(dense)} dense and {experts} expert parameters, "
          f"weights, fp32, exp_avg, exp_avg_sq and mappings where DeepSpeed puts them, bit for bit")
    return 0


def same_cmd(a, b):
    fa = sorted(os.path.relpath(p, a) for p in glob.glob(os.path.join(a, "**/*.pt"), recursive=True))
    fb = sorted(os.path.relpath(p, b) for p in glob.glob(os.path.join(b, "**/*.pt"), recursive=True))
    if fa != fb:
        print(f"different files: {fa} vs {fb}")
        return 1
    n = 0

    def steps(obj, path=""):  # Adam's: an int, or a tensor as torch's Adam keeps it
        if path.endswith(".step"):
            yield path, float(obj)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from steps(v, f"{path}.{k}")

    def tensors(obj, path=""):
        if path.endswith(".step"):
            return
        if isinstance(obj, torch.Tensor):
            if obj.numel():  # ZeRO-3's empty module placeholders carry no data
                yield path, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{path}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{path}.{i}")

    for rel in fa:
        ta, tb = torch.load(os.path.join(a, rel)), torch.load(os.path.join(b, rel))
        if dict(steps(ta)) != dict(steps(tb)):
            print(f"{rel}: steps differ: {dict(steps(ta))} vs {dict(steps(tb))}")
            return 1
        x, y = dict(tensors(ta)), dict(tensors(tb))
        if sorted(x) != sorted(y):
            print(f"{rel}: tensors differ: {sorted(set(x) ^ set(y))}")
            return 1
        for k in x:
            if not equal(x[k], y[k]):
                print(f"{rel}: {k} differs")
                return 1
            n += 1
    print(f"identical: {len(fa)} files, {n} tensors")
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "consolidate":
        return max(consolidate_cmd(root, args[-1]) for root in args[:-1])
    if cmd == "universal":
        return universal_cmd(*args)
    if cmd == "ds-universal":
        return ds_universal_cmd(*args)
    if cmd == "same":
        return same_cmd(*args)
    if cmd == "moe":
        return moe_cmd(*args)
    if cmd == "tied-copies":
        return tied_copies_cmd(*args)
    if cmd == "weights-only":
        return weights_only_cmd(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
