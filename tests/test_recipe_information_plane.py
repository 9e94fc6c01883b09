"""recipes/information_plane.py end to end: two real CPU processes under ``accelerate launch``
(tiny budget: the 8x8 digits, 2 epochs, a 300-sample probe), and its configuration errors."""

from __future__ import annotations

import math

import pytest
from recipe_runs import launch_two_processes, read_results, run_recipe

SMALL = ["--dataset", "digits", "--epochs", "2", "--monitor-every", "1", "--probe", "300", "--lr", "1e-2"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_write_the_plane(tmp_path):
    out = tmp_path / "run"
    proc = launch_two_processes("information_plane", tmp_path, *SMALL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(out)
    assert results["processes"] == 2
    for arm in ("plain", "ib"):
        history = results["arms"][arm]["history"]
        assert [r["step"] for r in history] == [0, 1, 2]
        assert all(len(r["layers"]) == 5 for r in history)
        assert all(v["t_y"] >= 0 and v["x_t"] >= 0 for r in history for v in r["layers"].values())
        # I(X; T + N) from the noise channel: its lower bound is at most ln N on a probe of N
        assert all(r["x_t_method"] == "channel" and r["noise_relative"] for r in history)
        assert all(v["x_t"] <= math.log(300) + 1e-9 for r in history for v in r["layers"].values())
        assert results["arms"][arm]["test_error"] < 0.75  # well below chance (0.9) after 2 epochs
    assert (out / "information_plane.png").stat().st_size > 10_000
    assert (out / "mi_over_time_ib.png").is_file()


def test_bad_arm_is_one_line_error(tmp_path):
    proc = run_recipe("information_plane", tmp_path, "--arms", "plain,vib", "--out", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert "arms must be a non-empty list" in proc.stderr and "Traceback" not in proc.stderr
