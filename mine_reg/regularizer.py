"""``MIRegularizer``: add beta·I(X; Z) to any model's loss through forward hooks.

    reg = MIRegularizer(model, x="input", z="encoder.fc2", beta=1e-3, mode="minimize")
    ...
    loss = task_loss + reg()          # the one added line
    loss.backward(); optimizer.step()

Backpropagating ``reg()`` moves the model by beta·dI (down for ``"minimize"``, up for
``"maximize"``) while, in the same backward pass, the critic receives the gradient that ascends
its bound; the regularizer steps the critic's optimizer itself as soon as that gradient lands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call

from .club import CLUB
from .critics import ConcatCritic, SeparableCritic
from .estimator import ESTIMATORS, MIEstimator, MIOutput
from .hooks import Spec, Tap, check_finite

__all__ = ["MIRegularizer"]

CriticSpec = str | nn.Module | Callable[[int, int], nn.Module]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this build supports it (the critic steps every call)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


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


class MIRegularizer(nn.Module):
    """beta·I(X; Z) as a loss term, read from a model through forward hooks.

    Args:
        model: any ``nn.Module`` (also wrapped by DDP / Accelerate or ``torch.compile`` after
            the regularizer was attached).
        x, z: where X and Z come from (see :mod:`mine_reg.hooks`): ``"input"``, a dotted
            submodule name (its output), ``"name:input"``, a callable applied to the model's
            input, ``(name, callable)``, or ``None`` to pass the tensor at call time
            (``reg(x=..., z=...)``, e.g. labels or codes outside the model). Activations of any
            shape are flattened per sample: [B, ...] -> [B, D].
        beta: weight of the MI term (nats are multiplied by beta).
        mode: ``"minimize"`` (information bottleneck) or ``"maximize"`` (GAN codes, ALI).
        estimator: a name in :data:`mine_reg.estimator.ESTIMATORS` (``"mine"`` by default), or
            ``"club"``: the CLUB upper bound with a Gaussian q(z|x) fitted by likelihood
            (:class:`mine_reg.club.CLUB`), for ``mode="minimize"``. Minimizing a lower bound
            does not guarantee that the true MI falls; minimizing an upper bound does, as long
            as q fits.
        critic: ``"concat"`` (the paper's MLP on [x, z]), ``"separable"``, an ``nn.Module``
            following the critic call contract, or a factory ``(x_dim, z_dim) -> nn.Module``.
            Built lazily from the dims of the first batch, on that batch's device.
        lr: Adam learning rate of the critic.
        marginals: ``"shuffle"`` or ``"all"``; default ``"all"`` for critics with
            ``score_matrix``, else ``"shuffle"``.
        hidden, embed_dim: critic widths for the built-in critics.
        ema_rate, tau: MINE's moving-average rate; SMILE's clip.
        warmup_steps: beta grows linearly from 0 over this many calls (0: constant beta).
        adaptive_clip: the MINE paper's adaptive clipping: the MI gradient g_m on the model is
            rescaled to min(||g_u||, ||g_m||)·g_m/||g_m|| against the task gradient g_u; pass
            ``task_loss=`` when calling.
        gather_marginals: under torch.distributed, score pairs over the global batch (other
            ranks' samples, detached, join the local ones).
        seed: seeds the critic's initialisation and the marginal shuffles.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Spec | None = "input",
        z: Spec | None = None,
        *,
        beta: float = 1.0,
        mode: Literal["minimize", "maximize"] = "minimize",
        estimator: str = "mine",
        critic: CriticSpec = "concat",
        lr: float = 1e-4,
        marginals: Literal["shuffle", "all"] | None = None,
        hidden: Sequence[int] = (128, 128),
        embed_dim: int = 32,
        ema_rate: float = 0.01,
        tau: float = 5.0,
        warmup_steps: int = 0,
        adaptive_clip: bool = False,
        gather_marginals: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("minimize", "maximize"):
            raise ValueError(f"mode must be 'minimize' or 'maximize', got {mode!r}")
        if estimator not in ESTIMATORS and estimator != "club":
            raise ValueError(f"unknown estimator {estimator!r}; choose from {sorted([*ESTIMATORS, 'club'])}")
        if estimator == "club" and (mode != "minimize" or adaptive_clip or gather_marginals):
            raise ValueError(
                "estimator='club' is an upper bound, for mode='minimize' only (without adaptive_clip "
                "or gather_marginals); use a lower bound such as 'mine' to maximize"
            )
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.beta, self.mode, self.estimator_name = float(beta), mode, estimator
        self.critic_spec, self.lr, self.marginals = critic, lr, marginals
        self.hidden, self.embed_dim, self.ema_rate, self.tau = tuple(hidden), embed_dim, ema_rate, tau
        self.warmup_steps, self.adaptive_clip, self.gather_marginals = (
            warmup_steps,
            adaptive_clip,
            gather_marginals,
        )
        self.seed = seed
        self.model = [model]  # a list keeps the model out of this module's parameters and state
        self.x_spec, self.z_spec = x, z
        self.taps: dict[str, Tap] = {}
        self.estimator: MIEstimator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.dims: tuple[int, int] | None = None
        self.critic_dtype = torch.float32
        self.steps = 0  # regularizer calls (beta schedule)
        self.critic_steps = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._last: MIOutput | None = None
        self._last_inputs: tuple[Tensor, Tensor] | None = None
        self._grads_seen = 0
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._last_beta = 0.0
        self.attach()

    # ---------------------------------------------------------------- hooks
    def attach(self) -> MIRegularizer:
        """Register the forward hooks (done by the constructor); error if already attached."""
        if self.taps:
            raise RuntimeError("this MIRegularizer is already attached; call remove() before attaching again")
        for label, spec in (("x", self.x_spec), ("z", self.z_spec)):
            if spec is not None:
                self.taps[label] = Tap(self.model[0], spec, label)
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

    # ---------------------------------------------------------------- inputs
    def _input(self, label: str, given: Tensor | None) -> Tensor:
        if given is not None:
            if label in self.taps:
                raise ValueError(f"{label} is read from the model by a hook; do not pass {label}= as well")
            value = given
        elif label in self.taps:
            value = self.taps[label].take()
        else:
            raise ValueError(f"{label} has no hook (spec None): pass it when calling, reg({label}=tensor)")
        if not isinstance(value, Tensor):
            raise ValueError(f"{label} must be a tensor, got {type(value).__name__}")
        if value.ndim == 0:
            raise ValueError(f"{label} must have a batch dimension, got a scalar")
        if not (value.is_floating_point()):
            value = value.float()
        return rearrange(value, "b ... -> b (...)") if value.ndim != 2 else value

    def _inputs(self, x: Tensor | None, z: Tensor | None) -> tuple[Tensor, Tensor]:
        xs, zs = self._input("x", x), self._input("z", z)
        if xs.shape[0] != zs.shape[0]:
            raise ValueError(
                f"x and z have different batch sizes: {xs.shape[0]} ({self._describe('x')}) and "
                f"{zs.shape[0]} ({self._describe('z')})"
            )
        if xs.shape[0] < 2:
            raise ValueError("a batch of 1 sample cannot form marginal pairs: MI needs batches of at least 2")
        check_finite(xs.detach(), f"x ({self._describe('x')})")
        check_finite(zs.detach(), f"z ({self._describe('z')})")
        if self.dims is not None and (xs.shape[1], zs.shape[1]) != self.dims:
            raise ValueError(
                f"x and z have {xs.shape[1]} and {zs.shape[1]} features per sample, but the critic was "
                f"built for {self.dims[0]} and {self.dims[1]}"
            )
        return xs, zs

    def _describe(self, label: str) -> str:
        return self.taps[label].where if label in self.taps else f"{label} passed at call time"

    # ---------------------------------------------------------------- critic
    def _build(self, x: Tensor, z: Tensor) -> None:
        dx, dz = x.shape[1], z.shape[1]
        spec = self.critic_spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.estimator_name == "club":
                critic = CLUB(dx, dz, self.hidden)
            elif spec == "concat":
                critic: nn.Module = ConcatCritic(dx, dz, self.hidden)
            elif spec == "separable":
                critic = SeparableCritic(dx, dz, self.hidden, self.embed_dim)
            elif isinstance(spec, nn.Module):
                critic = spec
            elif callable(spec):
                critic = spec(dx, dz)
            else:
                raise ValueError(
                    f"critic must be 'concat', 'separable', an nn.Module or a factory; got {spec!r}"
                )
        marginals = self.marginals or ("all" if hasattr(critic, "score_matrix") else "shuffle")
        self.critic_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        estimator = (
            critic
            if isinstance(critic, CLUB)
            else MIEstimator(critic, self.estimator_name, marginals, self.ema_rate, self.tau)
        )
        self.estimator = (
            estimator.to(x.device) if self.critic_dtype == torch.float32 else estimator.to(x.device).double()
        )
        self.dims = (dx, dz)
        params = self.critic_parameters()
        if _world() > 1:
            for p in params:
                dist.broadcast(p.data, src=0)
        self.optimizer = _adam(params, self.lr)
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_critic_grad)

    def critic_parameters(self) -> list[nn.Parameter]:
        return [] if self.estimator is None else [p for p in self.estimator.parameters() if p.requires_grad]

    def _on_critic_grad(self, param: Tensor) -> None:
        self._grads_seen += 1
        if self._grads_seen == len(self.critic_parameters()):
            self._apply_critic_step()

    def _apply_critic_step(self) -> None:
        """Average critic gradients over processes and take one optimizer step (skipped when
        a gradient is NaN or Inf, e.g. under fp16 loss scaling)."""
        self._grads_seen = 0
        params = [p for p in self.critic_parameters() if p.grad is not None]
        if not params:
            return
        world = _world()
        if world > 1:
            for p in params:
                dist.all_reduce(p.grad)
                p.grad.div_(world)
        grads = [p.grad for p in params]
        if torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            self.optimizer.step()
            self.critic_steps += 1
        self.optimizer.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------- gathering
    def _gather(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        world = _world()
        if not self.gather_marginals or world == 1:
            return x, z
        rank = dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(
                f"gather_marginals needs equal batch sizes on every process, got {[int(s) for s in sizes]}"
            )
        parts = []
        for t in (x, z):
            gathered = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(gathered, t.detach().contiguous())
            gathered[rank] = t  # the local rows keep their gradient
            parts.append(torch.cat(gathered))
        return parts[0], parts[1]

    # ---------------------------------------------------------------- terms
    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "minimize" else -1.0

    def current_beta(self) -> float:
        """beta after the linear warm-up (constant when ``warmup_steps == 0``)."""
        if self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, self.steps / self.warmup_steps)

    def _prepare(self, x: Tensor | None, z: Tensor | None) -> tuple[Tensor, Tensor]:
        if self._grads_seen:  # a backward reached only some critic parameters: step with those
            self._apply_critic_step()
        xs, zs = self._inputs(x, z)
        if self.estimator is None:
            self._build(xs, zs)
        self._follow_device(xs.device)
        self._last_inputs = (xs.detach(), zs.detach())
        return xs, zs

    def _follow_device(self, device: torch.device) -> None:
        """Move a critic restored from a checkpoint to the data's device, then its optimizer state."""
        param = next(iter(self.estimator.parameters()), None)
        if param is not None and param.device != device:
            self.estimator.to(device)
        if self._pending_optimizer_state is not None:
            self.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None

    def _critic_inputs(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x, z) as the critic takes them: gathered across processes if asked, in its dtype."""
        x, z = self._gather(x, z)
        return x.to(self.critic_dtype), z.to(self.critic_dtype)

    @staticmethod
    def _club_output(objective: Tensor, value: Tensor) -> MIOutput:
        nan = torch.full((), float("nan"), device=value.device)
        return MIOutput(objective=objective, mi=value, joint_mean=nan, log_partition=nan)

    def _score(self, x: Tensor, z: Tensor) -> MIOutput:
        x, z = self._critic_inputs(x, z)
        if isinstance(self.estimator, CLUB):
            # objective (ascended by q): minus q's negative log-likelihood, with x and z detached
            # inside; mi: the CLUB upper bound, differentiable in x and z
            value = self.estimator(x, z, generator=self.generator)
            return self._club_output(-self.estimator.learning_loss(x, z), value)
        return self.estimator(x, z, generator=self.generator)

    def forward(
        self, x: Tensor | None = None, z: Tensor | None = None, task_loss: Tensor | None = None
    ) -> Tensor:
        """The term to add to the loss: value sign·beta·I (nats·beta), gradients as described
        in the module docstring. Call once per training step, after the model's forward."""
        xs, zs = self._prepare(x, z)
        factor = self._factor()
        if self.adaptive_clip and task_loss is None:
            raise ValueError("adaptive_clip=True needs the task loss: reg(task_loss=loss)")
        if isinstance(self.estimator, CLUB):
            # the model minimizes CLUB through a frozen q; q descends its likelihood loss
            model_term = self._model_term(xs, zs, factor)
            nll = self.estimator.learning_loss(*self._critic_inputs(xs, zs))
            return model_term + (nll - nll.detach())
        # One scoring pass serves both sides: the critic's parameters get -dI (ascent), and the
        # gradient reaching x and z is rescaled to factor·dI for the model.
        scale = [-factor]
        out = self._score(_GradScale.apply(xs, scale), _GradScale.apply(zs, scale))
        self._last = out
        critic_term = -out.objective
        if self.adaptive_clip:
            scale[0] = -factor * self._clip_scale(task_loss, critic_term)
        value = self.sign * self._last_beta * out.mi.detach()
        return value + (critic_term - critic_term.detach())

    def _factor(self) -> float:
        """Model-side gradient factor sign·beta; advances the beta schedule. DDP averages model
        gradients over ranks, so with gathered pairs (every rank scoring the global batch) the
        local share is scaled back up by the world size."""
        self._last_beta = self.current_beta()
        self.steps += 1
        return self.sign * self._last_beta * (_world() if self.gather_marginals else 1)

    def _model_term(self, x: Tensor, z: Tensor, factor: float) -> Tensor:
        """factor·I with the critic's weights as detached copies: no critic gradient, and the
        critic may step in place before this term's backward runs."""
        frozen = {n: p.detach().clone() for n, p in self.estimator.named_parameters()}
        x, z = self._critic_inputs(x, z)
        if isinstance(self.estimator, CLUB):
            value = functional_call(self.estimator, frozen, (x, z), {"generator": self.generator})
            self._last = self._club_output(value, value)
            return factor * value
        # the critic step that goes with this term folds the batch into MINE's average
        kwargs = {"generator": self.generator, "update_ema": False}
        out = functional_call(self.estimator, frozen, (x, z), kwargs)
        self._last = out
        return factor * out.objective

    def _clip_scale(self, task_loss: Tensor, critic_term: Tensor) -> float:
        """min(||g_u||, ||g_m||) / ||g_m|| for the task gradient g_u and MI gradient g_m on the
        model's parameters (the MINE paper's adaptive clipping)."""
        params = [p for p in self.model[0].parameters() if p.requires_grad]
        g_u = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
        g_m = torch.autograd.grad(critic_term, params, retain_graph=True, allow_unused=True)
        norm_u = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g_u if g is not None))
        norm_m = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g_m if g is not None))
        return 1.0 if norm_m == 0.0 else min(norm_u, norm_m) / norm_m

    def loss(self, x: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """The model term alone, sign·beta·I with the critic held fixed (no critic update).
        Pair with :meth:`critic_step` for full control."""
        xs, zs = self._prepare(x, z)
        return self._model_term(xs, zs, self._factor())

    def critic_step(self, x: Tensor | None = None, z: Tensor | None = None) -> float:
        """One ascent step of the critic on detached (x, z): the last captured batch when none is
        given. Returns the bound's value (nats) before the step."""
        if x is None and z is None and self._last_inputs is not None:
            xs, zs = self._last_inputs
        else:
            xs, zs = self._prepare(x, z)
            xs, zs = xs.detach(), zs.detach()
        out = self._score(xs, zs)
        self._last = out
        self._grads_seen = 0
        (-out.objective).backward()
        return float(out.mi.detach())

    # ---------------------------------------------------------------- reporting
    def metrics(self) -> dict[str, float]:
        """Latest MI estimate (nats) and bound parts, as floats, for logging."""
        if self._last is None:
            return {}
        out = self._last
        return {
            "mi": float(out.mi.detach()),
            "objective": float(out.objective.detach()),
            "joint_mean": float(out.joint_mean),
            "log_partition": float(out.log_partition),
            "beta": self._last_beta,
            "critic_steps": float(self.critic_steps),
        }

    # ---------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "optimizer": self._pending_optimizer_state
            if self._pending_optimizer_state is not None
            else (None if self.optimizer is None else self.optimizer.state_dict()),
            "dtype": str(self.critic_dtype).removeprefix("torch."),
            "steps": self.steps,
            "critic_steps": self.critic_steps,
            "generator": self.generator.get_state(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state["dims"] is not None and self.estimator is None:
            dx, dz = state["dims"]
            dtype = getattr(torch, state.get("dtype", "float32"))
            self._build(torch.zeros(2, dx, dtype=dtype), torch.zeros(2, dz, dtype=dtype))
        # loaded on the first call, once the critic sits on the data's device
        self._pending_optimizer_state = state["optimizer"]
        self.steps, self.critic_steps = state["steps"], state["critic_steps"]
        self.generator.set_state(state["generator"])
