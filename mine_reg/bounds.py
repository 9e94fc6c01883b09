"""Variational bounds on mutual information, as pure functions of critic scores.

Every bound takes the same two tensors:

- ``joint``: shape ``[B]``, critic scores T(x_i, z_i) of samples from the joint P_XZ;
- ``marginal``: shape ``[B, K]``, critic scores of K samples from the product of marginals
  P_X ⊗ P_Z; row i pairs x_i with K other z's (K = 1 for a shuffled batch, K = B - 1 when all
  off-diagonal pairs of a batch are scored). Only :func:`infonce` needs the rows to line up
  with ``joint``; the other bounds accept marginal scores of any shape (pooled samples).

They return a scalar tensor in nats.

Input types. Scores must be ``torch.Tensor``\\ s (anything else, a numpy array included, raises a
``TypeError`` that names the argument; convert with ``torch.as_tensor``). Integer and bool
scores, and fp16 / bf16 / other sub-32-bit floats, are upcast to float32 before any arithmetic;
float32 and float64 stay as they are; if the two arguments differ, both go to the wider dtype.
The result has that dtype. Complex scores are refused.

Range. The bounds are finite and correct for any finite scores up to the dtype's range
(``|scores|`` up to ~3.4e38 in float32):

- means of [B]-sized terms are accumulated in float64; means over the [B, K] matrices (and all
  means of float64 scores) are taken on scores scaled by a power of two, so no partial sum
  overflows;
- log-partitions are computed as max + log(mean(exp(scores - max))) with the two parts kept
  apart, and every [B]-sized or scalar combination of terms runs in float64, so large terms of
  equal size cancel exactly: DV of joint and marginal scores all 1e38 is 0, and log 2 when half
  the marginal scores are -1e38;
- a true value beyond the output dtype's range (for example DV of joint scores 3e38 and
  marginal scores -3e38, which is 6e38) is returned as ± the dtype's largest finite value, with
  the gradient of the unclamped expression; NWJ has its own rule for its exponential term, see
  :func:`nwj`;
- infinite or NaN scores are not hidden: they propagate to the result.

The [B, K] matrices are only touched in their own dtype: a maximum, one exp pass and a sum (plus
the clip for :func:`smile`, a softplus and a scaled sum for :func:`jsd`).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["dv", "nwj", "infonce", "smile", "jsd", "log_mean_exp", "upcast", "BOUNDS"]

# NWJ's E_Q[exp(T - 1)] term is differentiated along the tangent of exp at this exponent and
# beyond, so its gradient never exceeds e^80 ≈ 5.5e34 (finite in float32, with room to spare).
NWJ_TANGENT_EXPONENT = 80.0


def _type_name(obj: object) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def upcast(t: Tensor, name: str = "scores") -> Tensor:
    """Scores as a tensor of a floating dtype of at least 32 bits.

    Integer and bool tensors, and floats narrower than 32 bits (fp16, bf16, ...), become float32;
    float32 and float64 are returned unchanged. Non-tensors raise ``TypeError`` and complex
    tensors ``ValueError``, both naming ``name``.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_type_name(t)}; use torch.as_tensor")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got a {t.dtype} tensor")
    if not t.is_floating_point() or t.element_size() < 4:
        return t.float()
    return t


def _check(joint: Tensor, marginal: Tensor, rows: bool = False) -> tuple[Tensor, Tensor]:
    joint = upcast(joint, "joint scores")
    marginal = upcast(marginal, "marginal scores")
    if joint.ndim != 1 or joint.numel() == 0:
        raise ValueError(f"joint scores must have shape [B] with B >= 1, got {tuple(joint.shape)}")
    if marginal.numel() == 0:
        raise ValueError("no marginal scores were given")
    if rows:
        if marginal.ndim == 1:
            marginal = rearrange(marginal, "b -> b 1")
        if marginal.ndim != 2 or marginal.shape[0] != joint.shape[0]:
            raise ValueError(
                f"marginal scores must have shape [B, K] with B = {joint.shape[0]}, "
                f"got {tuple(marginal.shape)}"
            )
    dtype = torch.promote_types(joint.dtype, marginal.dtype)
    return joint.to(dtype), marginal.to(dtype)


