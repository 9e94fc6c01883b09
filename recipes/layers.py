"""Network pieces the recipes share: an MLP builder and the layer that samples a stochastic code.

``mine_reg.critics.mlp`` builds the critics' MLPs from an activation name; the recipes' networks
also need LeakyReLU, dropout and an activation after the last layer, hence this builder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["mlp", "Sample"]


def mlp(
    widths: Sequence[int],
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    activate_last: bool = False,
) -> nn.Sequential:
    """Linear layers through ``widths`` (``[d_in, h_1, ..., d_out]``) with ``activation()`` and,
    when ``dropout`` > 0, dropout between them; ``activate_last`` adds the activation after the
    last layer too."""
    layers: list[nn.Module] = []
    n = len(widths) - 1
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < n - 1 or activate_last:
            layers.append(activation())
            if dropout > 0 and i < n - 1:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Sample(nn.Module):
    """z = mean + std · eps, eps ~ N(0, I): the layer whose output is the code Z (what a
    regularizer names with ``z="z"`` when the layer is an attribute ``z``)."""

    def forward(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return mean + std * torch.randn_like(mean)
