"""loom.torch: run loom's pipeline schedules with torch.distributed.

    import loom, loom.torch
    table = loom.schedule("zb-h1", stages=4, microbatches=8)
    groups = loom.torch.ParallelGroups(pp=4, dp=2)          # after init_process_group
    runner = loom.torch.PipelineRunner(model, table, groups, loss_fn, activation=example)
    loss = runner.step(inputs, targets)                   # this rank's pipeline's data
    optimizer.step()

The model is an nn.Sequential; its layers are split evenly over the schedule's
stages (stage s runs on pipeline rank stage_ranks[s], several stages per rank
under interleaving; DualPipe's stage p + j runs layer chunk j again, from the
other end, and the two ranks holding a chunk sum their copies' gradients). A rank runs its own action list in order: F (forward), B
(input gradient only), W (weight gradients), BW (both), and the sends and
receives of activations and gradients, then averages gradients over its
data-parallel group. Splitting B from W is what the zero-bubble schedules
need: B keeps the autograd graph so that W can run later.

Ranks are laid out pipeline-innermost: global rank = dp_index * pp + pp_index.
"""

import torch
import torch.distributed as dist
from torch import nn

_KINDS = {"act": 0, "grad": 1}


class ParallelGroups:
    """This rank's pipeline and data-parallel groups (every rank must build it:
    new_group is collective)."""

    def __init__(self, pp, dp):
        world = dist.get_world_size()
        if pp * dp != world:
            raise ValueError(f"pp x dp = {pp} x {dp} = {pp * dp}, but the world has {world} ranks")
        self.pp, self.dp = pp, dp
        rank = dist.get_rank()
        self.pp_index, self.dp_index = rank % pp, rank // pp
        self.pipeline_ranks = [self.dp_index * pp + i for i in range(pp)]
        self.pipelines = [[d * pp + i for i in range(pp)] for d in range(dp)]
        self.dp_group = None
        for i in range(pp):
            members = [d * pp + i for d in range(dp)]
            group = dist.new_group(members)
            if i == self.pp_index:
                self.dp_group = group

    @classmethod
    def from_table(cls, table):
        """The groups a `loom emit --target schedule` table states for this world:
        its pp_groups (global ranks in pipeline-rank order, one list per pipeline)
        are the pipelines, and the ranks at one pipeline position across them form
        that position's data-parallel group. So the plan's rank map, not a fixed
        convention, decides which process runs which stage."""
        pipelines = table.get("pp_groups")
        world, rank = dist.get_world_size(), dist.get_rank()
        if not pipelines or sorted(r for g in pipelines for r in g) != list(range(world)) \
                or len({len(g) for g in pipelines}) != 1:
            raise ValueError(f"the table's pp_groups {pipelines} do not cover the world's "
                             f"{world} ranks in pipelines of one size")
        self = cls.__new__(cls)
        self.pp, self.dp = len(pipelines[0]), len(pipelines)
        for d, pipeline in enumerate(pipelines):
            if rank in pipeline:
                self.dp_index, self.pp_index = d, pipeline.index(rank)
                self.pipeline_ranks = list(pipeline)
        self.pipelines = [list(p) for p in pipelines]
        self.dp_group = None
        for i in range(self.pp):
            group = dist.new_group(sorted(p[i] for p in pipelines))
            if i == self.pp_index:
                self.dp_group = group
        return self

    @classmethod
    def from_rankmap(cls, rankmap):
        """Every parallel dimension's process groups as `loom emit PLAN --target
        rankmap` states them (tp, cp, ep, dp, pp; each rank in one group of each),
        kept in `groups[dim]` with their members in `group_ranks[dim]`. The
        pipeline runner uses the pp and dp ones: the pipeline's ranks in
        pipeline-rank order (the rank map's pp coordinates) and this rank's
        data-parallel group; the dp index is this rank's place in it."""
        world, rank = dist.get_world_size(), dist.get_rank()
        if rankmap.get("world_size") != world:
            raise ValueError(f"the rank map is for {rankmap.get('world_size')} ranks, "
                             f"the world has {world}")
        coords = {r["rank"]: r["axes"] for r in rankmap["ranks"]}
        self = cls.__new__(cls)
        self.groups, self.group_ranks = {}, {}
        for dim, members in rankmap["groups"].items():  # the same order on every rank
            for ranks in members:
                group = dist.new_group(sorted(ranks))
                if rank in ranks:
                    self.groups[dim], self.group_ranks[dim] = group, sorted(ranks)
        pipeline = self.group_ranks["pp"]
        self.pipeline_ranks = sorted(pipeline, key=lambda r: coords[r].get("pp", 0))
        self.pipelines = [sorted(p, key=lambda r: coords[r].get("pp", 0))
                          for p in rankmap["groups"]["pp"]]
        self.pp, self.pp_index = len(pipeline), coords[rank].get("pp", 0)
        self.dp_group = self.groups["dp"]
        self.dp, self.dp_index = len(self.group_ranks["dp"]), self.group_ranks["dp"].index(rank)
        return self


