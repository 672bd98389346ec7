# The training script launch.test hands to the emitted torchrun script: one
# pipeline step of a small MLP with loom.torch on 8 ranks.
import torch
import torch.distributed as dist
from torch import nn

import loom
import loom.torch

dist.init_process_group("gloo")
pp, dp, m = 4, dist.get_world_size() // 4, 8
groups = loom.torch.ParallelGroups(pp=pp, dp=dp)
torch.manual_seed(0)
model = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(8)])
runner = loom.torch.PipelineRunner(model, loom.schedule("zb-h1", pp, m), groups, nn.MSELoss(),
                                   activation=torch.empty(2, 16))
optimizer = torch.optim.SGD(runner.parameters(), lr=0.1)
x = torch.randn(m, 2, 16, generator=torch.Generator().manual_seed(groups.dp_index))
loss = runner.step(list(x), list(torch.sin(x)))
optimizer.step()
done = torch.ones(1)
dist.all_reduce(done)
total = torch.zeros(1) if loss is None else loss.reshape(1)
dist.all_reduce(total)
if dist.get_rank() == 0:
    print(f"{int(done.item())} ranks finished step 1, loss {total.item() / dp:.4f}", flush=True)
dist.destroy_process_group()
