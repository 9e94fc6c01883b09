"""``estimate_mi``: fit a critic and read out I(X; Y) on held-out data, in one call."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange
from scipy.special import ndtri
from scipy.stats import t as student_t
from torch import Tensor

from .critics import BoundedCritic, ConcatCritic, GaussianCritic, Marginals, SeparableCritic, SumCritic
from .estimator import ESTIMATORS, MIEstimator

__all__ = ["estimate_mi", "MIResult", "validate_pair", "PREPROCESS", "CRITICS"]

PREPROCESS = ("quantile", "standardize", "none")
_MAX_MONITOR = 2048
_SE_BATCHES = 10  # held-out batches at least (of >= 64 samples), for the standard error


@dataclass
class MIResult:
    """An MI estimate in nats, read out on held-out data.

    mi: the estimate (nats). stderr: standard error over the ``n_batches`` held-out batches
    (nats). interval: 95% Student-t interval from stderr with ``n_batches - 1`` degrees of
    freedom. curve: one dict per evaluation with ``step``, ``train`` (mean training bound since
    the last evaluation; None at step 0) and ``monitor`` (the bound on the monitor set), in nats.
    ``float(result) == result.mi``.
    """

    mi: float
    stderr: float
    estimator: str
    n_train: int
    n_monitor: int
    n_heldout: int
    steps: int
    best_step: int
    seconds: float
    curve: list[dict[str, float | None]] = field(default_factory=list, repr=False)
    n_batches: int = 0

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval: Student-t with ``n_batches - 1`` degrees of freedom (normal if unknown)."""
        q = float(student_t.ppf(0.975, self.n_batches - 1)) if self.n_batches >= 2 else 1.96
        return (self.mi - q * self.stderr, self.mi + q * self.stderr)

    def __float__(self) -> float:
        return self.mi

    def to_dict(self) -> dict[str, Any]:
        return {
            "mi": self.mi,
            "stderr": self.stderr,
            "interval": list(self.interval),
            "estimator": self.estimator,
            "n_train": self.n_train,
            "n_monitor": self.n_monitor,
            "n_heldout": self.n_heldout,
            "steps": self.steps,
            "best_step": self.best_step,
            "seconds": self.seconds,
            "n_batches": self.n_batches,
        }


def _as_2d(name: str, a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
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
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples N, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"x and y need at least one column, got shapes {x.shape} and {y.shape}")
    if x.shape[0] < min_samples:
        raise ValueError(f"need at least {min_samples} samples, got N = {x.shape[0]}")
    return x, y


def _quantile_normalize(a: np.ndarray) -> np.ndarray:
    """Map each column through its empirical CDF, then the standard normal quantile function."""
    n = a.shape[0]
    ranks = np.argsort(np.argsort(a, axis=0, kind="stable"), axis=0, kind="stable")
    return ndtri((ranks + 0.5) / n)


def _standardize(a: np.ndarray) -> np.ndarray:
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _preprocess(a: np.ndarray, how: str) -> np.ndarray:
    if how == "quantile":
        return _quantile_normalize(a)
    if how == "standardize":
        return _standardize(a)
    if how == "none":
        return a
    raise ValueError(f"unknown preprocess {how!r}; choose from {PREPROCESS}")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


CRITICS = ("gaussian+separable", "separable", "concat", "gaussian")
# the neural residual's scores are softly clipped to +-3 nats around the Gaussian part: it keeps
# rare tail pairs from dominating the DV read-out (Student-t suite: see README)
RESIDUAL_BOUND = 3.0


def _build_critic(kind: str, x: Tensor, y: Tensor, hidden: Sequence[int], embed_dim: int) -> torch.nn.Module:
    dx, dy = x.shape[1], y.shape[1]
    if kind == "separable":
        return SeparableCritic(dx, dy, hidden, embed_dim)
    if kind == "concat":
        return ConcatCritic(dx, dy, hidden)
    if kind == "gaussian":
        return GaussianCritic(dx, dy).fit(x, y)
    if kind == "gaussian+separable":
        residual = BoundedCritic(SeparableCritic(dx, dy, hidden, embed_dim), bound=RESIDUAL_BOUND)
        return SumCritic(GaussianCritic(dx, dy).fit(x, y), residual)
    raise ValueError(f"unknown critic {kind!r}; choose from {CRITICS} or pass an nn.Module")


