"""One rank of the exit test in test_regularizer_distributed.py, started as its own program.

Three DDP steps of a tiny model with ``MIRegularizer(estimator="mine", critic="concat",
gather_marginals=True)``, then the program ends right after the last step, without
``destroy_process_group()``, as user scripts under torchrun do. The rank and world come from the
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as torchrun sets them. Prints
``world=<size>`` before training (a print after it would give gloo's threads a moment to finish,
and hide the abort this guards against); exits with status 1 if the critic did not step each time.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mine_reg import MIRegularizer

STEPS = 3


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    reg = MIRegularizer(
        model, x="input", z="1", beta=0.1, estimator="mine", critic="concat", hidden=(8,), lr=1e-3,
        gather_marginals=True,
    )  # fmt: skip
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(dist.get_rank())
    print(f"world={dist.get_world_size()}", flush=True)
    for _ in range(STEPS):
        x = torch.randn(16, 4, generator=gen)
        loss = F.mse_loss(ddp(x), x) + reg()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if reg.critic_steps != STEPS:
        raise SystemExit(f"the critic took {reg.critic_steps} steps in {STEPS} training steps")


if __name__ == "__main__":
    main()