def _mean(t: Tensor) -> Tensor:
    """Mean of all elements as a float64 scalar, summed in t's dtype without overflow: the
    elements are scaled by 2^-k with 2^k >= numel before summing (exact, barring subnormals), so
    every partial sum is at most max|t|; the sum is then multiplied by 2^k / numel in float64."""
    n = t.numel()
    k = max(n - 1, 1).bit_length()
    return (t * 2.0**-k).sum().double() * (2.0**k / n)


def _saturate(value: Tensor, dtype: torch.dtype, grad_path: Tensor | None = None) -> Tensor:
    """A float64 scalar in ``dtype``: finite values beyond its range become ± its largest finite
    value, infinities and NaN pass through. The gradient is that of ``value`` (straight through
    the clamp), or that of ``grad_path``, a zero-valued tensor, when given."""
    top = torch.finfo(dtype).max
    v = value.detach()
    if grad_path is None:
        grad_path = value - v
    finite = torch.isfinite(v)
    clamped = torch.where(finite, v.clamp(-top, top), v)
    return (clamped + torch.where(finite, grad_path, 0.0)).to(dtype)


def _log_partition(scores: Tensor, dim: int | None = None) -> tuple[Tensor, Tensor]:
    """``(shift, rest)``, float64, with log(mean(exp(scores))) = shift + rest, over all elements
    (``dim=None``, scalars) or along ``dim`` ([B]-shaped for [B, K] scores).

    ``shift`` is the detached maximum (0 where that is infinite) and ``rest`` =
    log(mean(exp(scores - shift))) lies in [-log N, 0] for finite scores: keeping the two apart
    lets a bound subtract ``shift`` from other terms of the same size in float64 instead of
    rounding shift + rest to the scores' dtype first. Only exp(scores - shift) runs on the full
    tensor, in its own dtype; its sum is taken to float64 before the log.
    """
    if dim is None:
        scores, dim = rearrange(scores, "... -> (...)"), 0
    n = scores.shape[dim]
    shift = scores.detach().amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    total = torch.exp(scores - shift).sum(dim=dim)
    return shift.squeeze(dim).double(), torch.log(total.double()) - math.log(n)


def log_mean_exp(scores: Tensor) -> Tensor:
    """log(mean(exp(scores))) over all elements, computed stably, in nats, in the scores' dtype
    (float32 or wider, see the module's dtype rules). Finite for any finite scores."""
    scores = upcast(scores, "scores")
    if scores.numel() == 0:
        raise ValueError("no scores were given")
    shift, rest = _log_partition(scores)
    return (shift + rest).to(scores.dtype)


def dv(joint: Tensor, marginal: Tensor) -> Tensor:
    """Donsker-Varadhan bound (the MINE bound): E_P[T] - log E_Q[exp T], in nats.

    Tightest of the bounds here for a given critic, but its minibatch gradient is biased
    (see :class:`mine_reg.MIEstimator` for the moving-average correction).
    """
    joint, marginal = _check(joint, marginal)
    shift, rest = _log_partition(marginal)
    return _saturate(_mean(joint.double()) - shift - rest, joint.dtype)


def check_scores(joint: Tensor, marginal: Tensor) -> tuple[Tensor, Tensor]:
    """Joint scores [B] and marginal scores (any shape) upcast to one floating dtype of at least
    32 bits; ValueError for empty or misshapen scores."""
    return _check(joint, marginal)


def dv_statistics(joint: Tensor, marginal: Tensor, *extra: Tensor) -> list[float]:
    """[mean of the joint scores, log(mean(exp(marginal))) over all its elements, *extra] as
    Python floats (nats), computed in float64 without overflow (joint means of float64 scores by
    :func:`_mean`'s scaled sum) and read in ONE device-to-host transfer; ``extra`` are more
    scalar tensors to bring along (e.g. a moving average's state). No gradient."""
    m = marginal.detach().reshape(-1).double()  # detached throughout: nothing is recorded
    top = m.max()
    j = joint.detach()
    j_mean = _mean(j) if j.dtype == torch.float64 else j.double().mean()
    parts = [(m - top).exp_().sum(), top, j_mean, *(t.detach().double() for t in extra)]
    shifted, top_value, j_value, *rest = torch.stack(parts).tolist()
    # max + log(sum(exp(m - max))); a non-finite maximum (all -inf, any +inf, NaN) is the answer
    log_partition = (
        top_value + math.log(shifted) - math.log(m.numel()) if math.isfinite(top_value) else top_value
    )
    return [j_value, log_partition, *rest]


