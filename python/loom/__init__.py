"""loom for Python: the planner and cost model of the `loom` command.

    import loom
    plans = loom.plan("llama3-70b", "dgx-h100:nodes=64", top=3)
    best = plans["plans"][0]["strategy"]
    e = loom.estimate("llama3-70b", "dgx-h100:nodes=64", tp=8, pp=4, zero=1)
    e["step_time_s"], e["fits"]
    s = loom.schedule("zb-h1", stages=4, microbatches=8)
    s["ranks"][0]["actions"]     # what rank 0 runs, in order

Models and clusters are catalog names or spec files, as on the command line.
Results are plain dicts: what `loom plan --json` and `loom estimate --json`
print. Bad input raises loom.Error: an argument out of range names it and its
range ("tp=0: must be 1 to 16777216"); other errors are the command's error line.
"""

import json as _json

from . import _loom

Error = _loom.Error


def plan(model, cluster, *, top=5, global_batch=0, seq=0, dp=0, tp=0, pp=0, vpp=0,
         ep=0, cp=0, mbs=0, zero=None, grad_reduce_in_bf16=False, framework=""):
    """Search strategies; degrees and mbs given (1 to 2**24) are fixed, 0
    searches them; zero 0 to 3 is fixed, None searches it; top is 1 to 100. Returns
    {model, cluster, evaluated, rejected, search_seconds, fits, plans[, closest,
    closest_fits_with]} (when nothing fits: the nearest plan, and the changes with
    which it would: offload_optimizer, or nodes_times the nodes at ZeRO stage zero);
    each plan is loom.proto's Plan (64-bit integers as strings).
    grad_reduce_in_bf16: bf16 gradient buffers, as `--grad-reduce-in-bf16`.
    framework: "megatron" or "deepspeed" searches only what that framework
    launches as priced, as `--for`."""
    return _json.loads(_loom.plan(model, cluster, top, global_batch, seq, dp, tp, pp, vpp,
                                  ep, cp, mbs, zero, grad_reduce_in_bf16, framework))


def estimate(model, cluster, *, global_batch=0, seq=0, dp=0, tp=1, pp=1, vpp=1, ep=1,
             cp=1, mbs=1, zero=0, recompute="none", sp=False, analytic=False,
             grad_reduce_in_bf16=False):
    """Memory and step time of one strategy (degrees and mbs 1 to 2**24, dp=0:
    what the GPUs leave; zero 0 to 3): what `loom estimate --json` prints. The
    pipeline is simulated unless analytic=True."""
    return _json.loads(_loom.estimate(model, cluster, global_batch, seq, dp, tp, pp, vpp,
                                      ep, cp, mbs, zero, recompute, sp, analytic,
                                      grad_reduce_in_bf16))


def schedule(kind, stages, microbatches, *, vpp=1, costs=None, mem_limit=0.0, skip=""):
    """A pipeline schedule (kind: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v,
    zb-auto, dualpipe), simulated with per-stage costs (F, B, W, comm; default
    1, 1, 1, 0): what `loom schedule --json` prints, per-rank action tables
    included. skip: SkipPipe paths as `loom schedule --skip` takes them
    ("max-skip=0.5,slow=2:2.0"; kinds 1f1b and zb-auto); the table's `paths`
    give each microbatch's stages."""
    return _json.loads(_loom.schedule(kind, stages, microbatches, vpp, list(costs or []),
                                      mem_limit, skip))
