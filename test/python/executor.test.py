# Driver for executor.test: 8 processes, pp=4 x dp=2, each checks its own
# stages against a reference it computes alone; rank 0 reports the worst error.
import copy
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import loom
import loom.torch

PP, DP, M, MBS, WIDTH, STEPS, LR = 4, 2, 8, 2, 16, 3, 0.05
SCHEDULES = [("1f1b", {}), ("interleaved", {"vpp": 2}), ("zb-h1", {}), ("zb-h2", {}),
             ("zb-auto", {"mem_limit": PP}),
             # ZB-V: two stages per rank in a V, the first and the last on rank 0.
             ("zb-v", {}),
             # SkipPipe: stage 2 behind a slow link, half the microbatches skip it.
             ("zb-auto", {"mem_limit": PP, "skip": "max-skip=0.5,slow=2:2.0"}),
             # DualPipe: half the microbatches enter from each end; each rank
             # holds two layer chunks, each also held by its mirror rank.
             ("dualpipe", {})]
TOLERANCE = 1e-5


def build():
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    return nn.Sequential(*layers)


def data(step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(DP, M, MBS, WIDTH, generator=g)
    return x, torch.sin(x)


def rel_error(a, b):
    if a is None:
        return float("inf")  # a gradient the executor never produced
    return ((a - b).norm() / max(b.norm().item(), 1e-30)).item()


def worker(rank, rendezvous, emitted, rankmap):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=PP * DP)
    torch.set_num_threads(1)
    groups = loom.torch.ParallelGroups(pp=PP, dp=DP)
    loss_fn = nn.MSELoss()
    lines, worst = [], 0.0
    cases = [(kind + (" skip" if "skip" in extra else ""), loom.schedule(kind, PP, M, **extra),
              groups) for kind, extra in SCHEDULES]
    if emitted:
        # A schedule `loom emit --target schedule` wrote for a plan: its own
        # kind and costs, and its rank map's pipelines (pp outermost there,
        # innermost in ParallelGroups' convention); then the same with every
        # dimension's groups built from `loom emit --target rankmap`.
        with open(emitted) as f:
            table = json.load(f)
        cases.append((f"emitted {table['kind']}", table, loom.torch.ParallelGroups.from_table(table)))
        with open(rankmap) as f:
            mapped = loom.torch.ParallelGroups.from_rankmap(json.load(f))
        assert mapped.pipeline_ranks == cases[-1][2].pipeline_ranks, "rank map and table disagree"
        assert sorted(mapped.groups) == ["cp", "dp", "ep", "pp", "tp"], sorted(mapped.groups)
        cases.append((f"rank map {table['kind']}", table, mapped))
    for kind, table, groups in cases:
        model, reference = build(), build()
        runner = loom.torch.PipelineRunner(model, table, groups, loss_fn,
                                           activation=torch.empty(MBS, WIDTH))
        mine = list(runner.parameters())
        # The same tensors in the reference model, by position.
        index = {id(p): i for i, p in enumerate(model.parameters())}
        ref_params = list(reference.parameters())
        theirs = [ref_params[index[id(p)]] for p in mine]
        opt = torch.optim.SGD(mine, lr=LR)
        ref_opt = torch.optim.SGD(reference.parameters(), lr=LR)
        errors = {"grads": 0.0, "1": 0.0, "3": 0.0}
        for step in range(STEPS):
            x, y = data(step)
            # The runner reduces over data parallelism and steps the optimizer
            # at the schedule's optimizer action.
            runner.step(list(x[groups.dp_index]), list(y[groups.dp_index]), optimizer=opt)
            ref_opt.zero_grad()
            # The reference runs each microbatch through the stages of its path
            # (all of them, except where a skip schedule leaves some out).
            # DualPipe's stage p + j is a copy of layer chunk j.
            chunks = PP if table["kind"] == "dualpipe" else len(table["stage_ranks"])
            pieces = loom.torch.split_stages(reference, chunks)

            def forward(mb, inp):
                for stage in table["paths"][mb]:
                    inp = pieces[stage % chunks](inp)
                return inp
            loss = sum(loss_fn(forward(mb, x[d, mb]), y[d, mb])
                       for d in range(DP) for mb in range(M)) / (DP * M)
            loss.backward()
            if step == 0:
                errors["grads"] = max(rel_error(p.grad, q.grad) for p, q in zip(mine, theirs))
            ref_opt.step()
            if step in (0, STEPS - 1):
                errors[str(step + 1)] = max(rel_error(p.detach(), q.detach())
                                            for p, q in zip(mine, theirs))
        e = torch.tensor([errors["grads"], errors["1"], errors["3"]])
        dist.all_reduce(e, op=dist.ReduceOp.MAX)
        worst = max(worst, e.max().item())
        ok = lambda v: "ok" if v <= TOLERANCE else f"off by {v:.3g}"
        lines.append(f"{kind}: grads {ok(e[0].item())}, weights {ok(max(e[1].item(), e[2].item()))}"
                     f" after 1 and 3 steps")
    if rank == 0:
        print("\n".join(lines))
        print("all ranks agree" if worst <= TOLERANCE else f"worst relative error {worst:.3g}")
        sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    rendezvous = os.path.abspath(sys.argv[1])
    if os.path.exists(rendezvous):
        os.remove(rendezvous)
    emitted = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
    rankmap = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else None
    mp.spawn(worker, args=(rendezvous, emitted, rankmap), nprocs=PP * DP, join=True)
