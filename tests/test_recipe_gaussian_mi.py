"""End-to-end checks of ``recipes/gaussian_mi.py`` (the MINE paper's Figure 1 as a recipe).

Both tests run the recipe as a separate program, the way a user does: one plain process (with a
real offline wandb run under tmp_path), and two real CPU processes under ``accelerate launch``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mine_reg.synthetic import gaussian_mi
from recipes.common import ROOT, recipe_command, recipe_env

CONFIG = ROOT / "configs" / "gaussian_mi.yaml"
TIMEOUT_S = 240

# Tiny settings: N = 1200 leaves 600 held-out samples, on which the read-out's standard error at
# I = 0.288 nats is about 0.03 (and KSG's spread at N = 1200, k = 3 is of the same order); 0.15
# is 5 standard errors, loose enough never to flake yet far tighter than the estimate's range
# (a failed fit reads about 0, i.e. 0.29 off).
TOLERANCE = 0.15
TINY = ["--n", "1200", "--max-steps", "60"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = recipe_env(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true", OMP_NUM_THREADS="1")
    for var in ("WANDB_API_KEY", "ACCELERATE_USE_CPU"):
        env.pop(var, None)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp_path / var.lower())
    return env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.mark.slow
def test_single_process_run_writes_results_plot_and_wandb_run(tmp_path):
    out = tmp_path / "out"
    args = [
        "--config",
        str(CONFIG),
        *TINY,
        "--dims",
        "2",
        "--rhos",
        "0.0,0.5",
        "--ksg",
        "true",
        "--out",
        str(out),
    ]
    cmd = recipe_command("gaussian_mi", args, as_module=False)
    proc = _run(cmd, _env(tmp_path))

    assert "processes: 1" in proc.stdout
    assert "| d | rho | truth | mine | mine-f | ksg |" in proc.stdout
    assert (out / "gaussian_mi.png").stat().st_size > 0
    result = json.loads((out / "gaussian_mi.json").read_text())
    assert result["processes"] == 1
    rows = {row["rho"]: row for row in result["rows"]}
    assert sorted(rows) == [0.0, 0.5]
    truth = gaussian_mi(2, 0.5)
    assert rows[0.5]["truth"] == pytest.approx(truth) == pytest.approx(0.2877, abs=1e-3)
    for name in ("mine", "mine-f", "ksg"):
        assert abs(rows[0.5][name] - truth) < TOLERANCE, (name, rows[0.5][name])
        assert abs(rows[0.0][name]) < TOLERANCE, (name, rows[0.0][name])

    # The recipe ends with accelerator.end_training() and wandb.teardown(), so the offline run
    # file is complete once the process has exited.
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    (run_file,) = runs[0].glob("run-*.wandb")
    data = run_file.read_bytes()
    for key in ("mi/true", "mi/mine", "mi/mine-f", "mi/ksg"):
        assert key.encode() in data, key


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_split_and_gather_every_case_once(tmp_path):
    out = tmp_path / "out"
    env = {**_env(tmp_path), "ACCELERATE_USE_CPU": "1"}
    args = ["--config", str(CONFIG), *TINY, "--dims", "2,3", "--rhos", "0.0,0.5,0.9", "--ksg", "false"]
    cmd = recipe_command("gaussian_mi", [*args, "--out", str(out)], processes=2, as_module=False)
    proc = _run(cmd, env)

    assert "processes: 2" in proc.stdout
    assert proc.stdout.count("| d | rho | truth |") == 1  # only the main process prints
    result = json.loads((out / "gaussian_mi.json").read_text())
    assert result["processes"] == 2
    expected = [(d, rho) for d in (2, 3) for rho in (0.0, 0.5, 0.9)]
    got = [(row["d"], row["rho"]) for row in result["rows"]]
    assert sorted(got) == sorted(expected)  # every case exactly once
    assert [row["case"] for row in result["rows"]] == list(range(len(expected)))
    assert {row["rank"] for row in result["rows"]} == {0, 1}  # both ranks did work
    assert (out / "gaussian_mi.png").stat().st_size > 0
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # one run, main process only
