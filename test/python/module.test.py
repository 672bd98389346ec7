# Driver for module.test: compares the module's results with the CLI's JSON.
import json
import math
import sys

import loom

cli_plans = json.load(open(sys.argv[1]))
cli_estimate = json.load(open(sys.argv[2]))

plans = loom.plan("llama3-8b", "dgx-h100:nodes=4", top=3)
assert plans["fits"] and len(plans["plans"]) == len(cli_plans["plans"]), plans["fits"]
for mine, theirs in zip(plans["plans"], cli_plans["plans"]):
    assert mine["strategy"] == theirs["strategy"], (mine["strategy"], theirs["strategy"])
    assert math.isclose(mine["estimate"]["step_time_s"], theirs["estimate"]["step_time_s"],
                        rel_tol=1e-12)
print("plans agree:", len(plans["plans"]))

# Nothing fits: a result, with the changes that would make the closest plan fit.
nofit = loom.plan("llama3-405b", "dgx-h100:nodes=1")
assert not nofit["fits"] and not nofit["plans"] and "closest" in nofit, nofit.keys()
fixes = nofit["closest_fits_with"]
assert [(f["nodes_times"], f["gpus"]) for f in fixes] == [(16, 128)], fixes
print("nothing fits: the closest fits with", fixes[0]["nodes_times"], "times the nodes")

# The same dict: keys, per-stage tables and values, both built by search::estimateJson.
e = loom.estimate("llama3-70b", "dgx-h100:nodes=8", tp=8, pp=4, zero=1, sp=True)
assert e.keys() == cli_estimate.keys(), set(e) ^ set(cli_estimate)
assert e == cli_estimate, [k for k in e if e[k] != cli_estimate[k]]
print("estimate agrees")

# bf16 gradients at dp = 8: 2 bytes a parameter less, 4/8 more for the
# optimizer's fp32 copy of its shard.
cli_bf16 = json.load(open(sys.argv[4]))
args = dict(tp=8, pp=4, zero=1, sp=True)
b = loom.estimate("llama3-70b", "dgx-h100:nodes=32", grad_reduce_in_bf16=True, **args)
assert b == cli_bf16, [k for k in cli_bf16 if b.get(k) != cli_bf16[k]]
f = loom.estimate("llama3-70b", "dgx-h100:nodes=32", analytic=False, **args)
assert b["peak_memory_bytes"] < f["peak_memory_bytes"], (b["peak_memory_bytes"], f["peak_memory_bytes"])
print("bf16 gradients agree")

cli_schedule = json.load(open(sys.argv[3]))
s = loom.schedule("zb-h1", 4, 8, costs=[1, 2, 1, 0.1])
assert s == cli_schedule, "schedule tables differ"
assert s["makespan"] > 0 and len(s["ranks"]) == 4
print("schedule agrees:", len(s["ranks"]), "ranks")

# framework= is `loom plan --for`: what Megatron-LM launches as priced.
m = loom.plan("llama3-70b", "dgx-h100:nodes=64", top=3, framework="megatron")
assert all(int(p["strategy"].get("zero", 0)) <= 1 and
           p["strategy"].get("schedule", "ONE_F_ONE_B") in ("ONE_F_ONE_B", "INTERLEAVED") and
           len({st["num_layers"] for st in p["stages"]}) == 1 for p in m["plans"]), m["plans"]
print("megatron plans:", len(m["plans"]))

for call in (lambda: loom.schedule("zb-x", 4, 8),
             lambda: loom.schedule("1f1b", 2**63, 8),
             lambda: loom.schedule("1f1b", 4, 8, costs=[1, 2]),
             lambda: loom.estimate("llama3-70b", "dgx-h100:nodes=8", tp=3),
             lambda: loom.plan("llama3-70x", "dgx-h100:nodes=8"),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", top=0),
             lambda: loom.plan("megatron-18.4b", "dgx-a100:nodes=4", grad_reduce_in_bf16=True),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", seq=2**62),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", global_batch=-1),
             # Out of range: loom.Error naming the argument and the CLI's bounds,
             # not an empty result ("does not fit") or pybind11's TypeError.
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", tp=-4),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", tp=2**31),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", tp=2**63),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", mbs=-3),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", zero=4),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", zero=-1),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", top=1000),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", global_batch=2**70),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", tp=0),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", pp=2**63),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", dp=-1),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", zero=4),
             lambda: loom.estimate("llama3-8b", "dgx-h100:nodes=1", recompute="some"),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", framework="jax"),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=1", zero=2, framework="megatron"),
             # Inputs no plan can take, which `loom plan` refuses too: not an
             # empty result ("does not fit").
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=2", ep=2),
             lambda: loom.plan("llama3-8b", "dgx-h100:nodes=2", tp=3, pp=2),
             lambda: loom.plan("llama3-8b", sys.argv[5])):
    try:
        call()
    except loom.Error as error:
        print("error:", str(error).split(";")[0])
    else:
        sys.exit("no loom.Error raised")

try:
    loom.plan("llama3-8b", "dgx-h100:nodes=1", tp="8")
except TypeError as error:
    print("type error:", error)
else:
    sys.exit("no TypeError raised")