@torch.no_grad()
def _heldout(
    est: MIEstimator, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator
) -> tuple[float, float, int]:
    """Read-out on held-out data: (pooled estimate, standard error over batches, batches), nats."""
    n = x.shape[0]
    readout = ESTIMATORS[est.estimator][1]
    n_batches = n // batch_size
    if readout != "infonce":  # InfoNCE's value depends on the batch size; the others may use
        n_batches = max(n_batches, min(_SE_BATCHES, n // 64))  # more, smaller batches for the SE
    n_batches = max(2, n_batches) if n >= 4 else 1
    per_batch, joints, marginals = [], [], []
    for idx in torch.tensor_split(torch.arange(n, device=x.device), n_batches):
        joint, marginal = est.scores(x[idx], y[idx], generator=generator)
        per_batch.append(float(est.evaluate(joint, marginal).mi))
        joints.append(joint.float())
        marginals.append(rearrange(marginal.float(), "b k -> (b k)"))
    if readout == "infonce":
        point = float(np.mean(per_batch))
    else:
        point = float(est.bound(readout, torch.cat(joints), torch.cat(marginals)))
    se = float(np.std(per_batch, ddof=1) / math.sqrt(len(per_batch))) if len(per_batch) > 1 else float("nan")
    return point, se, len(per_batch)


def estimate_mi(
    x: Any,
    y: Any,
    estimator: str = "mine",
    *,
    critic: str | torch.nn.Module = "gaussian+separable",
    marginals: Marginals | None = None,
    hidden: Sequence[int] = (128, 128),
    embed_dim: int = 32,
    batch_size: int = 512,
    lr: float = 1e-3,
    max_steps: int = 2000,
    eval_every: int = 25,
    patience: int = 4,
    heldout: float = 0.5,
    preprocess: str = "quantile",
    ema_rate: float = 0.01,
    tau: float = 5.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> MIResult:
    """Estimate I(X; Y) in nats with a trained critic, read out on held-out samples only.

    A multivariate counterpart of scikit-learn's ``mutual_info_regression``:

    1. each column is preprocessed: ``"quantile"`` (default) maps ranks to standard-normal
       scores, an invertible map per coordinate, so MI is unchanged while heavy tails and warps
       are removed; ``"standardize"``: zero mean, unit variance; ``"none"``;
    2. the samples are split at random into a held-out part (``heldout``), used only for the
       final read-out, and the rest, of which a monitor set (a fifth, at most 2,048 samples) is
       kept aside for early stopping;
    3. the critic is fitted on the training part: the default ``"gaussian+separable"`` critic is
       a closed-form Gaussian log density ratio (Ledoit-Wolf shrunk, exact when the dependence is
       Gaussian after step 1) plus a separable neural critic (softly clipped to +-3), starting at
       zero, trained with the
       chosen estimator's bound to learn what the Gaussian part misses;
    4. training stops early once the bound on the monitor set has not improved for
       ``patience`` evaluations (every ``eval_every`` steps), and the best state is kept (the
       untrained state, step 0, included);
    5. the bound is read out on the whole held-out part, with a standard error over batches.

    Args:
        x: [N, dx] or [N] (one column); numpy array, tensor or nested sequence of numbers.
        y: [N, dy] or [N].
        estimator: ``"mine"`` (DV bound, bias-corrected gradient) or any name in
            :data:`mine_reg.estimator.ESTIMATORS`.
        critic: ``"gaussian+separable"`` (default), ``"separable"`` (f(x)·g(y), all pairs of a
            batch scored), ``"concat"`` (the paper's MLP on [x, y]), ``"gaussian"`` (closed form
            only, no training) or an ``nn.Module`` following the critic call contract.
        marginals: ``"all"`` or ``"shuffle"``; defaults to ``"all"`` for critics with
            ``score_matrix``, ``"shuffle"`` otherwise.
        hidden, embed_dim: widths of the neural critic.
        batch_size, lr, max_steps: training batch (also the read-out batch), Adam rate, step cap.
        heldout: fraction of samples held out for the read-out.
        ema_rate: MINE's moving-average rate; tau: SMILE's clip.
        seed: seeds the split, the initialisation and the batches; CPU runs are deterministic.
        device: defaults to CUDA when available.
        progress: show a progress bar.

    Returns:
        :class:`MIResult` with ``.mi`` (nats), ``.stderr``, ``.interval`` and ``.curve``.

    Raises:
        ValueError: N mismatch, too few samples for one training and one held-out batch, bad
            settings (non-positive ``lr``, ``eval_every``, ``max_steps``, ``patience``),
            NaN or Inf, a non-numeric dtype, or arrays of more than 2 dims.
    """
    start = time.perf_counter()
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {sorted(ESTIMATORS)}")
    if not 0.0 < heldout < 1.0:
        raise ValueError(f"heldout must lie in (0, 1), got {heldout}")
    for name, value in [("batch_size", batch_size), ("max_steps", max_steps), ("eval_every", eval_every)]:
        if int(value) != value or value < (2 if name == "batch_size" else 1):
            raise ValueError(f"{name} must be an integer >= {2 if name == 'batch_size' else 1}, got {value}")
    if patience < 1:
        raise ValueError(f"patience must be at least 1, got {patience}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    x_np, y_np = validate_pair(x, y)
    n = x_np.shape[0]
    n_held = int(round(n * heldout))
    n_monitor = min(_MAX_MONITOR, max(batch_size, (n - n_held) // 5))
    n_train = n - n_held - n_monitor
    if n_train < batch_size or n_held < batch_size:
        need = math.ceil((2 * batch_size) / (1 - heldout))
        need = max(need, math.ceil(batch_size / heldout))
        raise ValueError(
            f"too few samples: N = {n} gives {n_train} training, {n_monitor} monitor and {n_held} "
            f"held-out samples, but training and held-out parts each need at least one batch of "
            f"{batch_size}; pass a smaller batch_size or at least {need} samples"
        )

    device = torch.device(device) if device is not None else _default_device()
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        data_x = torch.as_tensor(_preprocess(x_np, preprocess), dtype=torch.float32)
        data_y = torch.as_tensor(_preprocess(y_np, preprocess), dtype=torch.float32)
        perm = torch.randperm(n, generator=gen)
        tr, mo, ho = perm[:n_train], perm[n_train : n_train + n_monitor], perm[n_train + n_monitor :]
        x_tr, y_tr = data_x[tr].to(device), data_y[tr].to(device)
        x_mo, y_mo = data_x[mo].to(device), data_y[mo].to(device)
        x_ho, y_ho = data_x[ho].to(device), data_y[ho].to(device)

        if isinstance(critic, torch.nn.Module):
            net = critic
        else:
            # the closed-form Gaussian part may use the monitor samples too: it is not selected on
            # them, and their optimism only makes early stopping keep the Gaussian part alone
            x_fit, y_fit = torch.cat([x_tr, x_mo]), torch.cat([y_tr, y_mo])
            net = _build_critic(critic, x_fit, y_fit, hidden, embed_dim)
        if marginals is None:
            marginals = "all" if hasattr(net, "score_matrix") else "shuffle"
        # a self-contained fit: never synchronised with other processes, so any rank may call it
        est = MIEstimator(net, estimator, marginals, ema_rate, tau, sync_ema=False).to(device)
        with torch.enable_grad():  # also when called under torch.no_grad(), e.g. in an eval loop
            steps, best_step, curve = _train(
                est, x_tr, y_tr, x_mo, y_mo, batch_size, lr, max_steps, eval_every, patience, gen, progress
            )
        est.eval()
        mi, se, n_batches = _heldout(est, x_ho, y_ho, batch_size, gen)
    finally:
        torch.random.set_rng_state(torch_state)
    return MIResult(
        mi=mi,
        stderr=se,
        estimator=estimator,
        n_train=n_train,
        n_monitor=n_monitor,
        n_heldout=n_held,
        steps=steps,
        best_step=best_step,
        seconds=time.perf_counter() - start,
        curve=curve,
        n_batches=n_batches,
    )


def _train(
    est: MIEstimator,
    x: Tensor,
    y: Tensor,
    x_monitor: Tensor,
    y_monitor: Tensor,
    batch_size: int,
    lr: float,
    max_steps: int,
    eval_every: int,
    patience: int,
    gen: torch.Generator,
    progress: bool,
) -> tuple[int, int, list[dict[str, float | None]]]:
    """Ascend the estimator's objective on (x, y); keep the state that scores best on the monitor
    set (step 0, the untrained critic, included). Returns (steps run, best step, curve)."""
    params = [p for p in est.parameters() if p.requires_grad]

    def evaluate(step: int, train: float | None) -> float:
        est.eval()
        value = _heldout(est, x_monitor, y_monitor, batch_size, gen)[0]
        est.train()
        curve.append({"step": step, "train": train, "monitor": value})
        return value

    curve: list[dict[str, float | None]] = []
    best, best_step = evaluate(0, None), 0
    if not params:
        return 0, 0, curve
    best_state = copy.deepcopy(est.state_dict())
    opt = torch.optim.Adam(params, lr=lr)
    n = x.shape[0]
    order, pos, bad_evals, step, running = torch.randperm(n, generator=gen), 0, 0, 0, []
    bar = _progress(max_steps, progress)
    for step in range(1, max_steps + 1):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch_size].to(x.device)
        pos += batch_size
        out = est(x[idx], y[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        (-out.objective).backward()
        opt.step()
        running.append(out.mi.detach())
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0 or step == max_steps:
            value = evaluate(step, float(torch.stack(running).mean()))
            running = []
            if bar is not None:
                bar.set_postfix(heldout=f"{value:.3f}")
            if value > best:
                best, best_step, bad_evals = value, step, 0
                best_state = copy.deepcopy(est.state_dict())
            else:
                bad_evals += 1
                if bad_evals >= patience:
                    break
    if bar is not None:
        bar.close()
    est.load_state_dict(best_state)
    return step, best_step, curve


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="estimate_mi", unit="step", leave=False)
