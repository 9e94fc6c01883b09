"""Figures of MI estimates (matplotlib, imported only when a figure is drawn).

    plot_result(estimate_mi(x, y), "curve.png")        # one estimate's training / monitor curve
    plot_information_plane(monitor.history, "plane.png")  # I(X;T) vs I(T;Y) per layer, by step
    plot_mi_over_time(monitor.history, "mi.png")        # each layer's MI against the step

Every function writes a PNG and returns its path; values are in nats.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_result", "plot_information_plane", "plot_mi_over_time", "wandb_images"]

_MARKERS = "osD^vP*Xh<>"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mine_reg[recipes]' or matplotlib") from None
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_result(result: Any, path: str | Path, title: str | None = None) -> Path:
    """An :class:`~mine_reg.MIResult`'s curve: the mean training bound and the monitor-set
    bound (nats) against the critic's training step, the held-out read-out as a horizontal line
    with its 95% interval, and the kept (best-monitor) step marked. A result without a curve
    (plug-in counts, constant columns) is drawn as its read-out alone."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    curve = list(getattr(result, "curve", []) or [])
    train = [(c["step"], c["train"]) for c in curve if c.get("train") is not None]
    monitor = [(c["step"], c["monitor"]) for c in curve if c.get("monitor") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="training bound (mean)", color="tab:blue", alpha=0.8)
    if monitor:
        ax.plot(*zip(*monitor, strict=True), label="monitor bound", color="tab:orange", marker=".")
    low, high = result.interval
    ax.axhline(result.mi, color="black", lw=1, label=f"held-out read-out {result.mi:.3f} nats")
    ax.axhspan(low, high, color="gray", alpha=0.2, label="95% interval")
    if curve and getattr(result, "best_step", None) is not None:
        ax.axvline(result.best_step, color="tab:green", ls=":", label=f"kept step {result.best_step}")
    ax.set_xlabel("critic training step")
    ax.set_ylabel("MI bound (nats)")
    ax.set_title(title or f"{result.estimator} ({result.method}), {result.seconds:.1f} s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _series(history: Sequence[dict], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in history:
        for name, values in record["layers"].items():
            if values.get(key) is not None:
                out.setdefault(name, []).append((record["step"], float(values[key])))
    return out


def _labels(history: Sequence[dict]) -> tuple[str, str]:
    """Axis names: T + N when the history's measurements added noise."""
    noisy = any(r.get("noise", 0) for r in history)
    t = "T+N" if noisy else "T"
    return f"I(X;{t}) (nats)", f"I({t};Y) (nats)"


def plot_information_plane(
    history: Sequence[dict], path: str | Path, title: str | None = None, ax: Any = None
) -> Path | None:
    """The information plane: I(X;T) (x axis) against I(T;Y) (y axis), one marker and line per
    layer, points coloured by step (a :class:`~mine_reg.monitor.MIMonitor` history). With
    ``ax`` the plane is drawn there and nothing is saved (returns None)."""
    plt = _pyplot()
    x_t, t_y = _series(history, "x_t"), _series(history, "t_y")
    if not t_y:
        raise ValueError("the history holds no I(T;Y) values: give the monitor labels (y=...)")
    steps = [r["step"] for r in history]
    own = ax is None
    fig, ax = plt.subplots(figsize=(5.5, 4.2)) if own else (ax.figure, ax)
    norm = plt.Normalize(min(steps), max(max(steps), min(steps) + 1))
    points = None
    for i, name in enumerate(x_t):
        ys = dict(t_y.get(name, []))
        pairs = [(s, v, ys[s]) for s, v in x_t[name] if s in ys]
        if not pairs:
            continue
        s, xv, yv = zip(*pairs, strict=True)
        ax.plot(xv, yv, color="gray", lw=0.6, alpha=0.6)
        points = ax.scatter(
            xv, yv, c=s, cmap="viridis", norm=norm, marker=_MARKERS[i % len(_MARKERS)],
            edgecolors="black", linewidths=0.3, label=name, s=30,
        )  # fmt: skip
    xlabel, ylabel = _labels(history)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "information plane")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="layer", title_fontsize=7)
    if points is not None:
        fig.colorbar(points, ax=ax, label="step")
    return _save(fig, path) if own else None


def plot_mi_over_time(history: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Each layer's I(X;T) (left) and, when present, I(T;Y) (right) against the step, in nats."""
    plt = _pyplot()
    xlabel, ylabel = _labels(history)
    panels = [("x_t", xlabel)] + ([("t_y", ylabel)] if _series(history, "t_y") else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for i, (name, points) in enumerate(_series(history, key).items()):
            ax.plot(*zip(*points, strict=True), marker=_MARKERS[i % len(_MARKERS)], ms=3, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "MI per layer over training", fontsize=10)
    return _save(fig, path)


def wandb_images(figures: dict[str, Path]) -> dict[str, Any]:
    """``{key: wandb.Image(path)}`` when a wandb run is active and pillow is installed, else {}."""
    try:
        import PIL  # noqa: F401
        import wandb
    except ImportError:
        return {}
    if wandb.run is None:
        return {}
    return {key: wandb.Image(str(path)) for key, path in figures.items()}
