"""The README's main job (recipes/demo.py) end to end at a tiny budget: the IB table for all
three methods, the Gaussian table, both plots, the summary JSON and one offline wandb run per
recipe run holding the logged MI."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from recipes.common import ROOT, recipe_command, recipe_env

# the demo's IB part defaults to mnist5k; the test takes the 8x8 digits (seconds per run)
TINY = ["--ib-dataset", "digits", "--ib-epochs", "2", "--ib-mi-every", "2"]
TINY += ["--gaussian-n", "2000", "--gaussian-dims", "2"]
TINY += ["--gaussian-rhos", "0.0,0.5", "--gaussian-ksg", "false"]


@pytest.mark.slow
def test_demo_runs_everything_and_writes_the_wandb_runs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = recipe_env(OMP_NUM_THREADS="1")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):  # the demo must choose offline by itself
        env.pop(var, None)
    proc = subprocess.run(
        recipe_command("demo", ["--config", "configs/demo.yaml", *TINY, "--out", str(out)], as_module=False),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = ("| baseline | 0 |", "| MINE-IB (club) | 0.001 |", "| Deep VIB | 0.001 |", "| d | rho | truth |")
    for label in rows:
        assert label in proc.stdout, label
    assert (out / "ib.png").stat().st_size > 0
    assert (out / "gaussian_mi" / "gaussian_mi.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["ib"]] == ["baseline", "mine", "vib"]
    assert "Information bottleneck, digits 8x8 (2 epochs, seed 0; 500 test digits)" in proc.stdout
    assert "log 500 = 6.21 nats" in proc.stdout
    for r in summary["ib"]:
        assert r["dataset"] == "digits" and r["epochs"] == 2 and r["test_size"] == 500
        assert math.isfinite(r["test_error"]) and 0 <= r["I_XZ_lower"] <= r["I_XZ_upper"]
    assert sorted(r["rho"] for r in summary["gaussian_mi"]) == [0.0, 0.5]

    runs = sorted(out.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 4, runs  # three IB runs and the Gaussian run, all offline
    by_dir = {p.parts[len(out.parts)]: p.read_bytes() for p in runs}
    assert b"mi/mi" in by_dir["ib_mine"] and b"test/I_XZ" in by_dir["ib_mine"]
    assert b"mi/mine" in by_dir["wandb"] and b"mi/true" in by_dir["wandb"]
