"""Watch a model's layers during training: held-out I(X; T) and I(T; Y) per layer, like a loss.

    monitor = MIMonitor(model, layers=["net.1", "net.3", "net.5"], probe=x_test, y=y_test,
                        every=1, accelerator=accelerator)
    accelerator.register_for_checkpointing(monitor)          # the history survives a resume
    for epoch in range(epochs):
        ...                                                  # train as usual
        monitor.step(epoch + 1)                              # estimates when epoch % every == 0
    monitor.plot_plane("plane.png")                          # the information plane

Each measurement runs the probe set (fixed inputs, never trained on) through the model once, in
eval mode and under ``no_grad``, capturing each layer's output T (the spec language of
:class:`~mine_reg.MIRegularizer`: ``"encoder.2"``, ``"head:input"``, callables), then reads
I(X; T) (with ``noise``: from the noise channel's likelihood, :func:`channel_bounds`; without:
:func:`~mine_reg.estimate_mi` on (X, T)) and, with labels, I(T; Y) (class labels: the
cross-fitted bound of a linear read-out, :func:`classifier_bound`; other targets:
``estimate_mi``). Every value is in nats.
The model's train/eval flags and the torch, CUDA, Python and NumPy random states are restored
afterwards, so the training run draws exactly what it would have drawn without the monitor.

What the numbers mean for deterministic layers (Saxe et al., ICLR 2018): when T = f(X) for a
deterministic, injective continuous f, I(X; T) is infinite, and any finite number is a property
of the estimator (its budget, the ln N ceiling of a bound read out on N samples, a binning) rather
than of the layer. ``noise=s`` measures I(X; T + N(0, s² I)) instead, which is finite and well
defined (it falls as s grows and tends to 0); the noise is drawn from the monitor's own seeded
generator. With ``noise_relative=True`` s is in units of each layer's spread on the probe, so
rescaling a layer's activations does not change the number. As T is a function of the input
and the noise channel p(t + n | x) is known exactly, I(X; T + N) is then read in closed form
from the channel's likelihood (:func:`channel_bounds`: a lower and an upper bound, no critic
trained), which costs milliseconds per layer. I(T; Y) with discrete labels is at most
H(Y) <= ln K for any T, noise or not.

Under several processes (``torch.distributed`` initialised, e.g. ``accelerate launch``) the
layers are split across ranks (layer i on rank i mod world size), each rank estimates its share
and the results are all-gathered, so every rank holds and logs identical numbers;
``accelerator.log`` writes them from the main process only.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .estimate import EstimateOptions, estimate_mi
from .exact import infonce_rows, l1out_rows
from .hooks import Spec, Tap, unwrap_model

__all__ = ["MIMonitor", "MONITOR_DEFAULTS", "preserved_state", "classifier_bound", "channel_bounds"]

# the default budget of estimate_mi where the monitor calls it (x_t="critic", t_y="critic"):
# the closed-form Gaussian critic alone, nothing trained (a few tenths of a second per layer on
# a CPU core for 500 probe samples of 784 pixels; "critic": "gaussian+separable" with "max_steps"
# adds a neural part), on standardized columns (pixels and one-hot labels are full of ties that
# a quantile map would not separate)
MONITOR_DEFAULTS: dict[str, Any] = {
    "critic": "gaussian",
    "preprocess": "standardize",
    "hidden": (64,),
    "embed_dim": 16,
    "max_steps": 200,
    "lr": 3e-3,
    "batch_size": 32,
}

_QUANTITIES = ("x_t", "x_t_upper", "t_y")


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and restore, afterwards, every submodule's
    train/eval flag and the torch CPU, CUDA (when initialised), Python and NumPy random states."""
    modes = [(m, m.training) for m in model.modules()]
    cpu = torch.get_rng_state()
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    py, np_state = random.getstate(), np.random.get_state()
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        np.random.set_state(np_state)


def _integer_labels(y: Tensor) -> bool:
    return y.dim() == 1 and not torch.is_floating_point(y) and not torch.is_complex(y)


