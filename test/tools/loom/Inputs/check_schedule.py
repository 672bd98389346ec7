"""check_schedule.py KIND FILE: parses what `loom schedule` wrote and prints
facts for FileCheck. KIND is json (action tables), svg or trace. Asserts hold
what any valid output must satisfy: every send has its receive on the peer's
rank, times run forward, events sit on existing ranks."""
import collections
import json
import sys
import xml.etree.ElementTree as ET

kind, path = sys.argv[1], sys.argv[2]
if kind == "json":
    d = json.load(open(path))
    counts = collections.Counter()
    sends, recvs = set(), set()
    host = d["stage_ranks"]
    for rank in d["ranks"]:
        last = 0.0
        for a in rank["actions"]:
            counts[a["op"]] += 1
            assert a["start"] <= a["end"] and a["start"] >= last - 1e-9, a
            last = a["start"]
            if a["op"] != "optimizer":
                assert host[a["stage"]] == rank["rank"], a
            if a["op"].startswith("send"):
                sends.add((a["op"][5:], a["microbatch"], a["stage"], a["peer"]))
            if a["op"].startswith("recv"):
                recvs.add((a["op"][5:], a["microbatch"], a["peer"], a["stage"]))
    assert sends == recvs, sends ^ recvs
    print("ranks", len(d["ranks"]), " ".join(f"{k}={counts[k]}" for k in sorted(counts)))
    print("p2p matched", len(sends))
    print("makespan", d["makespan"], "max bubble ratio", round(d["max_bubble_ratio"], 4))
elif kind == "svg":
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    rects = [r for r in root.iter(ns + "rect") if r.find(ns + "title") is not None]
    print("svg actions", len(rects), "colours", len({r.get("fill") for r in rects}))
elif kind == "trace":
    events = [e for e in json.load(open(path))["traceEvents"] if e["ph"] == "X"]
    assert all(e["pid"] == 0 and e["dur"] > 0 for e in events)
    end = max(e["ts"] + e["dur"] for e in events)
    print("trace events", len(events), "tids", sorted({e["tid"] for e in events}), "end us", end)
