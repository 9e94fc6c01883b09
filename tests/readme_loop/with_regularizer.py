"""The README's classifier loop ("MI as a regularizer: one construction line, one loss line"):
plain_loop.py is its "before", with_regularizer.py its "after"; the two files differ by exactly
the README's diff (tests/test_recipe_readme_diff.py checks it and runs both)."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mine_reg import MIRegularizer


class MLP(nn.Module):
    """784-1024-1024-256-10 with ReLU; the submodule ``encoder`` outputs the 256-d code Z."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 256)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


torch.manual_seed(0)
# stand-in data: 5 batches of 100 flattened 28x28 "images" and their labels
loader = DataLoader(TensorDataset(torch.rand(500, 784), torch.randint(0, 10, (500,))), batch_size=100)

model = MLP()
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
reg = MIRegularizer(model, x="input", z="encoder", beta=1e-3, mode="minimize")
for x, y in loader:
    loss = F.cross_entropy(model(x), y) + reg()
    opt.zero_grad(); loss.backward(); opt.step()
print(f"last loss {loss.item():.4f}")
