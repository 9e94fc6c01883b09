"""Run a recipe the way a user does, for the recipe tests: as its own program in one process
(``python recipes/<name>.py``, or ``python -m recipes.<name>`` with ``as_module``), or as two
real CPU processes under ``accelerate launch`` (``--cpu --num_processes 2`` would start only
one). The command lines come from ``recipes.common.recipe_command``, as the benchmarks' do.
wandb is disabled or offline, never online, and writes under the test's tmp_path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from recipes.common import ROOT, recipe_command
from recipes.common import recipe_env as _recipe_env

__all__ = ["ROOT", "recipe_env", "run_recipe", "launch_two_processes", "read_results"]


def recipe_env(tmp_path: Path, wandb_mode: str = "disabled") -> dict[str, str]:
    """The repository root on PYTHONPATH, one CPU thread, wandb ``wandb_mode`` under tmp_path and
    no account (no ``WANDB_API_KEY``)."""
    env = _recipe_env(WANDB_MODE=wandb_mode, WANDB_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("WANDB_API_KEY", None)
    return env


def run_recipe(
    recipe: str, tmp_path: Path, *args: str, wandb_mode: str = "disabled", timeout: float = 120,
    as_module: bool = False,
) -> subprocess.CompletedProcess:  # fmt: skip
    """``python recipes/<recipe>.py *args`` from the repository root; the caller checks the
    return code."""
    return subprocess.run(
        recipe_command(recipe, args, as_module=as_module),
        cwd=ROOT,
        env=recipe_env(tmp_path, wandb_mode),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch_two_processes(
    recipe: str, tmp_path: Path, *args: str, wandb_mode: str = "disabled", timeout: float = 180
) -> subprocess.CompletedProcess:
    """``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/<recipe>.py
    *args``."""
    env = {**recipe_env(tmp_path, wandb_mode), "ACCELERATE_USE_CPU": "1"}
    cmd = recipe_command(recipe, args, processes=2, as_module=False)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
