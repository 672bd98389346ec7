"""check_rankmap.py RANKMAP.json PLAN.json: the rank map's invariants for the
plan it came from. Every rank appears once with dc/node/gpu inside the levels;
per parallel dimension the groups partition the ranks, each as large as the
plan's degree; tp groups stay inside a node when tp <= GPUs per node."""
import json
import sys

rankmap = json.load(open(sys.argv[1]))
plan = json.load(open(sys.argv[2]))
plan = plan["plans"][0] if "plans" in plan else plan
strategy = plan["strategy"]
levels = rankmap["levels"]
world = rankmap["world_size"]
assert world == levels["dc"] * levels["node"] * levels["gpu"], levels
assert [r["rank"] for r in rankmap["ranks"]] == list(range(world))
node_of = {}
for r in rankmap["ranks"]:
    assert 0 <= r["gpu"] < levels["gpu"] and 0 <= r["dc"] < levels["dc"], r
    node_of[r["rank"]] = r["node"]
for dim in ("tp", "cp", "ep", "dp", "pp"):
    degree = max(1, strategy.get(dim, 1))
    seen = sorted(rank for group in rankmap["groups"][dim] for rank in group)
    assert seen == list(range(world)), f"{dim}: ranks not covered exactly once"
    sizes = {len(group) for group in rankmap["groups"][dim]}
    assert sizes == {degree}, f"{dim}: group sizes {sizes}, degree {degree}"
if strategy["tp"] <= levels["gpu"]:
    for group in rankmap["groups"]["tp"]:
        assert len({node_of[r] for r in group}) == 1, f"tp group {group} spans nodes"
print(f"rankmap ok: {world} ranks")
