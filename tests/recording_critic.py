"""A critic that records the rows it scores, shared by the hook and regularizer tests."""

import torch
from torch import nn


class Recorder(nn.Module):
    """A critic (call contract: (x [N, dx], z [N, dz]) -> [N]) that records what it is given.

    With marginals="shuffle" it is called once on [x; x] and [z; z_shuffled]: the first half of
    the rows is the batch the regularizer captured."""

    def __init__(self, dx: int, dz: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dx + dz, 1)
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b = x.shape[0] // 2
        self.seen = (x[:b].detach().clone(), z[:b].detach().clone())
        return self.lin(torch.cat([x, z], dim=-1)).squeeze(-1)
