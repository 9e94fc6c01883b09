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
:class:`~mine_reg.MIRegularizer`: ``"encoder.2"``, ``"head:input"``, callables), then calls
:func:`~mine_reg.estimate_mi` on (X, T) and, with labels, measures I(T; Y) (class labels: the
cross-fitted bound of a linear read-out, :func:`classifier_bound`; other targets:
``estimate_mi``). Every value is in nats.
The model's train/eval flags and the torch, CUDA, Python and NumPy random states are restored
afterwards, so the training run draws exactly what it would have drawn without the monitor.

What the numbers mean for deterministic layers (Saxe et al., ICLR 2018): when T = f(X) for a
deterministic, injective continuous f, I(X; T) is infinite, and any finite number is a property
of the estimator (its budget, the ln N ceiling of a bound read out on N samples, a binning) rather
than of the layer. ``noise=s`` measures I(X; T + N(0, s² I)) instead, which is finite and well
defined (it falls as s grows and tends to 0); the noise is drawn from the monitor's own seeded
generator. I(T; Y) with discrete labels is at most H(Y) <= ln K for any T, noise or not.

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
from .hooks import Spec, Tap, unwrap_model

__all__ = ["MIMonitor", "MONITOR_DEFAULTS", "preserved_state", "classifier_bound"]

# a cheap default budget for estimate_mi (about half a second per layer and quantity on a CPU
# core for a few hundred probe samples; see the README): estimate_mi's default critic (a
# closed-form Gaussian part plus a small separable network), on standardized columns (pixels and
# one-hot labels are full of ties that a quantile map would not separate)
MONITOR_DEFAULTS: dict[str, Any] = {
    "critic": "gaussian+separable",
    "preprocess": "standardize",
    "hidden": (64,),
    "embed_dim": 16,
    "max_steps": 200,
    "lr": 3e-3,
    "batch_size": 32,
}

_QUANTITIES = ("x_t", "t_y")


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


def classifier_bound(t: Tensor, labels: Tensor, folds: int = 5, l2: float = 1e-3, seed: int = 0) -> float:
    """Cross-fitted Barber-Agakov lower bound on I(T; Y) in nats for integer labels [N] and
    features t [N, d]: H(Y) - CE, where CE is the held-out cross-entropy of a softmax regression
    q(y | t) (L-BFGS, L2 penalty ``l2`` on standardized t) fitted on the other ``folds`` - 1
    folds, and H(Y) the plug-in entropy of the labels. Any q gives I(T; Y) >= H(Y) - E[-log
    q(y|t)], so this is the bound of a linear read-out of T, scored on samples it did not see."""
    n = len(labels)
    if n < 2 * folds:
        raise ValueError(f"the classifier bound needs at least {2 * folds} probe samples, got {n}")
    k = int(labels.max()) + 1
    t = t.double()
    t = (t - t.mean(0)) / (t.std(0) + 1e-8)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = perm.chunk(folds)
    held_out_ce = 0.0
    for i, test in enumerate(parts):
        fit = torch.cat([p for j, p in enumerate(parts) if j != i])
        weight = torch.zeros(t.shape[1], k, dtype=t.dtype, requires_grad=True)
        bias = torch.zeros(k, dtype=t.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe")

        def closure(fit: Tensor = fit, weight: Tensor = weight, bias: Tensor = bias, opt=opt) -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(t[fit] @ weight + bias, labels[fit]) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            held_out_ce += float(F.cross_entropy(t[test] @ weight + bias, labels[test], reduction="sum"))
    p = torch.bincount(labels, minlength=k).double() / n
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return entropy - held_out_ce / n


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
        noise_draws: noisy copies of each probe sample when ``noise`` > 0 (more samples for the
            estimate, the same X; N·noise_draws pairs per estimate).
        batch_size: probe rows per forward pass (None: the whole probe at once).
        estimate_options: overrides of :data:`MONITOR_DEFAULTS` for :func:`estimate_mi`
            (``max_steps``, ``hidden``, ``estimator`` ...); checked here, once.
        accelerator: an ``accelerate.Accelerator`` to ``log`` through (main process only), keys
            ``{prefix}{layer}/x_t`` and ``{prefix}{layer}/t_y``; None: nothing is logged.
        prefix: the key prefix, ``"mi/"`` by default.
        names: display names for ``layers`` (same length), used in keys, history and plots.
        seed: seeds the noise and every estimate (the same model gives the same numbers).
        t_y: how I(T; Y) is measured. ``"critic"``: :func:`estimate_mi` on (T, one-hot Y).
            ``"classifier"`` (integer labels only): :func:`classifier_bound`, the cross-fitted
            H(Y) - CE of a softmax regression on T, cheaper and tighter for class labels on a
            few hundred probe samples. ``"auto"``: classifier for integer labels, else critic.
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
        noise_draws: int = 1,
        batch_size: int | None = None,
        estimate_options: dict[str, Any] | None = None,
        accelerator: Any = None,
        prefix: str = "mi/",
        names: Sequence[str] | None = None,
        seed: int = 0,
        t_y: str = "auto",
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
        self.every, self.noise, self.noise_draws = every, float(noise), noise_draws
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
        ``{"step", "noise", "seconds", "layers": {name: {"x_t", "x_t_stderr", "t_y", "warnings"}}}``
        (nats; ``t_y`` only with labels, and ``t_y_stderr`` with ``t_y="critic"``) to
        :attr:`history`, log it, and return it. Identical on every rank."""
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
        y, labels = self.y, self.labels
        if self.noise > 0:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            x = x.repeat(self.noise_draws, 1)
            t = t.repeat(self.noise_draws, 1)
            t = t + self.noise * torch.randn(t.shape, generator=gen)
            y = None if y is None else y.repeat(self.noise_draws, 1)
            labels = None if labels is None else labels.repeat(self.noise_draws)
        out: dict[str, Any] = {"warnings": []}
        with_critic = y is not None and self.t_y == "critic"
        pairs = [("x_t", x, t)] + ([("t_y", t, y)] if with_critic else [])
        for key, a, b in pairs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # kept in the record instead of printed every call
                result = estimate_mi(a, b, **self.options)
            out[key], out[f"{key}_stderr"] = float(result.mi), float(result.stderr)
            out["warnings"] += [f"{key}: {w}" for w in result.warnings]
        if y is not None and self.t_y == "classifier":
            bound = classifier_bound(t, labels, seed=self.seed)
            out["t_y"] = max(0.0, bound)  # MI >= 0: a held-out bound below 0 found nothing
            if bound < 0:
                out["warnings"].append(f"t_y: the held-out classifier bound {bound:.3f} nats read as 0")
        return out

    # ------------------------------------------------------------------ logging and state
    def metrics(self, record: dict[str, Any] | None = None) -> dict[str, float]:
        """The flat ``{prefix}{layer}/x_t`` (and ``/t_y``) dict of a record (default: the latest)."""
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
