"""``estimate_mi``: fit a critic and read out I(X; Y) on held-out data, in one call.

The call is composed of public pieces, each usable alone:

    options = EstimateOptions(estimator="mine", seed=0)      # every option, checked once
    prepared = prepare_pair(x, y, options)                   # checks, preprocessing, discrete columns
    split = split_pair(prepared, options)                    # train / monitor / held-out tensors
    fitted = fit_critic(split, options)                      # critic fitted, best monitor state kept
    mi, stderr, n_batches = read_out(fitted.estimator, split.x_heldout, split.y_heldout,
                                     fitted.batch_size, fitted.generator)

``estimate_mi(x, y, **options)`` runs them in order and returns an :class:`MIResult`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings as _warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from scipy.stats import t as student_t
from torch import Tensor

from .bounds import log_mean_exp
from .critics import (
    BoundedCritic,
    ConcatCritic,
    CopulaGridCritic,
    GaussianCritic,
    Marginals,
    RadialCritic,
    SeparableCritic,
    StudentTCritic,
    SumCritic,
)
from .discrete import plugin_mi
from .estimator import ESTIMATORS, MIEstimator, lookup
from .preprocess import PREPROCESS, Prepared, preprocess_pair, validate_pair

__all__ = [
    "estimate_mi",
    "EstimateOptions",
    "MIResult",
    "EstimateWarning",
    "Split",
    "Fitted",
    "prepare_pair",
    "split_pair",
    "fit_critic",
    "read_out",
    "validate_pair",
    "PREPROCESS",
    "CRITICS",
]

CRITICS = ("gaussian+separable", "separable", "concat", "gaussian")
DISCRETE = ("auto", "never")
# the neural residual's scores are softly clipped to +-3 nats around the Gaussian part: it keeps
# rare tail pairs from dominating the DV read-out (Student-t suite: see README)
RESIDUAL_BOUND = 3.0
_MAX_MONITOR = 2048
# the DV read-out credits at most 1 nat from a log-partition below zero (see read_out)
PARTITION_FLOOR = -1.0
# the Gaussian part's scores are clamped from below here (see GaussianCritic.set_clip)
GAUSSIAN_FLOOR = -5.0
# ... and above at this quantile of its joint scores on the fit sample
GAUSSIAN_CEILING_QUANTILE = 0.99
# degrees of freedom of the Student-t copula critics the closed-form part is chosen among
T_COPULA_DOFS = (1.0, 2.0, 3.0, 5.0, 10.0)
# ... tried only with at least this many training samples per column (dx + dz)
T_COPULA_SAMPLES_PER_DIM = 10
# folds of the cross-fitted read-out of a closed-form critic (see cross_fitted_read_out)
CROSS_FIT_FOLDS = 5
# ... used only for estimates at least this far below ln(N / CROSS_FIT_FOLDS) (nats)
CROSS_FIT_HEADROOM = 2.0
# (bins, smoothing in cells) of the copula-histogram critics tried for one column a side
COPULA_GRIDS = ((32, 1.0), (64, 1.0), (64, 2.0), (128, 2.0))
_MAX_BATCH = 512
_MIN_AUTO_BATCH = 16
_SE_BATCHES = 10  # held-out batches at least (of >= 64 samples), for the standard error
# the plug-in estimate is used for discrete pairs while the occupied joint cells are few enough
# that each holds about this many samples on average
_SAMPLES_PER_CELL = 10


class EstimateWarning(UserWarning):
    """An estimate that should be read with care (see ``MIResult.warnings``)."""


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float | None = None, low_open=True) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        side = f"> {low}" if low_open else f">= {low}"
        raise ValueError(
            f"{name} must be a finite number {side}{'' if high is None else f' and <= {high}'}, got {value!r}"
        )


@dataclass
class EstimateOptions:
    """Every option of :func:`estimate_mi`, checked on construction (ValueError naming the
    option). The command line ``mine-reg estimate`` is generated from these fields."""

    estimator: str = field(
        default="mine", metadata={"help": "bound to train and read out", "choices": tuple(ESTIMATORS)}
    )
    critic: str | torch.nn.Module = field(
        default="gaussian+separable",
        metadata={"help": "critic kind (or an nn.Module in Python)", "choices": CRITICS},
    )
    marginals: str | None = field(
        default=None,
        metadata={
            "help": "all (every off-diagonal pair) or shuffle; default: all when the critic can",
            "choices": ("all", "shuffle"),
        },
    )
    hidden: tuple[int, ...] = field(
        default=(128, 128), metadata={"help": "hidden widths of the neural critic"}
    )
    embed_dim: int = field(default=32, metadata={"help": "embedding width of the separable critic"})
    batch_size: int | None = field(
        default=None,
        metadata={"help": "training and read-out batch; default: min(512, training samples / 4)"},
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the critic"})
    max_steps: int = field(default=2000, metadata={"help": "training step cap"})
    eval_every: int = field(default=25, metadata={"help": "steps between monitor evaluations"})
    patience: int = field(default=4, metadata={"help": "evaluations without improvement before stopping"})
    heldout: float = field(default=0.5, metadata={"help": "fraction of samples held out for the read-out"})
    preprocess: str = field(default="quantile", metadata={"help": "per-column map", "choices": PREPROCESS})
    discrete: str = field(
        default="auto",
        metadata={
            "help": "auto: count (plug-in, Miller-Madow) when every column is discrete; never",
            "choices": DISCRETE,
        },
    )
    ema_rate: float = field(default=0.01, metadata={"help": "MINE's moving-average rate, in (0, 1]"})
    tau: float = field(default=5.0, metadata={"help": "SMILE's clip"})
    seed: int = field(default=0, metadata={"help": "seeds the split, the initialisation and the batches"})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1, ...; default: cuda if available"}
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads for the call; default: 1 on CPU (stable beside busy neighbours)"},
    )
    progress: bool = field(default=False, metadata={"help": "progress bar on stderr"})

    def __post_init__(self) -> None:
        lookup(self.estimator, MIEstimator)
        if not isinstance(self.critic, torch.nn.Module) and self.critic not in CRITICS:
            raise ValueError(f"unknown critic {self.critic!r}; choose from {CRITICS} or pass an nn.Module")
        if self.marginals not in (None, "all", "shuffle"):
            raise ValueError(f"unknown marginals {self.marginals!r}; choose from 'all', 'shuffle'")
        try:
            self.hidden = tuple(self.hidden)
        except TypeError:
            raise ValueError(f"hidden must be a sequence of positive integers, got {self.hidden!r}") from None
        for width in self.hidden:
            _check_int("every hidden width", width, 1)
        _check_int("embed_dim", self.embed_dim, 1)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 2)
        _check_float("lr", self.lr, 0.0)
        _check_int("max_steps", self.max_steps, 1)
        _check_int("eval_every", self.eval_every, 1)
        _check_int("patience", self.patience, 1)
        _check_float("heldout", self.heldout, 0.0)
        if not self.heldout < 1:
            raise ValueError(f"heldout must lie in (0, 1), got {self.heldout}")
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; choose from {PREPROCESS}")
        if self.discrete not in DISCRETE:
            raise ValueError(f"unknown discrete {self.discrete!r}; choose from {DISCRETE}")
        _check_float("ema_rate", self.ema_rate, 0.0, 1.0)
        _check_float("tau", self.tau, 0.0)
        _check_int("seed", self.seed, 0)
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, 1)
        self.resolved_device()  # a bad device is reported here, not after the data is loaded

    def resolved_device(self) -> torch.device:
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device must name a torch device such as 'cpu' or 'cuda:0', got {self.device!r}"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asks for CUDA, which is not available here")
        if device.type not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"device {self.device!r} is not supported; use 'cpu' or 'cuda'")
        return device


@dataclass
class MIResult:
    """An MI estimate in nats.

    mi: the estimate (nats). stderr: standard error (nats) over the ``n_batches`` held-out
    batches: the read-out's sampling noise for the fitted critic. It does not cover the bias of
    the bound (a critic short of the optimum reads low) nor the spread between refits with
    other seeds. interval: 95% Student-t interval from stderr with ``n_batches - 1`` degrees of
    freedom, with the same meaning. curve: one dict per evaluation with ``step``, ``train``
    (mean training bound since the last evaluation; None at step 0) and ``monitor`` (the bound
    on the monitor set), in nats. method: ``"critic"`` (a trained critic read out on held-out
    data) or ``"plug-in"`` (discrete data: Miller-Madow counts over all samples). warnings:
    reasons to read the number with care (estimate near the ln N ceiling, columns dropped,
    training diverged, a negative read-out replaced by 0). raw_mi: the held-out read-out before
    a negative value is replaced by 0 (None for the plug-in and constant paths). folds: 1 (one
    held-out part, ``n_heldout`` samples), or :data:`CROSS_FIT_FOLDS` when the critic is the
    closed-form part alone (its neural residual never improved on the monitor set) and the
    held-out read-out is at least :data:`CROSS_FIT_HEADROOM` below ln(N / folds): then every
    sample is read out once, by that part refitted on the other folds, the estimate is the mean
    over folds (``n_train``, ``n_monitor`` and ``n_heldout`` still count the parts the critic's
    choices and training used). ``float(result) == result.mi``.
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
    method: str = "critic"
    warnings: list[str] = field(default_factory=list)
    raw_mi: float | None = None
    folds: int = 1

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of the read-out noise (Student-t over held-out batches; see the class)."""
        q = float(student_t.ppf(0.975, self.n_batches - 1)) if self.n_batches >= 2 else 1.96
        return (self.mi - q * self.stderr, self.mi + q * self.stderr)

    def __float__(self) -> float:
        return self.mi

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Draw the critic's training and monitor curve with the held-out read-out and its
        interval to a PNG at ``path`` (matplotlib, imported here); returns the path."""
        from .plots import plot_result

        return plot_result(self, path, title=title)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "curve"}
        return {**out, "interval": list(self.interval)}


