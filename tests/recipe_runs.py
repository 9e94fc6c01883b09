"""Run a recipe the way a user does, for the recipe tests: as its own program in one process, or
as two real CPU processes under ``accelerate launch`` (``--cpu --num_processes 2`` would start
only one). wandb is disabled or offline, never online, and writes under the test's tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipe_env(tmp_path: Path, wandb_mode: str = "disabled") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WANDB_MODE=wandb_mode,
        WANDB_DIR=str(tmp_path),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("WANDB_API_KEY", None)
    return env


def run_recipe(
    recipe: Path, tmp_path: Path, *args: str, wandb_mode: str = "disabled", timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python recipe *args`` from the repository root; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, str(recipe), *args],
        cwd=ROOT,
        env=recipe_env(tmp_path, wandb_mode),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch_two_processes(
    recipe: Path, tmp_path: Path, *args: str, wandb_mode: str = "disabled", timeout: float = 180
) -> subprocess.CompletedProcess:
    """``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipe *args``."""
    env = {**recipe_env(tmp_path, wandb_mode), "ACCELERATE_USE_CPU": "1"}
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(recipe), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
