"""Shared fixtures: seeded synthetic data with closed-form mutual information, and torch seeding.

This is the one place that makes seeded synthetic data for the test suite; add new data
fixtures here rather than in individual test files.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from accelerate_helpers import fresh_accelerate_state  # noqa: F401  (a fixture, shared)

from mine_reg.synthetic import correlated_gaussian, gaussian_mi, rho_for_mi

# Unit tests never talk to wandb, whatever the environment says.
os.environ.setdefault("WANDB_MODE", "disabled")
# The critics under test are tiny: one intra-op thread is as fast on 2 cores, deterministic, and
# leaves room for the two-process distributed tests.
torch.set_num_threads(1)

TORCH_SEED = 1234


@pytest.fixture(autouse=True)
def torch_seed() -> int:
    """Seed torch's global RNG before every test, so parameter initialisation is reproducible."""
    torch.manual_seed(TORCH_SEED)
    return TORCH_SEED


@pytest.fixture
def single_thread():
    """One intra-op thread: on a small shared CPU box torch's thread pool is often much slower
    than one thread for tiny networks, and one thread keeps CPU runs reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_gaussian_pair(
    n: int, dim: int, mi: float, seed: int = 0, as_numpy: bool = False
) -> tuple[torch.Tensor, torch.Tensor, float] | tuple[np.ndarray, np.ndarray, float]:
    """n pairs of d-dim standard Gaussians with corr(x_i, z_j) = rho·delta_ij chosen so that
    I(X; Z) = ``mi`` nats (``mi = 0`` gives independent samples). Returns ``(x, z, truth)`` with
    x, z float32 tensors [n, dim] (float64 numpy arrays with ``as_numpy``) and truth the closed
    form -d/2·log(1 - rho²)."""
    if mi < 0:
        raise ValueError(f"mi must be >= 0, got {mi}")
    rho = rho_for_mi(mi, dim) if mi > 0 else 0.0
    x, z = correlated_gaussian(n, dim, rho, seed=seed)
    truth = gaussian_mi(dim, rho)
    if as_numpy:
        return x, z, truth
    return torch.from_numpy(x).float(), torch.from_numpy(z).float(), truth


@pytest.fixture
def gaussian_pair() -> Callable[..., tuple]:
    """Factory ``(n, dim, mi, seed=0, as_numpy=False) -> (x, z, truth)``; see make_gaussian_pair."""
    return make_gaussian_pair
