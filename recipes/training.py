"""Pieces of a recipe's training loop: the method's extra loss term, progress and step logging,
a linear learning-rate decay, and images to wandb.

    penalty = Penalty.of(accelerator, MIRegularizer(...))  # or Penalty() / Penalty(term): no branches later
    for batch in (bar := progress(accelerator, loader, "epoch 1/5")):
        loss = task_loss + penalty(...)
        ...
        log_step(accelerator, step, penalty, bar, loss=loss)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from mine_reg.tracking import log_metrics


class Penalty:
    """A method's extra loss term, built once before the training loop so that the loop reads
    the same for every method: ``loss = task_loss + penalty(**inputs)``.

    ``Penalty()`` is the baseline's 0; ``Penalty(term)`` calls ``term(**inputs)`` (e.g. Deep
    VIB's beta·KL); ``Penalty.of(accelerator, reg)`` is an ``MIRegularizer``'s term (``reg()``
    unless ``term`` says how to call it), checkpointed with the run and reporting its metrics.
    """

    def __init__(self, term: Callable[..., torch.Tensor | float] | None = None, source: Any = None) -> None:
        self.term = term
        self.source = source

    @classmethod
    def of(
        cls, accelerator: Accelerator, reg: Any, term: Callable[..., torch.Tensor] | None = None
    ) -> Penalty:
        """The term of regularizer ``reg``, registered for checkpointing with ``accelerator``."""
        accelerator.register_for_checkpointing(reg)
        return cls(term or (lambda **_: reg()), reg)

    def __call__(self, **inputs: Any) -> torch.Tensor | float:
        return 0.0 if self.term is None else self.term(**inputs)

    def metrics(self) -> dict[str, float]:
        """The regularizer's latest metrics (nats), or {} for a term without any."""
        return self.source.metrics() if self.source is not None else {}


def progress(accelerator: Accelerator, iterable: Iterable, desc: str, **kwargs: Any) -> tqdm:
    """A progress bar over ``iterable``, shown by the main process only."""
    return tqdm(iterable, desc=desc, disable=not accelerator.is_main_process, **kwargs)


def log_step(
    accelerator: Accelerator, step: int, penalty: Penalty, bar: tqdm, **losses: torch.Tensor
) -> None:
    """Log a training step: each loss as ``train/<name>``, the penalty's metrics as ``mi/...``;
    the losses and the MI estimate (nats) also go to the progress bar."""
    values = {name: loss.item() for name, loss in losses.items()}
    accelerator.log({f"train/{name}": v for name, v in values.items()}, step=step)
    mi = log_metrics(accelerator, penalty, step=step).get("mi/mi")
    shown = {name: f"{v:.3f}" for name, v in values.items()}
    bar.set_postfix(shown if mi is None else {**shown, "mi": f"{mi:.3f}"}, refresh=False)


def set_linear_decay(step: int, total: int, *optimizers: tuple[torch.optim.Optimizer, float]) -> None:
    """Set each ``(optimizer, base_lr)``'s learning rate to base_lr·(1 - step/total): a linear
    decay to 0 over ``total`` steps that depends on the step alone, so a resumed run continues it."""
    for optimizer, base_lr in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = base_lr * (1.0 - step / total)


def log_image(accelerator: Accelerator, key: str, path: Path, step: int, caption: str | None = None) -> None:
    """Log the PNG at ``path`` as a ``wandb.Image`` under ``key``: on the main process, when a
    wandb run is active and pillow (which wandb.Image needs) is installed."""
    if not accelerator.is_main_process:
        return
    try:
        import PIL  # noqa: F401
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        accelerator.log({key: wandb.Image(str(path), caption=caption)}, step=step)
