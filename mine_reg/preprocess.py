"""Input checks and per-column preprocessing for :func:`mine_reg.estimate_mi`.

Every map here acts on one column at a time and is invertible on that column's values, so it
leaves I(X; Y) unchanged:

- ``"quantile"`` (default): mid-ranks mapped to standard-normal scores, ndtri((rank - 0.5) / N).
  Tied values share the average of their ranks, so a tie never becomes a spread of distinct
  scores; a discrete column keeps exactly its distinct values (as scores), and a constant
  column becomes constant;
- ``"standardize"``: zero mean and unit variance, computed after dividing by the column's largest
  magnitude, so values up to the float64 range neither overflow nor underflow;
- ``"none"``: the values as they are (they must fit the float32 critics).

Constant columns carry no information about anything and are dropped before any of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange
from scipy.special import ndtri
from scipy.stats import rankdata
from torch import Tensor

__all__ = ["PREPROCESS", "Prepared", "validate_pair", "preprocess_pair", "as_2d", "DISCRETE_LEVELS"]

PREPROCESS = ("quantile", "standardize", "none")
# a column with at most this many distinct values is discrete (labels, booleans, counts, levels)
DISCRETE_LEVELS = 64
# preprocess="none" feeds values to float32 critics, whose squares must stay finite
_MAX_RAW = 1e18


def as_2d(name: str, a: Any) -> np.ndarray:
    """Any array-like of numbers -> float64 [N, d] (1-D means one column); ValueError if bad."""
    if isinstance(a, Tensor):
        a = a.detach()
        a = (a.float() if a.dtype in (torch.bfloat16, torch.float16) else a).cpu().numpy()
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers: {err}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise ValueError(f"{name} must be real, got complex dtype {a.dtype}")
    if a.ndim == 1:
        a = rearrange(a, "n -> n 1")
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape [N] or [N, d], got {a.ndim} dims {tuple(a.shape)}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{name} contains NaN or Inf ({int(bad.sum())} values; first in row {row})")
    return a


def validate_pair(x: Any, y: Any, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a pair of sample arrays to float64 [N, dx], [N, dy]; ValueError if bad."""
    x, y = as_2d("x", x), as_2d("y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples N, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"x and y need at least one column, got shapes {x.shape} and {y.shape}")
    if x.shape[0] < min_samples:
        raise ValueError(f"need at least {min_samples} samples, got N = {x.shape[0]}")
    return x, y


def quantile_normalize(a: np.ndarray) -> np.ndarray:
    """Each column's mid-ranks (ties averaged) mapped to standard-normal scores."""
    ranks = rankdata(a, method="average", axis=0)
    return ndtri((ranks - 0.5) / a.shape[0])


def standardize(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column, safe for magnitudes up to the float64 range."""
    peak = np.abs(a).max(axis=0)
    a = a / np.where(peak > 0, peak, 1.0)
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


@dataclass
class Prepared:
    """A preprocessed pair: x [N, dx'] and y [N, dy'] (constant columns dropped), which of the
    kept columns are discrete, and what was noticed on the way (``warnings``)."""

    x: np.ndarray
    y: np.ndarray
    x_discrete: np.ndarray
    y_discrete: np.ndarray
    raw_x: np.ndarray
    raw_y: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def all_discrete(self) -> bool:
        return bool(self.x_discrete.all() and self.y_discrete.all())


def _levels(a: np.ndarray) -> np.ndarray:
    """Number of distinct values in each column."""
    s = np.sort(a, axis=0)
    return 1 + (np.diff(s, axis=0) != 0).sum(axis=0)


def _keep_varying(name: str, a: np.ndarray, warnings: list[str]) -> np.ndarray:
    levels = _levels(a)
    constant = np.flatnonzero(levels == 1)
    if len(constant):
        cols = ", ".join(str(int(c)) for c in constant[:10]) + (" ..." if len(constant) > 10 else "")
        warnings.append(
            f"{name}: {len(constant)} constant column(s) ({cols}) carry no information and were dropped"
        )
    return a[:, levels > 1]


def preprocess_pair(x: np.ndarray, y: np.ndarray, how: str) -> Prepared:
    """Drop constant columns, flag discrete ones, then apply ``how`` (one of :data:`PREPROCESS`)
    to each column. x, y: float64 [N, d] from :func:`validate_pair`."""
    if how not in PREPROCESS:
        raise ValueError(f"unknown preprocess {how!r}; choose from {PREPROCESS}")
    warnings: list[str] = []
    x, y = _keep_varying("x", x, warnings), _keep_varying("y", y, warnings)
    if how == "none":
        for name, a in (("x", x), ("y", y)):
            peak = float(np.abs(a).max()) if a.size else 0.0
            if peak > _MAX_RAW:
                raise ValueError(
                    f"{name} has values up to {peak:.3g}, too large for preprocess='none' (the float32 "
                    f"critics overflow beyond about {_MAX_RAW:.0e}); use preprocess='standardize' or "
                    "'quantile'"
                )
    maps = {"quantile": quantile_normalize, "standardize": standardize, "none": lambda a: a}
    n = x.shape[0]
    limit = min(DISCRETE_LEVELS, n // 2)
    return Prepared(
        x=maps[how](x) if x.shape[1] else x,
        y=maps[how](y) if y.shape[1] else y,
        x_discrete=_levels(x) <= limit,
        y_discrete=_levels(y) <= limit,
        raw_x=x,
        raw_y=y,
        warnings=warnings,
    )
