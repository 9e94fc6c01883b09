"""Send an :class:`~mine_reg.MIRegularizer`'s metrics to Accelerate's experiment trackers.

    accelerator = Accelerator(log_with="wandb")
    init_wandb_tracking(accelerator, "mine-ib", config=vars(args))
    for step, batch in enumerate(loader):
        ...
        loss = task_loss + reg()
        accelerator.backward(loss)
        log_metrics(accelerator, reg, step=step)      # {"mi/mi": ..., "mi/objective": ..., ...}
    end_tracking(accelerator)                         # finishes and flushes the wandb run

Without a wandb account (no ``WANDB_API_KEY``), :func:`init_wandb_tracking` runs wandb offline:
the run is written under ``./wandb`` (or ``$WANDB_DIR/wandb``) and can be uploaded later with
``wandb sync``.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

__all__ = ["log_metrics", "init_wandb_tracking", "end_tracking"]


def log_metrics(accelerator: Any, reg: Any, step: int | None = None, prefix: str = "mi/") -> dict[str, float]:
    """Log ``reg.metrics()`` through ``accelerator.log`` under prefixed keys.

    Args:
        accelerator: an ``accelerate.Accelerator`` whose trackers were started with
            ``init_trackers`` (or :func:`init_wandb_tracking`). ``accelerator.log`` itself only
            acts on the main process, so this may be called on every rank.
        reg: an :class:`~mine_reg.MIRegularizer` (anything with a ``metrics() -> dict`` method).
        step: the step to file the values under (``None``: the tracker's own counter).
        prefix: prepended to every key, e.g. ``"mi/"`` gives ``"mi/mi"``, ``"mi/objective"``.

    Returns:
        The dict that was logged: prefixed keys, float values (MI in nats). Empty, and nothing is
        logged, before the regularizer's first call. Under ``gather_marginals=False`` the values
        are the main process's local-batch estimate.
    """
    values = {f"{prefix}{key}": float(value) for key, value in reg.metrics().items()}
    if values:
        accelerator.log(values, step=step)
    return values


def _logs_to_wandb(accelerator: Any) -> bool:
    for tracker in getattr(accelerator, "log_with", None) or []:
        if getattr(tracker, "name", None) == "wandb" or str(tracker) == "wandb":
            return True
    return False


def init_wandb_tracking(
    accelerator: Any,
    project: str,
    config: dict | None = None,
    run_name: str | None = None,
    **wandb_kwargs: Any,
) -> None:
    """Start the accelerator's trackers, with wandb offline unless an account is configured.

    When neither ``WANDB_API_KEY`` nor ``WANDB_MODE`` is set, ``WANDB_MODE=offline`` is set in
    this process's environment first, so ``wandb.init`` never stops at a login prompt (a
    non-interactive job would otherwise hang or fail). An explicit ``WANDB_MODE`` (``online``,
    ``offline``, ``disabled``) is always respected; if you logged in with ``wandb login`` (key in
    ``~/.netrc``) rather than through ``WANDB_API_KEY``, set ``WANDB_MODE=online`` to upload live.

    Args:
        accelerator: an ``accelerate.Accelerator`` created with ``log_with`` including ``"wandb"``
            (other trackers in ``log_with`` are started too; without ``"wandb"`` a warning is
            given and only those are started).
        project: the wandb project (Accelerate's ``project_name``).
        config: hyperparameters stored with the run (``wandb.config``).
        run_name: the run's display name (``wandb.init(name=...)``); wandb picks one if ``None``.
        **wandb_kwargs: more keyword arguments for ``wandb.init`` (``dir``, ``tags``, ``group``...).
    """
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"
    if not _logs_to_wandb(accelerator):
        warnings.warn(
            "init_wandb_tracking: this Accelerator was not created with log_with='wandb'; "
            "no wandb run will be started",
            stacklevel=2,
        )
    kwargs = dict(wandb_kwargs)
    if run_name is not None:
        kwargs["name"] = run_name
    accelerator.init_trackers(project, config=config, init_kwargs={"wandb": kwargs})


def end_tracking(accelerator: Any) -> None:
    """Finish the accelerator's trackers and wait until wandb has written its run file.

    ``accelerator.end_training()`` finishes the wandb run, but wandb's core process closes and
    flushes the offline ``.wandb`` file a moment later; a program that exits (or reads the file)
    at once can leave it holding only its header. ``wandb.teardown()`` waits for the core to shut
    down. Call this once, at the end, on every process.
    """
    accelerator.end_training()
    wandb = sys.modules.get("wandb")  # only if something imported it: never import wandb here
    if accelerator.is_main_process and wandb is not None:
        wandb.teardown()