# --------------------------------------------------------------------------- pieces


def prepare_pair(x: Any, y: Any, options: EstimateOptions) -> Prepared:
    """Check the arrays, drop constant columns, flag discrete ones and preprocess each column."""
    x_np, y_np = validate_pair(x, y)
    return preprocess_pair(x_np, y_np, options.preprocess)


@dataclass
class Split:
    """Preprocessed float32 tensors [n, d] on the estimator's device, and the batch size."""

    x_train: Tensor
    y_train: Tensor
    x_monitor: Tensor
    y_monitor: Tensor
    x_heldout: Tensor
    y_heldout: Tensor
    batch_size: int
    generator: torch.Generator


def _sizes(n: int, options: EstimateOptions) -> tuple[int, int, int, int]:
    """(train, monitor, held-out, batch) sample counts; ValueError when N is too small."""
    n_held = int(round(n * options.heldout))
    rest = n - n_held
    batch = options.batch_size
    if batch is None:
        n_monitor = min(_MAX_MONITOR, rest // 5)
        batch = min(_MAX_BATCH, (rest - n_monitor) // 4)
        if batch < _MIN_AUTO_BATCH or n_held < batch:
            need = math.ceil(5 * 4 * _MIN_AUTO_BATCH / 4 / (1 - options.heldout))
            raise ValueError(
                f"too few samples: N = {n} leaves {rest - n_monitor} training samples, fewer than four "
                f"batches of {_MIN_AUTO_BATCH}; give at least {need} samples"
            )
        n_monitor = max(n_monitor, batch)
    else:
        n_monitor = min(_MAX_MONITOR, max(batch, rest // 5))
    n_train = rest - n_monitor
    if n_train < batch or n_held < batch:
        need = max(math.ceil((2 * batch) / (1 - options.heldout)), math.ceil(batch / options.heldout))
        raise ValueError(
            f"too few samples: N = {n} gives {n_train} training, {n_monitor} monitor and {n_held} "
            f"held-out samples, but training and held-out parts each need at least one batch of "
            f"{batch}; pass a smaller batch_size or at least {need} samples"
        )
    return n_train, n_monitor, n_held, batch


def split_pair(prepared: Prepared, options: EstimateOptions) -> Split:
    """Seeded random split into training, monitor (early stopping) and held-out (read-out) parts."""
    n = prepared.x.shape[0]
    n_train, n_monitor, _, batch = _sizes(n, options)
    device = options.resolved_device()
    gen = torch.Generator().manual_seed(options.seed)
    data_x = torch.as_tensor(prepared.x, dtype=torch.float32)
    data_y = torch.as_tensor(prepared.y, dtype=torch.float32)
    perm = torch.randperm(n, generator=gen)
    parts = perm[:n_train], perm[n_train : n_train + n_monitor], perm[n_train + n_monitor :]
    tensors = [t[idx].to(device) for idx in parts for t in (data_x, data_y)]
    return Split(*tensors, batch_size=batch, generator=gen)


def _batches(n: int, batch_size: int, readout: str, device: torch.device) -> list[Tensor]:
    n_batches = n // batch_size
    if readout != "infonce":  # InfoNCE's value depends on the batch size; the others may use
        n_batches = max(n_batches, min(_SE_BATCHES, n // 64))  # more, smaller batches for the SE
    n_batches = max(2, n_batches) if n >= 4 else 1
    return list(torch.tensor_split(torch.arange(n, device=device), n_batches))


@torch.no_grad()
def read_out(
    est: MIEstimator, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator
) -> tuple[float, float, int]:
    """The estimator's read-out bound on (x, y): (pooled estimate, standard error over batches,
    batches), in nats. Every batch's pairs are pooled into one value, except for InfoNCE (whose
    value depends on the batch size: the mean over batches).

    A DV read-out is E_P[T] - max(log E_Q[exp T], PARTITION_FLOOR): never above DV itself, so
    still a lower bound for the fitted critic, and it keeps a near-deterministic pair, whose
    marginal pairs almost never land where the critic puts its mass, from reading the joint
    term plus an arbitrarily large, unsupported log-partition correction."""
    readout = est.spec.readout

    def value(joint: Tensor, marginal: Tensor) -> float:
        if readout == "dv":
            return float(joint.double().mean() - log_mean_exp(marginal).double().clamp_min(PARTITION_FLOOR))
        return float(est.bound(readout, joint, marginal))

    per_batch, joints, marginals = [], [], []
    for idx in _batches(x.shape[0], batch_size, readout, x.device):
        joint, marginal = est.scores(x[idx], y[idx], generator=generator)
        joint, marginal = joint.float(), marginal.float()
        per_batch.append(value(joint, marginal))
        joints.append(joint)
        marginals.append(rearrange(marginal, "b k -> (b k)"))
    if readout == "infonce":
        point = float(np.mean(per_batch))
    else:
        point = value(torch.cat(joints), torch.cat(marginals))
    se = float(np.std(per_batch, ddof=1) / math.sqrt(len(per_batch))) if len(per_batch) > 1 else float("nan")
    return point, se, len(per_batch)


@torch.no_grad()
def _dv_by_rank(gauss: GaussianCritic, x: Tensor, y: Tensor, batch_size: int, ceilings: Tensor) -> Tensor:
    """The pooled DV read-out (log-partition floored, as in read_out) on (x, y) of the Gaussian
    critic keeping its k strongest canonical pairs, its scores clamped to [floor, ceilings[k]],
    for every k = 0 .. r (all off-diagonal pairs of each batch as marginals): [r + 1]."""
    u, v = gauss.canonical(x, y)
    rho, _, const, quad, cross = gauss.coefficients(kept_only=False)
    joint = gauss.prefix_joint_scores(x, y)
    joint_mean = torch.minimum(joint.clamp_min(gauss.floor), ceilings).mean(dim=0)
    lse, count = [], 0
    for idx in _batches(x.shape[0], batch_size, "dv", x.device):
        ub, vb = u[idx], v[idx]
        off = ~torch.eye(len(idx), dtype=torch.bool, device=x.device)
        m = torch.zeros(len(idx), len(idx), dtype=u.dtype, device=x.device)
        per_k = [torch.logsumexp(m[off].clamp(gauss.floor, ceilings[0]), 0)]
        for k in range(len(rho)):
            qx, qz = quad[k] * ub[:, k] ** 2, quad[k] * vb[:, k] ** 2
            m += const[k] + cross[k] * torch.outer(ub[:, k], vb[:, k]) - qx[:, None] - qz[None, :]
            per_k.append(torch.logsumexp(m[off].clamp(gauss.floor, ceilings[k + 1]), 0))
        lse.append(torch.stack(per_k))
        count += int(off.sum())
    log_partition = torch.logsumexp(torch.stack(lse), dim=0) - math.log(count)
    return joint_mean - log_partition.clamp_min(PARTITION_FLOOR)


def _ceilings(gauss: GaussianCritic, x: Tensor, y: Tensor) -> Tensor:
    """Per rank k, the GAUSSIAN_CEILING_QUANTILE of the joint scores on the fit sample (x, y)."""
    return torch.quantile(gauss.prefix_joint_scores(x, y), GAUSSIAN_CEILING_QUANTILE, dim=0)


Maker = Callable[[Tensor, Tensor], torch.nn.Module]  # fit a chosen closed-form critic to (x, y)


def choose_gaussian(x: Tensor, y: Tensor, x_monitor: Tensor, y_monitor: Tensor, batch_size: int) -> Maker:
    """The :class:`GaussianCritic` whose shrinkage (none or Ledoit-Wolf) and rank (strongest
    canonical pairs kept) score best on the monitor set, fitted on (x, y); returned as the maker
    that fits that choice to any sample, its scores clamped below at GAUSSIAN_FLOOR and above at
    the GAUSSIAN_CEILING_QUANTILE of its own joint scores on the fit sample. Rank 0 (the zero
    critic, 0 nats) is a candidate, so in many dimensions at small N the Gaussian part never
    reads far below zero."""
    dx, dy = x.shape[1], y.shape[1]
    best: tuple[float, float | None, int] = (-math.inf, 0.0, 0)
    for shrinkage in (0.0, None):
        candidate = GaussianCritic(dx, dy).to(x.device).fit(x, y, shrinkage=shrinkage)
        candidate.set_clip(GAUSSIAN_FLOOR)
        values = _dv_by_rank(candidate, x_monitor, y_monitor, batch_size, _ceilings(candidate, x, y))
        values = torch.where(torch.isfinite(values), values, -math.inf)
        rank = int(torch.argmax(values))
        if float(values[rank]) > best[0]:
            best = (float(values[rank]), shrinkage, rank)
    _, shrinkage, rank = best
    return partial(_gaussian, shrinkage=shrinkage, rank=rank)


def _gaussian(x: Tensor, y: Tensor, shrinkage: float | None, rank: int) -> GaussianCritic:
    gauss = GaussianCritic(x.shape[1], y.shape[1]).to(x.device).fit(x, y, shrinkage=shrinkage, rank=rank)
    return gauss.clip_at_quantile(x, y, GAUSSIAN_CEILING_QUANTILE, GAUSSIAN_FLOOR)


def _with_radial(x: Tensor, y: Tensor, gaussian: Maker) -> SumCritic:
    return SumCritic(gaussian(x, y), RadialCritic().to(x.device).fit(x, y))


def choose_closed_form(split: Split, normal_scores: bool = True) -> Maker:
    """The default critic's closed-form part, whichever of these scores highest on the monitor
    set, as the maker that fits it to a sample: :func:`choose_gaussian`'s Gaussian; that plus a
    :class:`RadialCritic` (shared-scale dependence of elliptical data, for two or more columns
    a side); and, when the inputs are normal scores (``preprocess="quantile"``), a
    :class:`StudentTCritic` at each dof in :data:`T_COPULA_DOFS` (heavy-tailed elliptical
    dependence: the t copula) and, for one column a side, a :class:`CopulaGridCritic` at each
    (bins, smooth) in :data:`COPULA_GRIDS` (any shape). The Gaussian's own choices are made with
    it fitted on the training samples, then it is refitted on training and monitor samples;
    the other candidates are fitted on the training samples and compared with it."""
    x, y = split.x_train, split.y_train
    gaussian = choose_gaussian(x, y, split.x_monitor, split.y_monitor, split.batch_size)
    x_fit, y_fit = torch.cat([x, split.x_monitor]), torch.cat([y, split.y_monitor])

    def monitor(critic: torch.nn.Module) -> float:
        est = MIEstimator(critic, "mine", "all", sync_ema=False)
        value = read_out(est, split.x_monitor, split.y_monitor, split.batch_size, split.generator)[0]
        return value if math.isfinite(value) else -math.inf

    gauss = gaussian(x_fit, y_fit)
    best, best_value = gaussian, monitor(gauss)
    if min(x.shape[1], y.shape[1]) >= 2:  # a scale shared by several coordinates
        value = monitor(SumCritic(gauss, RadialCritic().to(x.device).fit(x, y)))
        if value > best_value:
            best, best_value = partial(_with_radial, gaussian=gaussian), value
    if not normal_scores:
        return best
    # a full scatter matrix needs many samples per entry: only where it is well determined
    few_dims = (x.shape[1] + y.shape[1]) * T_COPULA_SAMPLES_PER_DIM <= len(x)
    candidates = [partial(_student_t, dof=dof) for dof in T_COPULA_DOFS] if few_dims else []
    if x.shape[1] == y.shape[1] == 1:
        candidates += [partial(_copula_grid, bins=b, smooth=h) for b, h in COPULA_GRIDS]
    for make in candidates:
        try:
            value = monitor(make(x, y))
        except torch.linalg.LinAlgError:  # a singular scatter (tied or collinear columns): skip it
            continue
        if value > best_value:
            best, best_value = make, value
    return best


def cross_fitted_read_out(split: Split, options: EstimateOptions, make: Maker) -> tuple[float, float, int]:
    """The read-out of a closed-form critic with K-fold cross-fitting (K = :data:`CROSS_FIT_FOLDS`):
    all samples of ``split`` are cut into K folds, and each fold is read out by the critic that
    ``make`` fits to the other K - 1. The critic is then fitted on (K - 1)/K of the samples
    rather than on the training and monitor parts alone, which shrinks its fitting shortfall
    (about fitted parameters / (2·n_fit) nats), and every sample is read out once. The choice
    ``make`` stands for (rank, shrinkage, family) was made on the monitor part, a fifth of the
    non-held-out samples. Returns (mean over folds, its standard error, read-out batches)."""
    xs = torch.cat([split.x_train, split.x_monitor, split.x_heldout])
    ys = torch.cat([split.y_train, split.y_monitor, split.y_heldout])
    order = torch.randperm(xs.shape[0], generator=split.generator).to(xs.device)
    folds = torch.tensor_split(order, CROSS_FIT_FOLDS)
    values, variances, batches = [], [], 0
    for k, fold in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != k])
        critic = make(xs[rest], ys[rest])
        est = MIEstimator(critic, options.estimator, "all", options.ema_rate, options.tau, sync_ema=False)
        est = est.to(xs.device)
        value, se, n_batches = read_out(est, xs[fold], ys[fold], split.batch_size, split.generator)
        values.append(value)
        variances.append(se**2)
        batches += n_batches
    return sum(values) / len(values), math.sqrt(sum(variances)) / len(values), batches


def _copula_grid(x: Tensor, y: Tensor, bins: int, smooth: float) -> CopulaGridCritic:
    critic = CopulaGridCritic(bins, smooth).to(x.device).fit(x, y)
    return critic.set_clip(GAUSSIAN_FLOOR)


def _student_t(x: Tensor, y: Tensor, dof: float) -> StudentTCritic:
    critic = StudentTCritic(x.shape[1], y.shape[1], dof).to(x.device).fit(x, y)
    return critic.clip_at_quantile(x, y, GAUSSIAN_CEILING_QUANTILE, GAUSSIAN_FLOOR)


def _build_critic(split: Split, options: EstimateOptions) -> tuple[torch.nn.Module, Maker | None]:
    """The critic to train, and the maker of its closed-form part (None without one)."""
    if isinstance(options.critic, torch.nn.Module):
        return options.critic, None
    dx, dy = split.x_train.shape[1], split.y_train.shape[1]
    if options.critic == "separable":
        return SeparableCritic(dx, dy, options.hidden, options.embed_dim), None
    if options.critic == "concat":
        return ConcatCritic(dx, dy, options.hidden), None
    make = choose_closed_form(split, normal_scores=options.preprocess == "quantile")
    fit_x, fit_y = torch.cat([split.x_train, split.x_monitor]), torch.cat([split.y_train, split.y_monitor])
    closed_form = make(fit_x, fit_y)
    if options.critic == "gaussian":
        return closed_form, make
    residual = BoundedCritic(SeparableCritic(dx, dy, options.hidden, options.embed_dim), bound=RESIDUAL_BOUND)
    return SumCritic(closed_form, residual), make


@dataclass
class Fitted:
    """A fitted estimator (best monitor state loaded) and how its training went."""

    estimator: MIEstimator
    steps: int
    best_step: int
    curve: list[dict[str, float | None]]
    batch_size: int
    generator: torch.Generator
    warnings: list[str] = field(default_factory=list)
    closed_form: Maker | None = None  # the maker of the critic's closed-form part, if it has one


def fit_critic(split: Split, options: EstimateOptions) -> Fitted:
    """Build the critic and ascend the estimator's objective on the training part; keep the state
    that scores best on the monitor set (step 0, the untrained critic, included). Training stops
    after ``patience`` evaluations without improvement, or at the first non-finite objective
    (then the best finite state is kept and a warning says so)."""
    device = split.x_train.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        net, make = _build_critic(split, options)
    marginals: Marginals = options.marginals or ("all" if hasattr(net, "score_matrix") else "shuffle")
    # a self-contained fit: never synchronised with other processes, so any rank may call it
    est = MIEstimator(net, options.estimator, marginals, options.ema_rate, options.tau, sync_ema=False).to(
        device
    )
    gen, batch = split.generator, split.batch_size
    fitted = Fitted(est, 0, 0, [], batch, gen, closed_form=make)

    def evaluate(step: int, train: float | None) -> float:
        est.eval()
        value = read_out(est, split.x_monitor, split.y_monitor, batch, gen)[0]
        est.train()
        fitted.curve.append({"step": step, "train": train, "monitor": value})
        return value if math.isfinite(value) else -math.inf

    best = evaluate(0, None)
    params = [p for p in est.parameters() if p.requires_grad]
    best_state = copy.deepcopy(est.state_dict())
    if params:
        best, best_state = _train(est, params, split, options, fitted, evaluate, best, best_state)
    if best == -math.inf:
        raise ValueError(
            "the critic's scores on the monitor set are not finite at any evaluation (NaN or Inf "
            "weights, or scores that overflow); check the critic, or lower lr"
        )
    est.load_state_dict(best_state)
    est.eval()
    return fitted


def _train(est, params, split, options, fitted, evaluate, best, best_state):
    opt = torch.optim.Adam(params, lr=options.lr)
    x, y, gen, batch = split.x_train, split.y_train, split.generator, split.batch_size
    n = x.shape[0]
    order, pos, bad_evals, running = torch.randperm(n, generator=gen), 0, 0, []
    bar = _progress(options.max_steps, options.progress)
    step = 0
    for step in range(1, options.max_steps + 1):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch].to(x.device)
        pos += batch
        out = est(x[idx], y[idx], generator=gen)
        if not torch.isfinite(out.objective):
            fitted.warnings.append(
                f"training diverged at step {step} (non-finite objective); kept the best finite "
                f"state, from step {fitted.best_step}"
            )
            break
        opt.zero_grad(set_to_none=True)
        (-out.objective).backward()
        opt.step()
        running.append(out.mi.detach())
        if bar is not None:
            bar.update(1)
        if step % options.eval_every == 0 or step == options.max_steps:
            value = evaluate(step, float(torch.stack(running).mean()))
            running = []
            if bar is not None:
                bar.set_postfix(monitor=f"{value:.3f}")
            if value > best:
                best, fitted.best_step, bad_evals = value, step, 0
                best_state = copy.deepcopy(est.state_dict())
            else:
                bad_evals += 1
                if bad_evals >= options.patience:
                    break
    fitted.steps = step
    if bar is not None:
        bar.close()
    return best, best_state


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="estimate_mi", unit="step", leave=False)


@contextlib.contextmanager
def _scoped_threads(options: EstimateOptions) -> Iterator[None]:
    """torch's intra-op threads for the call, restored afterwards. On CPU the default is one: the
    critics are small, so extra threads gain little and spin badly beside busy processes."""
    if options.resolved_device().type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(options.num_threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trust_warnings(result: MIResult) -> list[str]:
    out = []
    total = result.n_train + result.n_monitor + result.n_heldout
    read = total // result.folds if result.folds > 1 else result.n_heldout  # one read-out's samples
    ceiling = math.log(max(read, 2))
    if result.method == "critic" and result.mi > ceiling - 1.0:
        out.append(
            f"the estimate {result.mi:.2f} nats is near or above ln N = {ceiling:.2f} for {read} "
            "held-out samples, the most a lower-bound estimate can certify: the true MI may be higher"
        )
    if result.method == "plug-in" and result.mi < 0:
        out.append(f"the counting estimate {result.mi:.3f} nats is below zero: no dependence was detected")
    return out


def _plugin_result(prepared: Prepared, options: EstimateOptions, start: float) -> MIResult | None:
    n = prepared.x.shape[0]
    if options.discrete != "auto" or not prepared.all_discrete:
        return None
    mi, se, cells = plugin_mi(prepared.raw_x, prepared.raw_y)
    if cells * _SAMPLES_PER_CELL > n:
        prepared.warnings.append(
            f"the data are discrete but occupy {cells} joint cells for N = {n} samples, too many to "
            "count reliably; a critic was trained instead"
        )
        return None
    return MIResult(
        mi,
        se,
        "plug-in",
        0,
        0,
        n,
        0,
        0,
        time.perf_counter() - start,
        method="plug-in",
        n_batches=0,
        warnings=list(prepared.warnings),
    )


def _constant_result(prepared: Prepared, options: EstimateOptions, start: float) -> MIResult | None:
    if prepared.x.shape[1] and prepared.y.shape[1]:
        return None
    side = "x" if not prepared.x.shape[1] else "y"
    notes = [*prepared.warnings, f"{side} is constant, so I(X;Y) = 0 exactly"]
    n = prepared.x.shape[0]
    return MIResult(
        0.0,
        0.0,
        options.estimator,
        0,
        0,
        n,
        0,
        0,
        time.perf_counter() - start,
        method="constant",
        warnings=notes,
    )


def estimate_mi(x: Any, y: Any, estimator: str = "mine", **options: Any) -> MIResult:
    """Estimate I(X; Y) in nats with a trained critic, read out on held-out samples only.

    A multivariate counterpart of scikit-learn's ``mutual_info_regression``:

    1. constant columns are dropped (if one side has none left, the answer is exactly 0); each
       column is preprocessed: ``"quantile"`` (default) maps mid-ranks (ties averaged) to
       standard-normal scores, an invertible map per coordinate, so MI is unchanged while heavy
       tails and warps are removed; ``"standardize"``: zero mean, unit variance; ``"none"``;
    2. discrete data (every column with at most 64 distinct values, and few enough joint cells
       that each holds about 10 samples) is counted instead: the plug-in MI with the
       Miller-Madow bias correction over all samples (``discrete="never"`` turns this off);
    3. otherwise the samples are split at random into a held-out part (``heldout``), used only
       for the final read-out, and the rest, of which a monitor set (a fifth, at most 2,048) is
       kept aside for choices and early stopping;
    4. the critic is fitted on the training part: the default ``"gaussian+separable"`` is a
       closed-form Gaussian log density ratio in canonical-correlation form (its shrinkage and
       the number of canonical pairs it keeps are chosen on the monitor set, rank 0 = the zero
       critic included) plus a separable neural critic (softly clipped to +-3) starting at zero
       and trained with the chosen estimator's bound to learn what the Gaussian part misses;
    5. training stops once the monitor bound has not improved for ``patience`` evaluations, and
       the best state is kept (the untrained one included);
    6. the bound is read out on the whole held-out part, with a standard error over batches;
       when the residual never beat its untrained zero (the critic is its closed-form part) and
       that read-out is at least 2 nats below ln(N / 5), it is cross-fitted instead: each of 5
       folds of all samples is read out by the closed-form critic, with the same choices,
       refitted on the other four.

    Args:
        x: [N, dx] or [N] (one column); numpy array, tensor (any dtype, bf16 included) or nested
            sequence of numbers.
        y: [N, dy] or [N].
        estimator: ``"mine"`` (DV bound, bias-corrected gradient) or any name in
            :data:`mine_reg.estimator.ESTIMATORS`.
        **options: any field of :class:`EstimateOptions` (critic, marginals, hidden, embed_dim,
            batch_size, lr, max_steps, eval_every, patience, heldout, preprocess, discrete,
            ema_rate, tau, seed, device, num_threads, progress).

    Returns:
        :class:`MIResult` with ``.mi`` (nats), ``.stderr``, ``.interval``, ``.curve`` and
        ``.warnings`` (also issued as :class:`EstimateWarning`). Never NaN or Inf.

    Raises:
        ValueError: a bad option (named), N mismatch, too few samples, NaN or Inf, a non-numeric
            dtype, arrays of more than 2 dims, or a critic whose scores are never finite.
    """
    start = time.perf_counter()
    known = {f.name for f in dataclasses.fields(EstimateOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"estimate_mi() got unknown option(s) {unknown}; options: {sorted(known)}")
    opts = EstimateOptions(estimator=estimator, **options)
    prepared = prepare_pair(x, y, opts)
    result = _constant_result(prepared, opts, start) or _plugin_result(prepared, opts, start)
    if result is None:
        result = _critic_result(prepared, opts, start)
    result.warnings += _trust_warnings(result)
    for message in result.warnings:
        _warnings.warn(message, EstimateWarning, stacklevel=2)
    return result


def _critic_result(prepared: Prepared, opts: EstimateOptions, start: float) -> MIResult:
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(opts.seed)  # any randomness a user's critic draws from the global generator
    try:
        # inference_mode(False) + enable_grad: also when called inside an eval loop
        with torch.inference_mode(False), torch.enable_grad(), _scoped_threads(opts):
            split = split_pair(prepared, opts)
            fitted = fit_critic(split, opts)
            mi, se, n_batches = read_out(
                fitted.estimator, split.x_heldout, split.y_heldout, split.batch_size, split.generator
            )
            folds = 1
            # the residual never beat its untrained zero: the critic is the closed-form part,
            # cheap to refit, so every sample is read out once by a critic fitted on the rest;
            # not near a fold's ln N ceiling, where a read-out on fewer samples reads lower
            fold_ceiling = math.log(max(len(prepared.x) // CROSS_FIT_FOLDS, 2))
            if (
                fitted.best_step == 0
                and fitted.closed_form is not None
                and mi <= fold_ceiling - CROSS_FIT_HEADROOM
            ):
                mi, se, n_batches = cross_fitted_read_out(split, opts, fitted.closed_form)
                folds = CROSS_FIT_FOLDS
    finally:
        torch.random.set_rng_state(torch_state)
    notes = [*prepared.warnings, *fitted.warnings]
    raw = mi
    if mi < 0:
        # the zero critic reads exactly 0 on any data: a critic that does worse on held-out pairs
        # has fitted noise, and 0 is the better estimate of a quantity that is never negative
        notes.append(
            f"the held-out read-out was {mi:.3g} nats, below the zero critic's 0: the fitted critic "
            "does not generalise (no dependence found, or too few samples for the dimension); 0 is reported"
        )
        mi = 0.0
    if not math.isfinite(raw):
        raise ValueError(
            "the held-out read-out is not finite: the fitted critic's scores overflow on held-out "
            "samples; lower lr or use a bounded estimator such as 'infonce'"
        )
    return MIResult(
        mi=mi,
        stderr=se if math.isfinite(se) else 0.0,
        estimator=opts.estimator,
        n_train=split.x_train.shape[0],
        n_monitor=split.x_monitor.shape[0],
        n_heldout=split.x_heldout.shape[0],
        steps=fitted.steps,
        best_step=fitted.best_step,
        seconds=time.perf_counter() - start,
        curve=fitted.curve,
        n_batches=n_batches,
        warnings=notes,
        raw_mi=raw,
        folds=folds,
    )