def saturate(value: float, dtype: torch.dtype) -> float:
    """A float64 value clamped to ``dtype``'s finite range; infinities and NaN pass through."""
    if not math.isfinite(value):
        return value
    top = torch.finfo(dtype).max
    return min(max(value, -top), top)


def nwj(joint: Tensor, marginal: Tensor) -> Tensor:
    """NWJ / MINE-f bound: E_P[T] - E_Q[exp(T - 1)], in nats.

    Never above :func:`dv` for the same scores; its minibatch gradient is unbiased.

    The value is computed in float64 from a = log E_Q[exp T] and is exact (up to rounding to the
    output dtype) wherever it is representable. E_Q[exp(T - 1)] = exp(a - 1) outgrows any float
    dtype quickly (float32 at a ≈ 89.7), so two things happen for large marginal scores:

    - value: when the true NWJ value lies below the output dtype's range it is returned as
      -(largest finite value), -3.4028e38 in float32. That number is not the NWJ value (which is
      not representable); it only says "below the range".
    - gradient: for a - 1 > 80 (:data:`NWJ_TANGENT_EXPONENT`) the gradient is that of exp
      continued along its tangent at 80: d/da = -e^80 ≈ -5.5e34 instead of -exp(a - 1), so it
      stays finite and still points towards lower marginal scores. The joint scores keep their
      exact gradient 1/B. For a - 1 <= 80 the gradient is exact.
    """
    joint, marginal = _check(joint, marginal)
    j = _mean(joint.double())
    shift, rest = _log_partition(marginal)
    a = shift + rest
    exponent = a.detach() - 1.0
    value = j.detach() - torch.exp(exponent)
    overflowed = torch.isinf(value) & torch.isfinite(j.detach()) & torch.isfinite(exponent)
    value = torch.where(overflowed, torch.finfo(torch.float64).min, value)
    slope = torch.exp(exponent.clamp(max=NWJ_TANGENT_EXPONENT))
    gradient_path = (j - j.detach()) - slope * (a - a.detach())
    return _saturate(value, joint.dtype, gradient_path)


def infonce(joint: Tensor, marginal: Tensor) -> Tensor:
    """InfoNCE bound, in nats: mean_i [T_ii - log((exp T_ii + sum_k exp T_ik) / (K + 1))].

    Low variance, but it can never exceed ``log(K + 1)`` (``log B`` when all pairs of a batch
    are scored; ``log 2`` for a shuffled batch with K = 1), whatever the true MI.
    """
    joint, marginal = _check(joint, marginal, rows=True)
    rows = torch.cat([rearrange(joint, "b -> b 1"), marginal], dim=1)
    shift, rest = _log_partition(rows, dim=1)  # log-mean-exp of each row, [B]
    return _saturate(_mean(joint.double() - shift - rest), joint.dtype)


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"tau must be a real number, got {_type_name(tau)}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be positive and finite, got {tau!r}")
    return float(tau)


def smile(joint: Tensor, marginal: Tensor, tau: float = 5.0) -> Tensor:
    """SMILE (Song and Ermon, 2020): DV with the log-partition computed on scores clipped to
    [-tau, tau], in nats. Smaller tau trades bias for lower variance; tau -> inf gives DV.
    ``tau`` must be a finite positive real number (``ValueError`` otherwise, ``TypeError`` for a
    non-number)."""
    tau = _check_tau(tau)
    joint, marginal = _check(joint, marginal)
    tau = min(tau, torch.finfo(marginal.dtype).max)  # a larger tau clips nothing
    shift, rest = _log_partition(marginal.clamp(-tau, tau))
    return _saturate(_mean(joint.double()) - shift - rest, joint.dtype)


def jsd(joint: Tensor, marginal: Tensor) -> Tensor:
    """Jensen-Shannon objective of Deep InfoMax: E_P[-softplus(-T)] - E_Q[softplus(T)].

    This is a training objective, not an MI value: it equals 2·JSD(P||Q) - 2·log 2 at the
    optimum. Train a critic with it and read the MI out with :func:`dv`.
    """
    joint, marginal = _check(joint, marginal)
    value = -_mean(F.softplus(-joint.double())) - _mean(F.softplus(marginal))
    return _saturate(value, joint.dtype)


BOUNDS = {"dv": dv, "nwj": nwj, "infonce": infonce, "smile": smile, "jsd": jsd}
