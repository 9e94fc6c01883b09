"""``MIRegularizer``: add beta·I(X; Z) to any model's loss through forward hooks.

    reg = MIRegularizer(model, x="input", z="encoder.fc2", beta=1e-3, mode="minimize")
    ...
    loss = task_loss + reg()          # the one added line
    loss.backward(); optimizer.step()

Backpropagating ``reg()`` moves the model by beta·dI (down for ``"minimize"``, up for
``"maximize"``) while, in the same backward pass, the critic receives the gradient that ascends
its bound; the critic's optimizer (:mod:`mine_reg.critic_optimizer`) steps as soon as that
gradient lands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from . import sync
from .critic_optimizer import CriticOptimizer
from .estimator import MIEstimator, NonFiniteScores, lookup
from .fused_term import FusedTerm, fused_mine_term, fused_parameters
from .hooks import Spec, Tap, check_inputs_finite, check_mean_std, check_pair, read_pair
from .protocol import BuildOptions, CriticSpec, Terms

__all__ = ["MIRegularizer", "DEFAULT_ESTIMATOR"]

DEFAULT_ESTIMATOR = {"minimize": "club", "maximize": "mine"}
"""The estimator each mode uses when none is named: an upper bound to push down, MINE to push up."""


class _GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``holder[0]``, read at backward
    time, so the factor can be set after the forward pass (adaptive clipping)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, holder: list[float]) -> Tensor:
        ctx.holder = holder
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.holder[0], None


def _map(fn: Any, z: Any) -> Any:
    """``fn`` applied to a tensor, or to each tensor of a (mean, std) pair."""
    return tuple(fn(t) for t in z) if isinstance(z, tuple) else fn(z)


def _check_settings(
    mode: str, beta: float, lr: float, warmup_steps: int, seed: int, extra_critic_steps: int
) -> None:
    """ValueError naming the first of MIRegularizer's plain settings that is out of range."""
    if mode not in ("minimize", "maximize"):
        raise ValueError(f"mode must be 'minimize' or 'maximize', got {mode!r}")

    def finite(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name, value, ok, wanted in [
        ("beta", beta, finite(beta) and beta >= 0, "a finite number >= 0"),
        ("lr", lr, finite(lr) and lr > 0, "a positive number"),
        (
            "warmup_steps",
            warmup_steps,
            finite(warmup_steps) and 0 <= warmup_steps == int(warmup_steps),
            "an integer >= 0",
        ),
        ("seed", seed, integer(seed), "an integer"),
        (
            "extra_critic_steps",
            extra_critic_steps,
            integer(extra_critic_steps) and extra_critic_steps >= 0,
            "an integer >= 0",
        ),
    ]:
        if not ok:
            raise ValueError(f"{name} must be {wanted}, got {value!r}")


def _clip_scale(model: nn.Module, task_loss: Tensor, mi_term: Tensor) -> float:
    """min(||g_u||, ||g_m||) / ||g_m|| for the task gradient g_u and MI gradient g_m on the model's
    parameters (the MINE paper's adaptive clipping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for loss in (task_loss, mi_term):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms.append(math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None)))
    norm_u, norm_m = norms
    return 1.0 if norm_m == 0.0 else min(norm_u, norm_m) / norm_m


class MIRegularizer(nn.Module):
    """beta·I(X; Z) as a loss term, read from a model through forward hooks.

    Args:
        model: any ``nn.Module`` (also wrapped by DDP / Accelerate or ``torch.compile`` after
            the regularizer was attached).
        x, z: where X and Z come from: a spec of :mod:`mine_reg.hooks` (``"input"``, a dotted
            submodule name, ``"name:input"``, a callable on the model's input, ``(name, callable)``
            with the callable given the module's whole output, ``(name, callable_or_None,
            einops_pattern)`` for seq-first layers) or ``None`` to pass the tensor at call time
            (``reg(x=..., z=...)``). Activations of any shape are flattened per sample:
            [B, ...] -> [B, D]; integer tensors (token ids, class indices) are refused: hook the
            embedding layer, or pass one-hot floats. Forward passes under ``torch.no_grad()`` are
            not captured; all forward passes since the last call are read together (gradient
            accumulation: several micro-batches, one call), joined along the batch.
        beta: weight of the MI term (nats are multiplied by beta).
        mode: ``"minimize"`` (information bottleneck) or ``"maximize"`` (GAN codes, ALI).
        estimator: a name in :data:`mine_reg.estimator.REGISTRY`. Default: ``"club"`` for
            ``"minimize"`` (the CLUB upper bound through a Gaussian q(z|x) fitted by likelihood)
            and ``"mine"`` (the DV bound with MINE's moving-average gradient) for ``"maximize"``.
            When z comes from a Gaussian layer that exposes (mean, std), ``"l1out"`` (or
            ``"club-exact"``) minimizes the encoder's own leave-one-out bound with nothing learned:
            pass a spec whose capture is that pair, e.g. ``z=("z:input", lambda args: args)``.
            Minimizing a lower bound (``"mine"``, ``"infonce"``, ...) does not guarantee that the
            true MI falls; minimizing an upper bound does, as long as it stays an upper bound.
        critic: ``"concat"`` (the paper's MLP on [x, z]), ``"separable"``, an ``nn.Module``
            following the critic call contract, or a factory ``(x_dim, z_dim) -> nn.Module``.
            Built from the dims of the first batch, on that batch's device.
        lr: Adam learning rate of the critic (or of CLUB's q), 1e-3 by default; a critic that
            lags the model gives a stale bound, so keep it at or above the model's rate.
        marginals: ``"shuffle"`` or ``"all"``; default ``"all"`` for critics with
            ``score_matrix``, else ``"shuffle"``.
        hidden, embed_dim: widths of the built-in critics (and of CLUB's q).
        standardize: the critic reads x and z standardized over the batch (gradient through the
            statistics; critic bounds only), so the model cannot move the bound by rescaling z,
            only by changing the dependence. On by default: a model that minimizes otherwise
            escapes a lagging critic by growing z, and one that maximizes gains more true MI with
            it (``recipes/benchmarks/linear_gaussian.py``).
        ema_rate, tau: MINE's moving-average rate; SMILE's clip.
        warmup_steps: beta grows linearly from 0 over this many calls (0: constant beta).
        adaptive_clip: the MINE paper's adaptive clipping: the MI gradient g_m on the model is
            rescaled to min(||g_u||, ||g_m||)·g_m/||g_m|| against the task gradient g_u; pass
            ``task_loss=`` when calling.
        gather_marginals: under torch.distributed, score pairs over the global batch (other
            ranks' samples, detached, join the local ones).
        extra_critic_steps: before each call scores its term, the critic takes this many ascent
            steps on the detached batch (a critic that leads the model); 0: only the step inside
            the backward pass. Each costs one more critic forward and backward.
        seed: seeds the critic's initialisation and the marginal shuffles.

    Bad arguments raise ValueError here, not at the first call.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Spec | None = "input",
        z: Spec | None = None,
        *,
        beta: float = 1.0,
        mode: Literal["minimize", "maximize"] = "minimize",
        estimator: str | None = None,
        critic: CriticSpec = "concat",
        lr: float = 1e-3,
        marginals: Literal["shuffle", "all"] | None = None,
        hidden: Sequence[int] = (128, 128),
        embed_dim: int = 32,
        ema_rate: float = 0.01,
        tau: float = 5.0,
        standardize: bool = True,
        warmup_steps: int = 0,
        adaptive_clip: bool = False,
        gather_marginals: bool = False,
        extra_critic_steps: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_settings(mode, beta, lr, warmup_steps, seed, extra_critic_steps)
        self.extra_critic_steps = extra_critic_steps
        if estimator is None:
            estimator = DEFAULT_ESTIMATOR[mode]
        self.spec = lookup(estimator)
        self.spec.check_use(estimator, mode, gather_marginals, adaptive_clip)
        self.options = BuildOptions(critic, hidden, embed_dim, marginals, ema_rate, tau, standardize)
        self.beta, self.mode, self.estimator_name, self.lr, self.seed = float(beta), mode, estimator, lr, seed
        self.warmup_steps, self.adaptive_clip = warmup_steps, adaptive_clip
        self.gather_marginals = gather_marginals
        self.model = [model]  # a list keeps the model out of this module's parameters and state
        self.x_spec, self.z_spec = x, z
        self.taps: dict[str, Tap] = {}
        self.estimator: nn.Module | None = None  # built from the first batch's dims
        self.critic_optimizer: CriticOptimizer | None = None
        self.dims: tuple[int, int] | None = None
        self.critic_dtype = torch.float32
        self.steps = 0  # regularizer calls (beta schedule)
        self.generator = torch.Generator().manual_seed(seed)
        self._metrics: dict[str, Tensor | float] | None = None  # the latest scored batch's
        self._fused: tuple[list[Tensor], bool] | None = None  # see _fused_term
        self._last_inputs: tuple[Tensor, Tensor] | None = None
        self._last_beta = 0.0
        self.attach()

    # ---------------------------------------------------------------- hooks and inputs
    def attach(self) -> MIRegularizer:
        """Register the forward hooks (done by the constructor); error if already attached."""
        if self.taps:
            raise RuntimeError("this MIRegularizer is already attached; call remove() before attaching again")
        self.taps = {
            k: Tap(self.model[0], s, k, grad_only=True)
            for k, s in (("x", self.x_spec), ("z", self.z_spec))
            if s is not None
        }
        return self

    def remove(self) -> None:
        """Remove every hook this regularizer registered."""
        for tap in self.taps.values():
            tap.remove()
        self.taps = {}

    def __enter__(self) -> MIRegularizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    @property
    def takes_mean_std(self) -> bool:
        """Whether z is read as a Gaussian layer's (mean, std) (the exact-conditional bounds)."""
        return bool(getattr(self.spec.family, "takes_mean_std", False))

    def _prepare(self, x: Tensor | None, z: Any) -> tuple[Tensor, Any]:
        """Step a critic left with a partial backward, read (x, z), build or move the estimator.
        z is a tensor, or a (mean, std) pair for the exact-conditional bounds."""
        if self.critic_optimizer is not None:
            self.critic_optimizer.flush()
        xs, zs = read_pair(self.taps, x, z, z_mean_std=self.takes_mean_std)
        z_rows = zs[0] if self.takes_mean_std else zs  # the mean stands for z in the checks
        # MINE reads its batch statistics back anyway: the finite test of x and z waits for them
        check_pair(xs, z_rows, self.taps, self.dims, finite=not self._scores_checked)
        if self.takes_mean_std:
            check_mean_std(*zs, self.taps)
        if self.estimator is None:
            self._build(xs.shape[1], z_rows.shape[1], xs.dtype, xs.device)
        param = next(iter(self.estimator.parameters()), None)
        if param is not None and param.device != xs.device:  # restored from a checkpoint elsewhere
            self.estimator.to(xs.device)
            self._fused = self._fused_plan()
            self.critic_optimizer.follow_parameters()
        self._last_inputs = (xs.detach(), _map(Tensor.detach, zs))
        return xs, zs

    def _build(self, dx: int, dz: int, dtype: torch.dtype, device: torch.device) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            estimator = self.spec.family.build(self.estimator_name, dx, dz, self.options)
        self.critic_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        estimator = estimator.to(device)
        self.estimator = estimator.double() if self.critic_dtype == torch.float64 else estimator
        if isinstance(self.estimator, MIEstimator) and self.estimator.spec.moving_average:
            self.estimator.refuse_nonfinite = True  # MINE's path reads its statistics back anyway
        self.dims = (dx, dz)
        self._fused = self._fused_plan()
        params = [p for p in self.estimator.parameters() if p.requires_grad]
        sync.broadcast_parameters(params)
        # the exact-conditional bounds have nothing to train
        self.critic_optimizer = CriticOptimizer(params, self.lr) if params else None

    @property
    def _scores_checked(self) -> bool:
        """Whether the estimator refuses non-finite batch statistics itself (MINE's moving-average
        path), so that x and z need no finite test of their own before scoring."""
        return getattr(self.estimator, "refuse_nonfinite", False)

    def critic_parameters(self) -> list[nn.Parameter]:
        return [] if self.critic_optimizer is None else list(self.critic_optimizer.params)

    @property
    def critic_steps(self) -> int:
        """Optimizer steps the critic has taken."""
        return 0 if self.critic_optimizer is None else self.critic_optimizer.steps

    # ---------------------------------------------------------------- terms
    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "minimize" else -1.0

    def current_beta(self) -> float:
        """beta after the linear warm-up (constant when ``warmup_steps == 0``)."""
        return self.beta * (min(1.0, self.steps / self.warmup_steps) if self.warmup_steps else 1.0)

    def _factor(self) -> float:
        """Model-side gradient factor sign·beta; advances the beta schedule. DDP averages model
        gradients over ranks, so with gathered pairs (every rank scoring the global batch) the
        local share is scaled back up by the world size."""
        self._last_beta = self.current_beta()
        self.steps += 1
        return self.sign * self._last_beta * (sync.world_size() if self.gather_marginals else 1)

    def _score(self, x: Tensor, z: Any, train_critic: bool = True) -> Terms:
        terms = self._scored(
            lambda x, z: self.estimator.terms(x, z, generator=self.generator, train_critic=train_critic), x, z
        )
        self._metrics = terms.metrics
        return terms

    def _scored(self, score: Any, x: Tensor, z: Any) -> Any:
        """``score(x, z)`` on the pairs the estimator sees (gathered, in the critic's dtype); a
        critic that diverged is told apart from non-finite inputs."""
        if self.gather_marginals:
            x, z = sync.gather_rows(x, z)
        x, z = x.to(self.critic_dtype), _map(lambda t: t.to(self.critic_dtype), z)
        try:
            return score(x, z)
        except NonFiniteScores as err:  # name the input that holds NaN / Inf, if one does
            check_inputs_finite(x.detach(), z.detach(), self.taps)
            raise ValueError(
                f"{err}, though x and z are finite: the critic diverged (try a lower critic lr, "
                f"now lr={self.lr})"
            ) from None

    def _fused_plan(self) -> tuple[list[Tensor], bool] | None:
        """The critic's parameters for the one-node term (:mod:`mine_reg.fused_term`), if it applies."""
        return fused_parameters(self.estimator) if isinstance(self.estimator, MIEstimator) else None

    def _fused_term(self, xs: Tensor, zs: Any, scale: list[float]) -> Tensor | None:
        """The term as one autograd node where :mod:`mine_reg.fused_term` applies (the default
        MINE critic, gradients on, no autocast, no adaptive clipping), else None. Same value and
        gradients as the general path, fewer operators."""
        if (
            self._fused is None
            or self.adaptive_clip
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled(xs.device.type)
        ):
            return None
        params, standardize = self._fused
        plan = FusedTerm(self.estimator, standardize, self.sign * self._last_beta, scale)
        term = self._scored(lambda x, z: fused_mine_term(plan, params, x, z, self.generator), xs, zs)
        self._metrics = plan.metrics
        return term

    def forward(
        self, x: Tensor | None = None, z: Tensor | None = None, task_loss: Tensor | None = None
    ) -> Tensor:
        """The term to add to the loss: value sign·beta·I (nats·beta), gradients as described
        in the module docstring. Call after the model's forward passes: once per backward pass,
        over every micro-batch captured since the last call."""
        if self.adaptive_clip and task_loss is None:
            raise ValueError("adaptive_clip=True needs the task loss: reg(task_loss=loss)")
        xs, zs = self._prepare(x, z)
        self._lead()
        factor = self._factor()
        # One backward pass serves both sides: the critic's parameters descend its loss, and the
        # gradient reaching x and z, -d(model), is rescaled to factor·d(model) for the model.
        scale = [-factor]
        fused = self._fused_term(xs, zs, scale)
        if fused is not None:
            return fused

        def scaled(t: Tensor) -> Tensor:  # nothing to rescale where no gradient flows back
            return _GradScale.apply(t, scale) if t.requires_grad else t

        terms = self._score(scaled(xs), _map(scaled, zs))
        if self.adaptive_clip:
            scale[0] = -factor * _clip_scale(self.model[0], task_loss, terms.critic)
        return self.sign * self._last_beta * terms.mi + (terms.critic - terms.critic.detach())

    def _lead(self) -> None:
        """``extra_critic_steps`` critic ascent steps on the batch just captured (detached)."""
        if self.critic_optimizer is None or not self.extra_critic_steps:
            return
        for _ in range(self.extra_critic_steps):
            with torch.enable_grad():
                self._score(*self._last_inputs).critic.backward()
            self.critic_optimizer.flush()

    def loss(self, x: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """The model term alone, sign·beta·I with the critic held fixed (no critic update).
        Pair with :meth:`critic_step` for full control."""
        xs, zs = self._prepare(x, z)
        factor = self._factor()
        return factor * self._score(xs, zs, train_critic=False).model

    def critic_step(self, x: Tensor | None = None, z: Tensor | None = None) -> float:
        """One step of the critic on detached (x, z): the last captured batch when none is
        given. Returns the MI read-out (nats) before the step."""
        if x is None and z is None and self._last_inputs is not None:
            if self.critic_optimizer is not None:
                self.critic_optimizer.flush()
            xs, zs = self._last_inputs
        else:
            xs, zs = (_map(Tensor.detach, t) for t in self._prepare(x, z))
        terms = self._score(xs, zs)
        if self.critic_optimizer is not None:  # else nothing to train (exact-conditional bounds)
            terms.critic.backward()
        return float(terms.mi)

    # ---------------------------------------------------------------- reporting, checkpoints
    def metrics(self) -> dict[str, float]:
        """The latest batch's metrics as floats: the estimator's own (MINE family: mi, objective,
        joint_mean, log_partition; CLUB: mi, log_likelihood; nats), then beta and critic_steps."""
        if self._metrics is None:
            return {}
        values = {k: float(v) for k, v in self._metrics.items()}
        return {**values, "beta": self._last_beta, "critic_steps": float(self.critic_steps)}

    def get_extra_state(self) -> dict[str, Any]:
        opt = self.critic_optimizer
        return {
            "dims": self.dims,
            "dtype": str(self.critic_dtype).removeprefix("torch."),
            "steps": self.steps,
            "generator": self.generator.get_state(),
            **(opt.state_dict() if opt is not None else {"optimizer": None, "critic_steps": 0}),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state["dims"] is not None and self.estimator is None:  # its weights are loaded next
            self._build(*state["dims"], getattr(torch, state.get("dtype", "float32")), torch.device("cpu"))
        if state["optimizer"] is not None:
            self.critic_optimizer.load_state_dict(state)
        self.steps = state["steps"]
        self.generator.set_state(state["generator"])