def split_stages(model, num_stages):
    """The layers of an nn.Sequential in num_stages contiguous, nearly equal
    nn.Sequential pieces (earlier pieces take the remainder)."""
    layers = list(model)
    if len(layers) < num_stages:
        raise ValueError(f"{len(layers)} layers cannot fill {num_stages} stages")
    base, extra = divmod(len(layers), num_stages)
    out, start = [], 0
    for s in range(num_stages):
        n = base + (1 if s < extra else 0)
        out.append(nn.Sequential(*layers[start:start + n]))
        start += n
    return out


class PipelineRunner:
    """Runs one rank's actions of a loom schedule table (loom.schedule)."""

    def __init__(self, model, table, groups, loss_fn, activation):
        """activation: a tensor shaped like what stages pass each other (one
        micro-batch's activations), for the receiving ranks' buffers."""
        self.activation = activation
        self.table = table
        self.groups = groups
        self.loss_fn = loss_fn
        self.stage_ranks = table["stage_ranks"]
        self.num_stages = table["num_stages"]
        self.m = table["num_microbatches"]
        if table["num_ranks"] != groups.pp:
            raise ValueError(f"the schedule has {table['num_ranks']} ranks, the pipeline {groups.pp}")
        # DualPipe feeds half of the micro-batches from each end: stage p + j
        # runs layer chunk j on rank p - 1 - j, a copy of stage j's. The two
        # ranks that share a pair of chunks sum their copies' gradients.
        self.chunks = table["num_ranks"] if table.get("kind") == "dualpipe" else self.num_stages
        pieces = split_stages(model, self.chunks)
        self.stages = [pieces[s % self.chunks] for s in range(self.num_stages)]
        self.pair_group = None
        if self.chunks != self.num_stages:
            p = self.chunks
            for pipeline in groups.pipelines:  # new_group is collective: every pair, everywhere
                for j in range(p // 2):
                    members = sorted([pipeline[j], pipeline[p - 1 - j]])
                    group = dist.new_group(members)
                    if dist.get_rank() in members:
                        self.pair_group = group
        # Each micro-batch's stages in order (SkipPipe paths may skip some);
        # where a path starts, the inputs enter, and where it ends, the loss.
        # Where consecutive stages share a rank (ZB-V's turn on the last
        # rank) the table has no send or receive: the hand-off is local.
        paths = table.get("paths") or [list(range(self.num_stages))] * self.m
        self.first_stages = {path[0] for path in paths}
        self.last_stages = {path[-1] for path in paths}
        self.before = {}
        for mb, path in enumerate(paths):
            for a, b in zip(path, path[1:]):
                if self.stage_ranks[a] == self.stage_ranks[b]:
                    self.before[(mb, b)] = a
        self.actions = table["ranks"][groups.pp_index]["actions"]
        self.mine = [s for s in range(self.num_stages) if self.stage_ranks[s] == groups.pp_index]

    def parameters(self):
        # By layer chunk, so that the two ranks of a DualPipe pair list their
        # shared chunks in one order.
        for c in sorted({s % self.chunks for s in self.mine}):
            yield from self.stages[c].parameters()

    def _peer(self, stage):
        return self.groups.pipeline_ranks[self.stage_ranks[stage]]

    def _tag(self, kind, mb, stage):
        # Unique per message: receives may be posted in any order.
        return (_KINDS[kind] * self.m + mb) * self.num_stages + stage

    def step(self, inputs, targets, optimizer=None):
        """One training step over this pipeline's micro-batches (inputs and
        targets: lists of m tensors; only the first and last stage use them).
        Leaves gradients averaged over the data-parallel group in .grad and, with
        an `optimizer` over this rank's parameters, runs its step where the
        schedule's optimizer action stands (after the reduction). Returns the
        summed loss on the last stage (None elsewhere)."""
        if len(inputs) != self.m or len(targets) != self.m:
            raise ValueError(f"the schedule has {self.m} micro-batches, got {len(inputs)} inputs")
        for p in self.parameters():
            p.grad = None
        x, y, gy, gx = {}, {}, {}, {}   # keyed by (mb, stage)
        pending, total, stepped = [], None, False

        def backward(mb, stage, want_input, want_weights):
            key = (mb, stage)
            params = list(self.stages[stage].parameters()) if want_weights else []
            inputs_ = [x[key]] if want_input and stage not in self.first_stages else []
            wrt = inputs_ + params
            if not wrt:
                return
            out = y[key]
            grad_out = None if stage in self.last_stages else gy[key]
            keep = not want_weights  # W still needs the graph after B
            grads = torch.autograd.grad(out, wrt, grad_outputs=grad_out, retain_graph=keep)
            if inputs_:
                if key in self.before:  # to the stage before, on this rank
                    gy[(mb, self.before[key])] = grads[0]
                else:
                    gx[key] = grads[0]
            for p, g in zip(params, grads[len(inputs_):]):
                p.grad = g if p.grad is None else p.grad + g
            if want_weights:
                del y[key], x[key]
                gy.pop(key, None)

        for a in self.actions:
            op, mb, stage, peer = a["op"], a["microbatch"], a["stage"], a["peer"]
            key = (mb, stage)
            if op == "recv_act":
                t = torch.empty_like(self.activation)
                dist.recv(t, self._peer(peer), tag=self._tag("act", mb, stage))
                x[key] = t.requires_grad_(True)
            elif op == "f":
                if stage in self.first_stages:
                    x[key] = inputs[mb]
                elif key in self.before:  # from the stage before, on this rank
                    x[key] = y[(mb, self.before[key])].detach().requires_grad_(True)
                out = self.stages[stage](x[key])
                if stage in self.last_stages:
                    loss = self.loss_fn(out, targets[mb]) / self.m
                    total = loss.detach() if total is None else total + loss.detach()
                    out = loss
                y[key] = out
            elif op == "send_act":
                t = y[key].detach().contiguous()
                pending.append((dist.isend(t, self._peer(peer), tag=self._tag("act", mb, peer)), t))
            elif op == "recv_grad":
                t = torch.empty_like(y[key])
                dist.recv(t, self._peer(peer), tag=self._tag("grad", mb, stage))
                gy[key] = t
            elif op == "b":
                backward(mb, stage, want_input=True, want_weights=False)
            elif op == "w":
                backward(mb, stage, want_input=False, want_weights=True)
            elif op == "bw":
                backward(mb, stage, want_input=True, want_weights=True)
            elif op == "send_grad":
                t = gx.pop(key).contiguous()
                pending.append((dist.isend(t, self._peer(peer), tag=self._tag("grad", mb, peer)), t))
            elif op == "optimizer":
                stepped = True  # the last action: taken once gradients are reduced
            else:
                raise ValueError(f"unknown action '{op}' in the schedule table")
        for work, _ in pending:
            work.wait()
        if self.pair_group is not None:
            for p in self.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, group=self.pair_group)
        if self.groups.dp > 1:
            for p in self.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, group=self.groups.dp_group)
                    p.grad /= self.groups.dp
        if optimizer is not None and stepped:
            optimizer.step()
        return total
