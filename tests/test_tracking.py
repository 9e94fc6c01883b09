"""mine_reg.tracking: regularizer metrics through Accelerate's trackers, wandb offline by default.

wandb 0.31 offline runs cannot easily be read back (binary records written by its Go core, no
summary file), so the logged values are checked with a recording ``GeneralTracker`` beside wandb,
and the wandb run only by the metric keys appearing in its ``.wandb`` file.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate_helpers import RecordingTracker
from torch import nn

from mine_reg import MIRegularizer
from mine_reg.tracking import end_tracking, init_wandb_tracking, log_metrics

pytestmark = pytest.mark.usefixtures("single_thread", "fresh_accelerate_state")

METRIC_KEYS = {"mi/mi", "mi/objective", "mi/joint_mean", "mi/log_partition", "mi/beta", "mi/critic_steps"}


def _train(accelerator: Accelerator, steps: int, gaussian_pair) -> MIRegularizer:
    """A tiny regression model with an MI penalty on its 8-d hidden layer, logging every step."""
    x_all, y_all, _ = gaussian_pair(steps * 16, 4, 1.0, seed=0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    reg = MIRegularizer(model, x="input", z="1", beta=0.1, lr=1e-3, hidden=(16,), estimator="mine")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    for step in range(steps):
        x, y = x_all[step * 16 : (step + 1) * 16], y_all[step * 16 : (step + 1) * 16]
        loss = F.mse_loss(model(x), y) + reg()
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()
        logged = log_metrics(accelerator, reg, step=step)
        assert logged == {f"mi/{k}": v for k, v in reg.metrics().items()}
    return reg


def test_log_metrics_sends_prefixed_floats(gaussian_pair):
    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=[recorder])
    accelerator.init_trackers("test", config={"beta": 0.1})
    assert recorder.config == {"beta": 0.1}

    reg = _train(accelerator, 3, gaussian_pair)

    assert [step for _, step in recorder.calls] == [0, 1, 2]
    for values, _ in recorder.calls:
        assert set(values) == METRIC_KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    assert [values["mi/critic_steps"] for values, _ in recorder.calls] == [1.0, 2.0, 3.0]
    assert recorder.calls[-1][0]["mi/mi"] == reg.metrics()["mi"]


def test_log_metrics_before_first_call_logs_nothing():
    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=[recorder])
    accelerator.init_trackers("test")
    reg = MIRegularizer(nn.Linear(2, 2), x="input", z="input", estimator="mine")
    assert log_metrics(accelerator, reg, step=0, prefix="train/") == {}
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("env", "expected_mode"),
    [
        ({}, "offline"),  # no account: never block on a login prompt
        ({"WANDB_API_KEY": "x" * 40}, None),  # an account: leave wandb's default (online)
        ({"WANDB_MODE": "disabled"}, "disabled"),  # an explicit choice always wins
        ({"WANDB_MODE": "online"}, "online"),
    ],
)
def test_init_wandb_tracking_mode(monkeypatch, env, expected_mode):
    """The environment logic alone: the accelerator here has no wandb tracker (nothing starts)."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=[recorder])
    with pytest.warns(UserWarning, match="log_with='wandb'"):
        init_wandb_tracking(accelerator, "test", config={"beta": 0.1}, run_name="r")
    assert os.environ.get("WANDB_MODE") == expected_mode
    assert recorder.config == {"beta": 0.1}


def test_wandb_offline_run_holds_the_metric_keys(monkeypatch, tmp_path, gaussian_pair):
    """A real wandb run, offline because no account is configured, written under tmp_path."""
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")

    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=["wandb", recorder])
    init_wandb_tracking(accelerator, "mine-reg-test", config={"beta": 0.1}, run_name="offline-check")
    assert os.environ["WANDB_MODE"] == "offline"
    assert accelerator.get_tracker("wandb", unwrap=True).settings.mode == "offline"

    _train(accelerator, 3, gaussian_pair)
    # end_training alone finishes the run but only *informs* wandb-core (fire and forget): the
    # core flushes the .wandb file a moment later, so reading it at once races (seen under load:
    # the file held just its 7-byte header). end_tracking also waits for the core to shut down.
    end_tracking(accelerator)

    assert [step for _, step in recorder.calls] == [0, 1, 2]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    files = list(runs[0].glob("*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    for key in ("mi/mi", "mi/objective", "mi/log_partition"):
        assert key.encode() in data
    assert b"offline-check" in data