def classifier_bound(
    t: Tensor, labels: Tensor, folds: int = 5, l2: float = 1e-3, seed: int = 0, max_iter: int = 30
) -> float:
    """Cross-fitted Barber-Agakov lower bound on I(T; Y) in nats for integer labels [N] and
    features t [N, d]: H(Y) - CE, where CE is the held-out cross-entropy of a softmax regression
    q(y | t) (L2 penalty ``l2`` on the weights, standardized t) fitted on the other ``folds`` - 1
    folds, and H(Y) the plug-in entropy of the labels. Any q gives I(T; Y) >= H(Y) - E[-log
    q(y|t)], so this is the bound of a linear read-out of T, scored on samples it did not see,
    however far its fit went: the folds' regressions are fitted together, as one problem with
    weights [folds, K, d + 1] and an analytic gradient, by at most ``max_iter`` L-BFGS iterations
    (on the digits, 30 iterations read within 0.004 nats of 100)."""
    n = len(labels)
    if n < 2 * folds:
        raise ValueError(f"the classifier bound needs at least {2 * folds} probe samples, got {n}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    k = int(labels.max()) + 1
    t = t.float()
    t = torch.cat([(t - t.mean(0)) / (t.std(0) + 1e-8), torch.ones(n, 1)], 1)  # [N, d + 1]
    t = rearrange(t, "n d -> d n")  # classes and samples last: a softmax over a short inner dim is slow
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held_out = torch.zeros(folds, 1, n, dtype=torch.bool)  # fold i: the samples of row i
    for i, part in enumerate(perm.chunk(folds)):
        held_out[i, 0, part] = True
    fit_weight = (~held_out).float()
    fit_weight /= fit_weight.sum(-1, keepdim=True)  # each fold's fit loss is a mean
    one_hot = rearrange(F.one_hot(labels.long(), k).float(), "n k -> k n")
    penalized = torch.ones(1, t.shape[0])
    penalized[0, -1] = 0.0  # no penalty on the bias
    weight = torch.zeros(folds, k, t.shape[0], requires_grad=True)  # [folds, K, d + 1]
    opt = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def closure() -> Tensor:  # the folds' summed fit losses, and their gradient by hand
        log_q = (weight @ t).log_softmax(-2)  # [folds, K, N]
        loss = -(log_q * one_hot * fit_weight).sum() + l2 * (weight.pow(2) * penalized).sum()
        weight.grad = ((log_q.exp() - one_hot) * fit_weight) @ t.T + 2 * l2 * weight * penalized
        return loss

    opt.step(closure)
    with torch.no_grad():
        log_q = (weight @ t).log_softmax(-2)
        held_out_ce = float(-(log_q * one_hot * held_out).sum())
    p = torch.bincount(labels, minlength=k).double() / n
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return entropy - held_out_ce / n


def channel_bounds(t: Tensor, noisy: Tensor, noise: float, chunk: int = 1024) -> tuple[float, float, float]:
    """Bounds in nats on I(X; T + N(0, s² I)) when T = f(X) is a deterministic function of X,
    from the channel's exact likelihood p(z | x) = N(z; f(x), s² I), with no critic to train.

    ``t`` [N, d] holds f(x_j) for N samples x_j of X; ``noisy`` [M, d] holds z_m = t[m mod N] +
    s·eps_m (M = N·draws). With a_mj = log p(z_m | x_j) = -|z_m - t_j|² / (2 s²) + const:

    - lower = mean_m [a_mm' - log (1/N) sum_j exp a_mj] (m' = m mod N): InfoNCE with the optimal
      critic log p(z|x), a lower bound on I for every N in expectation, and at most ln N;
    - upper = mean_m [a_mm' - log (1/(N-1)) sum_{j != m'} exp a_mj]: the leave-one-out upper
      bound (Poole et al., ICML 2019), informative while I is below about ln N.

    Returns (lower, upper, stderr of the lower's mean over the M terms). Cost O(M·N·d)."""
    n, m = t.shape[0], noisy.shape[0]
    if n < 2:
        raise ValueError(f"the channel bounds need at least 2 probe samples, got {n}")
    if not noise > 0:
        raise ValueError(f"the channel bounds need noise s > 0, got {noise!r}")
    if m % n or noisy.shape[1:] != t.shape[1:]:
        shape = list(noisy.shape)
        raise ValueError(f"noisy must be [k·{n}, {t.shape[1]}] (copies of t plus noise), got {shape}")
    t, noisy = t.double(), noisy.double()
    lower, upper = [], []
    for start in range(0, m, chunk):
        z = noisy[start : start + chunk]
        own = torch.arange(start, start + len(z)) % n
        a = -torch.cdist(z, t).pow(2) / (2 * noise**2)  # [chunk, N]
        lower.append(infonce_rows(a, own))
        upper.append(l1out_rows(a, own))
    low, up = torch.cat(lower), torch.cat(upper)
    return float(low.mean()), float(up.mean()), float(low.std() / math.sqrt(m))


def _labels_as_columns(y: Tensor) -> Tensor:
    """Integer class labels [N] become one-hot float columns [N, K]; anything else is [N, d]."""
    y = torch.as_tensor(y)
    if _integer_labels(y):
        if int(y.min()) < 0:
            raise ValueError(f"integer labels must be >= 0, got a minimum of {int(y.min())}")
        return F.one_hot(y.long(), int(y.max()) + 1).float()
    return rearrange(y.float(), "n ... -> n (...)")


class MIMonitor:
    """Held-out I(X; T) and I(T; Y) (nats) of named layers, measured every ``every`` calls.

    Args:
        model: the model being trained (DDP / Accelerate / torch.compile wrappers are fine; the
            probe runs through the unwrapped model, so no gradient synchronisation is triggered).
        layers: specs of the layers T to watch (names as in ``model.named_modules()``, or any
            spec of :mod:`mine_reg.hooks`); a name that is not a submodule is a ValueError listing
            the closest real ones. Keys in logs and history are ``str(spec)`` unless ``names``.
        probe: the fixed held-out inputs: a tensor [N, ...] passed as ``model(probe)``, or a tuple
            of positional inputs, kept where it is and moved to the model's device one batch at a time.
        y: labels of the probe for I(T; Y): integer classes [N] (one-hot encoded) or a float
            tensor [N, ...]; None: only I(X; T).
        x: the spec of X (default ``"input"``, the model's first input, flattened per sample).
        every: :meth:`step` measures when its counter is a multiple of ``every`` (steps or epochs,
            whichever you pass).
        noise: s >= 0, in the units of T: measure I(X; T + N(0, s²)) and I(T + N(0, s²); Y)
            (see the module docstring for why a deterministic layer needs it). 0: T itself.
        noise_relative: read ``noise`` in units of each layer's spread on the probe, the root
            mean per-unit variance of T (so s_layer = noise · spread, kept in the record as
            ``noise_std``): the measured quantity then does not change when a layer's activations
            are rescaled, and layers and networks of different scales compare at one SNR.
        noise_draws: noisy copies of each probe sample when ``noise`` > 0 (more samples for the
            estimate, the same X; N·noise_draws pairs per estimate).
        batch_size: probe rows per forward pass (None: the whole probe at once).
        estimate_options: overrides of :data:`MONITOR_DEFAULTS` for :func:`estimate_mi`
            (``max_steps``, ``hidden``, ``estimator`` ...); checked here, once.
        accelerator: an ``accelerate.Accelerator`` to ``log`` through (main process only), keys
            ``{prefix}{layer}/x_t``, ``/x_t_upper`` (channel bounds) and ``/t_y``; None: nothing
            is logged.
        prefix: the key prefix, ``"mi/"`` by default.
        names: display names for ``layers`` (same length), used in keys, history and plots.
        seed: seeds the noise and every estimate (the same model gives the same numbers).
        x_t: how I(X; T) is measured. ``"channel"`` (``noise`` > 0, ``x="input"``): from the
            noise channel's exact likelihood, :func:`channel_bounds` (a lower bound as ``x_t``,
            an upper one as ``x_t_upper``; closed form, milliseconds), valid when T is a
            deterministic function of the model's inputs in eval mode (X is then all of them).
            ``"critic"``: :func:`estimate_mi` on (X, T). ``"auto"``: channel when it applies
            (noise > 0, ``x="input"``, one input tensor), else critic.
        t_y: how I(T; Y) is measured. ``"critic"``: :func:`estimate_mi` on (T, one-hot Y).
            ``"classifier"`` (integer labels only): :func:`classifier_bound`, the cross-fitted
            H(Y) - CE of a softmax regression on T, cheaper and tighter for class labels on a
            few hundred probe samples. ``"auto"``: classifier for integer labels, else critic.
        classifier_iter: L-BFGS iterations of the classifier bound's read-out.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[Spec],
        probe: Tensor | tuple[Tensor, ...],
        y: Tensor | None = None,
        x: Spec = "input",
        every: int = 1,
        noise: float = 0.0,
        noise_relative: bool = False,
        noise_draws: int = 1,
        batch_size: int | None = None,
        estimate_options: dict[str, Any] | None = None,
        accelerator: Any = None,
        prefix: str = "mi/",
        names: Sequence[str] | None = None,
        seed: int = 0,
        x_t: str = "auto",
        t_y: str = "auto",
        classifier_iter: int = 30,
    ) -> None:
        single_tuple = (
            isinstance(layers, tuple)
            and len(layers) in (2, 3)
            and (callable(layers[1]) or (len(layers) == 3 and layers[1] is None))
        )
        if isinstance(layers, str) or callable(layers) or single_tuple:
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers is empty: name at least one layer to watch")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise ValueError(
                f"noise must be a finite number >= 0 (the std of the added noise), got {noise!r}"
            )
        if isinstance(noise_draws, bool) or not isinstance(noise_draws, int) or noise_draws < 1:
            raise ValueError(f"noise_draws must be an integer >= 1, got {noise_draws!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        self.names = [str(s) for s in layers] if names is None else [str(n) for n in names]
        if len(self.names) != len(layers) or len(set(self.names)) != len(layers):
            raise ValueError(f"names must give one distinct name per layer ({len(layers)}), got {names!r}")
        self.model, self.layers, self.x_spec = model, layers, x
        for spec, name in zip([x, *layers], ["x", *self.names], strict=True):
            Tap(model, spec, name).remove()  # a bad spec or layer name fails here, not mid-training
        self.probe = tuple(probe) if isinstance(probe, tuple | list) else (probe,)
        if not self.probe or not all(isinstance(p, Tensor) for p in self.probe):
            raise ValueError("probe must be a tensor [N, ...] or a tuple of tensors (the model's inputs)")
        self.n = len(self.probe[0])
        if any(len(p) != self.n for p in self.probe):
            raise ValueError(f"probe tensors differ in length: {[len(p) for p in self.probe]}")
        self.labels = y.long().cpu() if isinstance(y, Tensor) and _integer_labels(y) else None
        self.y = None if y is None else _labels_as_columns(y).cpu()
        if t_y not in ("auto", "critic", "classifier"):
            raise ValueError(f"t_y must be 'auto', 'critic' or 'classifier', got {t_y!r}")
        if t_y == "classifier" and self.labels is None:
            raise ValueError("t_y='classifier' needs integer class labels y [N]")
        self.t_y = ("classifier" if self.labels is not None else "critic") if t_y == "auto" else t_y
        if self.y is not None and len(self.y) != self.n:
            raise ValueError(f"y has {len(self.y)} rows for a probe of {self.n}")
        self.x_t = _x_t_method(x_t, noise, x, len(self.probe))
        if isinstance(classifier_iter, bool) or not isinstance(classifier_iter, int) or classifier_iter < 1:
            raise ValueError(f"classifier_iter must be an integer >= 1, got {classifier_iter!r}")
        self.classifier_iter = classifier_iter
        self.every, self.noise, self.noise_draws = every, float(noise), noise_draws
        self.noise_relative = bool(noise_relative)
        self.batch_size, self.seed = batch_size, seed
        self.options = {**MONITOR_DEFAULTS, "seed": seed, **(estimate_options or {})}
        EstimateOptions(**self.options)  # a bad option is a ValueError naming it, now
        self.accelerator, self.prefix = accelerator, prefix
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ measuring
    def step(self, step: int, log_step: int | None = None) -> dict[str, Any] | None:
        """Measure (and log) when ``step`` is a multiple of ``every`` and not yet in the history
        (a resumed run does not repeat a measurement); returns the new record or None.
        ``log_step``: the trackers' step to file the values under (default ``step``), e.g. the
        optimizer step when ``step`` counts epochs."""
        if step % self.every != 0 or any(r["step"] == step for r in self.history):
            return None
        return self.measure(step, log_step)

    def measure(self, step: int, log_step: int | None = None) -> dict[str, Any]:
        """Capture the layers on the probe, estimate every quantity, append the record
        ``{"step", "noise", "noise_relative", "x_t_method", "seconds", "layers": {name: {"x_t",
        "x_t_stderr", "t_y", "warnings"}}}`` (nats; ``x_t_upper`` with ``x_t="channel"``,
        ``noise_std`` (the s used) with noise, ``t_y`` only with labels, and ``t_y_stderr`` with
        ``t_y="critic"``) to :attr:`history`, log it, and return it. Identical on every rank."""
        started = time.perf_counter()
        x, taken = self.capture()
        rank, world = _rank_and_world()
        mine = {
            name: self._estimate(x, t, i) for i, (name, t) in enumerate(taken.items()) if i % world == rank
        }
        layers = _all_gather_dicts(mine, world)
        record = {
            "step": int(step),
            "noise": self.noise,
            "noise_relative": self.noise_relative,
            "x_t_method": self.x_t,
            "seconds": _max_over_ranks(time.perf_counter() - started, world),
            "layers": {name: layers[name] for name in self.names},
        }
        self.history.append(record)
        self.log(record, log_step)
        return record

    def capture(self) -> tuple[Tensor, dict[str, Tensor]]:
        """(X [N, d_x], {layer name: T [N, d_t]}) on the probe: float32 on the CPU, flattened per
        sample, without gradients; the model's modes and the RNG states are restored after."""
        root = unwrap_model(self.model)
        device = next((p.device for p in root.parameters()), torch.device("cpu"))
        specs = zip([self.x_spec, *self.layers], ["x", *self.names], strict=True)
        taps = [Tap(root, spec, name) for spec, name in specs]
        parts: list[list[Tensor]] = [[] for _ in taps]
        size = self.batch_size or self.n
        try:
            with preserved_state(root), torch.no_grad():
                for start in range(0, self.n, size):
                    root(*(p[start : start + size].to(device) for p in self.probe))
                    for tap, part in zip(taps, parts, strict=True):
                        if not tap.fired:
                            raise ValueError(
                                f"{tap.where} was not computed by the model's forward pass on the probe "
                                "(a submodule the forward never calls?)"
                            )
                        part.append(rearrange(tap.take().detach().float().cpu(), "n ... -> n (...)"))
        finally:
            for tap in taps:
                tap.remove()
        x, *ts = (torch.cat(part) for part in parts)
        return x, dict(zip(self.names, ts, strict=True))

    def _estimate(self, x: Tensor, t: Tensor, index: int) -> dict[str, Any]:
        y, labels, clean = self.y, self.labels, t
        out: dict[str, Any] = {"warnings": []}
        std = self.noise_std(t)
        if std > 0:
            out["noise_std"] = std
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            x = x.repeat(self.noise_draws, 1)
            t = t.repeat(self.noise_draws, 1)
            t = t + std * torch.randn(t.shape, generator=gen)
            y = None if y is None else y.repeat(self.noise_draws, 1)
            labels = None if labels is None else labels.repeat(self.noise_draws)
        pairs = [("x_t", x, t)] if self.x_t == "critic" else []
        if self.x_t == "channel":
            lower, upper, out["x_t_stderr"] = channel_bounds(clean, t, std)
            out["x_t"], out["x_t_upper"] = max(0.0, lower), max(0.0, upper)  # MI >= 0
            if lower < 0:
                out["warnings"].append(f"x_t: the channel's lower bound {lower:.3f} nats read as 0")
        if y is not None and self.t_y == "critic":
            pairs.append(("t_y", t, y))
        for key, a, b in pairs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # kept in the record instead of printed every call
                result = estimate_mi(a, b, **self.options)
            out[key], out[f"{key}_stderr"] = float(result.mi), float(result.stderr)
            out["warnings"] += [f"{key}: {w}" for w in result.warnings]
        if y is not None and self.t_y == "classifier":
            bound = classifier_bound(t, labels, seed=self.seed, max_iter=self.classifier_iter)
            out["t_y"] = max(0.0, bound)  # MI >= 0: a held-out bound below 0 found nothing
            if bound < 0:
                out["warnings"].append(f"t_y: the held-out classifier bound {bound:.3f} nats read as 0")
        return out

    def noise_std(self, t: Tensor) -> float:
        """The std of the noise added to layer activations t [N, d]: ``noise``, or with
        ``noise_relative`` noise · sqrt(mean per-unit variance of t); a constant layer (spread 0,
        so I = 0 at any noise) gets ``noise`` itself."""
        if not self.noise_relative or self.noise == 0:
            return self.noise
        spread = float(t.double().var(0, correction=0).mean().sqrt()) if len(t) > 1 else 0.0
        return self.noise * spread if spread > 0 else self.noise

    # ------------------------------------------------------------------ logging and state
    def metrics(self, record: dict[str, Any] | None = None) -> dict[str, float]:
        """The flat ``{prefix}{layer}/x_t`` (and ``/x_t_upper``, ``/t_y``) dict of a record
        (default: the latest)."""
        record = record if record is not None else (self.history[-1] if self.history else None)
        if record is None:
            return {}
        return {
            f"{self.prefix}{name}/{key}": values[key]
            for name, values in record["layers"].items()
            for key in _QUANTITIES
            if key in values
        }

    def log(self, record: dict[str, Any], log_step: int | None = None) -> None:
        """Send a record's metrics (and ``{prefix}seconds``, the wall time of the measurement) to
        the accelerator's trackers at ``log_step`` (default: the record's step); main process
        only, a no-op without an accelerator."""
        if self.accelerator is not None:
            values = {**self.metrics(record), f"{self.prefix}seconds": record["seconds"]}
            self.accelerator.log(values, step=record["step"] if log_step is None else log_step)

    def state_dict(self) -> dict[str, Any]:
        """The history (JSON), for ``accelerator.register_for_checkpointing`` or ``torch.save``."""
        return {"history": json.dumps(self.history), "names": list(self.names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history; ValueError when the checkpoint watched other layers."""
        names = list(state.get("names", self.names))
        if names != self.names:
            raise ValueError(f"the checkpoint's monitor watched layers {names}, this one {self.names}")
        self.history = json.loads(state.get("history", "[]"))

    # ------------------------------------------------------------------ figures
    def plot_plane(self, path: str | Path, title: str | None = None) -> Path:
        """The information plane of the history (I(X;T) against I(T;Y), coloured by step) as a PNG."""
        from .plots import plot_information_plane

        return plot_information_plane(self.history, path, title=title)

    def plot_over_time(self, path: str | Path, title: str | None = None) -> Path:
        """Each layer's I(X;T) (and I(T;Y)) against the step, as a PNG."""
        from .plots import plot_mi_over_time

        return plot_mi_over_time(self.history, path, title=title)

    def log_figures(self, directory: str | Path, step: int | None = None) -> list[Path]:
        """Write ``information_plane.png`` (with labels) and ``mi_over_time.png`` under
        ``directory`` on the main process and log them as ``wandb.Image`` (keys
        ``{prefix}information_plane``, ``{prefix}over_time``) when a wandb run is active and
        pillow is installed. Returns the paths written (empty on other ranks)."""
        acc = self.accelerator
        if (acc is not None and not acc.is_main_process) or not self.history:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        figures = {f"{self.prefix}over_time": self.plot_over_time(directory / "mi_over_time.png")}
        if self.y is not None:
            figures[f"{self.prefix}information_plane"] = self.plot_plane(directory / "information_plane.png")
        if acc is not None:
            from .plots import wandb_images

            images = wandb_images(figures)
            if images:
                acc.log(images, step=self.history[-1]["step"] if step is None else step)
        return list(figures.values())


def _x_t_method(x_t: str, noise: float, x: Spec, n_inputs: int) -> str:
    """``"channel"`` or ``"critic"`` for the monitor's ``x_t`` option; ValueError when the
    channel bounds do not apply (they need noise and X = the model's inputs)."""
    if x_t not in ("auto", "channel", "critic"):
        raise ValueError(f"x_t must be 'auto', 'channel' or 'critic', got {x_t!r}")
    applies = noise > 0 and isinstance(x, str) and x == "input"
    if x_t == "channel" and not applies:
        raise ValueError(
            "x_t='channel' needs noise > 0 (I(X; T + N(0, s²)) of the noise channel) and x='input' "
            f"(X = the model's inputs, of which T is a function); got noise={noise!r}, x={x!r}"
        )
    if x_t == "auto":
        return "channel" if applies and n_inputs == 1 else "critic"
    return x_t


# ---------------------------------------------------------------------- several processes
def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_dicts(mine: dict[str, Any], world: int) -> dict[str, Any]:
    if world == 1:
        return mine
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    merged: dict[str, Any] = {}
    for part in gathered:
        merged.update(part)
    return merged


def _max_over_ranks(value: float, world: int) -> float:
    if world == 1:
        return float(value)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, float(value))
    return float(max(gathered))
