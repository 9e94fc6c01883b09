"""MIMonitor: per-layer held-out MI of a training model, through Accelerate's trackers.

The logged numbers are read back from where they were written (TensorBoard event files, a
checkpoint folder, a wandb offline run file, the other rank's history), never from the monitor's
own memory alone.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate_helpers import RecordingTracker
from torch import nn

from mine_reg.monitor import MIMonitor, channel_bounds, classifier_bound
from mine_reg.plots import plot_information_plane, plot_mi_over_time, plot_result

pytestmark = pytest.mark.usefixtures("single_thread", "fresh_accelerate_state")

CHEAP = {"max_steps": 50, "hidden": (16,), "embed_dim": 8}  # the pipeline, not the accuracy


class Net(nn.Module):
    """x [B, 6] -> body (Linear, Tanh, Dropout, Linear, Tanh) -> head [B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 4), nn.Tanh())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _probe(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes


def _monitor(model: nn.Module, **kwargs) -> MIMonitor:
    x, y = _probe()
    defaults = {"layers": ["body.1", "body.4"], "probe": x, "y": y, "estimate_options": CHEAP}
    return MIMonitor(model, **{**defaults, **kwargs})


# ----------------------------------------------------------------------------- specs and state
def test_wrong_layer_name_lists_the_real_ones():
    with pytest.raises(ValueError, match="no submodule named 'body.9'") as err:
        _monitor(Net(), layers=["body.1", "body.9"])
    assert "body.1" in str(err.value) and "body.4" in str(err.value)


def test_a_layer_the_forward_never_runs_is_named():
    model = Net()
    model.unused = nn.Linear(2, 2)
    monitor = _monitor(model, layers=["body.1", "unused"])
    with pytest.raises(ValueError, match="'unused' was not computed by the model's forward"):
        monitor.measure(0)
    assert monitor.history == []


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="max_steps"):
        _monitor(Net(), estimate_options={"max_steps": 0})
    with pytest.raises(ValueError, match="every"):
        _monitor(Net(), every=0)
    with pytest.raises(ValueError, match="noise"):
        _monitor(Net(), noise=-1.0)
    with pytest.raises(ValueError, match="y has 10 rows"):
        _monitor(Net(), y=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="x_t must be"):
        _monitor(Net(), x_t="binning")
    with pytest.raises(ValueError, match="x_t='channel' needs noise > 0"):
        _monitor(Net(), x_t="channel")
    with pytest.raises(ValueError, match="x='input'"):
        _monitor(Net(), x_t="channel", noise=0.5, x="body.1")
    with pytest.raises(ValueError, match="classifier_iter"):
        _monitor(Net(), classifier_iter=0)
    with pytest.raises(ValueError, match="noise s > 0"):
        channel_bounds(torch.zeros(4, 2), torch.zeros(4, 2), 0.0)


@pytest.mark.parametrize("x_t", ["channel", "critic"])
def test_training_rng_streams_and_modes_are_untouched(x_t):
    """The monitor draws noise and fits critics, yet the training run's next random numbers
    (torch, Python, NumPy) and every module's train/eval flag are as if it had not run."""
    model = Net()
    model.train()
    model.body[2].eval()  # a submodule the user froze in eval mode must stay so
    monitor = _monitor(model, noise=0.1, x_t=x_t)

    def draws() -> tuple:
        return torch.rand(5), random.random(), np.random.rand(3)

    modes = [m.training for m in model.modules()]
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    expected = draws()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    monitor.measure(step=0)
    got = draws()
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
    np.testing.assert_array_equal(got[2], expected[2])
    assert [m.training for m in model.modules()] == modes
    # eval mode during the capture: dropout off, so two captures give the same activations
    _, first = monitor.capture()
    _, second = monitor.capture()
    assert torch.equal(first["body.4"], second["body.4"])


def test_step_measures_every_k_and_not_twice():
    monitor = _monitor(Net(), every=2, layers=["body.4"])
    assert monitor.step(1) is None
    record = monitor.step(2)
    assert record is not None and set(record["layers"]["body.4"]) >= {"x_t", "t_y", "x_t_stderr"}
    assert monitor.step(2) is None  # already in the history (e.g. after a resume)
    assert [r["step"] for r in monitor.history] == [2]


def test_history_survives_a_checkpoint_resume(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = Net()
    monitor = _monitor(model)
    accelerator.register_for_checkpointing(monitor)
    monitor.measure(1)
    monitor.measure(2)
    accelerator.save_state(str(tmp_path / "ckpt"))

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed_acc = Accelerator(cpu=True)
    resumed = _monitor(model)
    resumed_acc.register_for_checkpointing(resumed)
    resumed_acc.load_state(str(tmp_path / "ckpt"))
    assert resumed.history == monitor.history and len(resumed.history) == 2
    assert resumed.step(2) is None  # the resumed run does not measure step 2 again
    other = _monitor(model, layers=["body.1"])
    with pytest.raises(ValueError, match="watched layers"):
        other.load_state_dict(monitor.state_dict())


# ----------------------------------------------------------------------------- trackers
def test_tensorboard_event_files_hold_the_logged_values(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("monitor")
    monitor = _monitor(Net(), accelerator=accelerator)
    monitor.measure(3)
    monitor.measure(5)
    accelerator.end_training()

    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, list(tmp_path.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    for record in monitor.history:
        for key, value in monitor.metrics(record).items():
            scalars = {e.step: e.value for e in acc.Scalars(key)}
            assert scalars[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert {"mi/body.1/x_t", "mi/body.4/t_y", "mi/seconds"} <= set(acc.Tags()["scalars"])


def test_wandb_offline_run_holds_the_monitor_keys(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    from mine_reg.tracking import end_tracking, init_wandb_tracking

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=["wandb", recorder])
    init_wandb_tracking(accelerator, "mine-reg-test", run_name="monitor-offline")
    monitor = _monitor(Net(), accelerator=accelerator)
    monitor.measure(4)
    written = monitor.log_figures(tmp_path / "figures")
    end_tracking(accelerator)

    assert {p.name for p in written} == {"mi_over_time.png", "information_plane.png"}
    logged = recorder.calls[0]
    assert logged[1] == 4 and logged[0]["mi/body.4/x_t"] == monitor.history[0]["layers"]["body.4"]["x_t"]
    data = next((tmp_path / "wandb").glob("offline-run-*/*.wandb")).read_bytes()
    for key in ("mi/body.1/x_t", "mi/body.4/t_y", "mi/information_plane"):
        assert key.encode() in data


# ----------------------------------------------------------------------------- two processes
def _two_rank_run(out: str) -> None:
    recorder = RecordingTracker()
    accelerator = Accelerator(cpu=True, log_with=[recorder])
    accelerator.init_trackers("two")
    torch.manual_seed(0)  # the same model on both ranks, as DDP would broadcast
    model = accelerator.prepare(Net())
    x, y = _probe()
    monitor = MIMonitor(
        model, layers=["body.1", "body.4", "head"], probe=x, y=y, estimate_options=CHEAP,
        accelerator=accelerator,
    )  # fmt: skip
    # each rank gets a different global RNG stream: the numbers must not depend on it
    torch.manual_seed(100 + accelerator.process_index)
    monitor.measure(1)
    accelerator.end_training()
    result = {
        "world": accelerator.num_processes,
        "history": monitor.history,
        "logged": recorder.calls,
        "main": accelerator.is_main_process,
    }
    Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps(result))


@pytest.mark.distributed
def test_two_processes_hold_and_log_identical_values(tmp_path):
    # accelerate's debug_launcher, on a free port rather than its fixed 29500 (which other
    # runs on a shared machine may hold)
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "world_size": 2, "master_addr": "127.0.0.1", "master_port": str(port),
        "accelerate_mixed_precision": "no", "accelerate_debug_rdv_file": str(tmp_path / "rdv"),
        "accelerate_use_cpu": "yes", "gloo_socket_ifname": "lo",
    }  # fmt: skip
    with patch_environment(**env):
        launcher = PrepareForLaunch(_two_rank_run, debug=True)
        start_processes(launcher, args=(str(tmp_path),), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["history"][0]["layers"] == ranks[1]["history"][0]["layers"]
    main = [r for r in ranks if r["main"]]
    assert len(main) == 1 and len(main[0]["logged"]) == 1
    assert [r["logged"] for r in ranks if not r["main"]] == [[]]
    values, step = main[0]["logged"][0]
    layers = ranks[1]["history"][0]["layers"]
    assert step == 1 and values["mi/head/x_t"] == layers["head"]["x_t"]
    assert values["mi/body.1/t_y"] == layers["body.1"]["t_y"]


# ----------------------------------------------------------------------------- what is measured
@pytest.mark.parametrize("x_t", ["channel", "critic"])
def test_noise_makes_x_t_finite_and_decreasing_in_s(x_t):
    """T = W x on Gaussian x [N, 4], W 2x4 with singular values 2 and 1: I(X; T + N(0, s²)) =
    sum_i 0.5 ln(1 + sigma_i² / s²) (finite for s > 0). The estimates fall with s and, being
    read-outs of lower bounds, exceed the truth by at most their read-out noise; the channel's
    upper bound falls short of it by at most that noise."""
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    model = nn.Sequential(layer)
    x = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0))
    estimates, truths = [], []
    for s in (0.3, 1.0, 3.0):
        monitor = MIMonitor(model, layers=["0"], probe=x, noise=s, noise_draws=2, x_t=x_t)
        record = monitor.measure(0)
        values = record["layers"]["0"]
        truth = sum(0.5 * math.log(1 + sv**2 / s**2) for sv in (2.0, 1.0))
        assert record["x_t_method"] == x_t and math.isfinite(values["x_t"])
        assert values["x_t"] <= truth + 3 * values["x_t_stderr"] + 0.05, (s, values, truth)
        if x_t == "channel":
            assert values["x_t_upper"] >= truth - 3 * values["x_t_stderr"] - 0.05, (s, values, truth)
        estimates.append(values["x_t"])
        truths.append(truth)
    assert estimates[0] > estimates[1] > estimates[2] >= 0.0, (estimates, truths)
    assert estimates[0] > truths[1]  # informative: the small-noise reading is above the next truth


def _train_digits_classifier(seed: int, epochs: int, n_fit: int = 797):
    """A 64-64-32-16-10 ReLU classifier fitted on ``n_fit`` of the 1,797 digits; the other
    1,000 are the held-out probe (its inputs, labels and the classifier's cross-entropy there)."""
    from recipes.digits import load_images
    from recipes.layers import mlp

    x_train, y_train, x_test, y_test = load_images("digits", seed=0)
    x, y = torch.cat([x_train, x_test]).flatten(1), torch.cat([y_train, y_test])
    x_fit, y_fit, x_probe, y_probe = x[:n_fit], y[:n_fit], x[n_fit:], y[n_fit:]
    torch.manual_seed(seed)
    net = mlp([64, 64, 32, 16, 10])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(n_fit).split(100):
            loss = F.cross_entropy(net(x_fit[idx]), y_fit[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        probe_ce = float(F.cross_entropy(net(x_probe), y_probe))
    return net, x_probe, y_probe, probe_ce


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_last_hidden_t_y_lies_between_the_classifiers_bound_and_ln10(seed):
    """For any decoder q, I(T; Y) >= H(Y) - E[-log q(y|t)]: the classifier's own head gives the
    lower end H(Y) - held-out CE (H(Y) <= ln 10, the probe's plug-in label entropy); the upper
    end is H(Y) <= ln 10. The classifier is fitted on 797 digits and the monitor reads its last
    hidden layer on the other 1,000 (its read-out q is fitted on 800 of them per fold, about
    what the classifier's head saw: with a far smaller probe than the head's training set the
    read-out q is the weaker decoder and can fall a few hundredths of a nat short)."""
    net, x_probe, y_probe, probe_ce = _train_digits_classifier(seed, epochs=15)
    p = torch.bincount(y_probe, minlength=10).double() / len(y_probe)
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    monitor = MIMonitor(net, layers=["5"], probe=x_probe, y=y_probe, estimate_options=CHEAP)
    t_y = monitor.measure(0)["layers"]["5"]["t_y"]
    assert entropy - probe_ce <= t_y <= entropy <= math.log(10), (t_y, probe_ce, entropy)
    assert math.log(10) - probe_ce <= t_y, (t_y, probe_ce)


def test_classifier_bound_is_zero_for_unrelated_labels_and_h_y_for_a_copy():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (800,), generator=gen)
    noise = torch.randn(800, 3, generator=gen)
    copy = F.one_hot(labels, 4).float() * 5 + 0.1 * torch.randn(800, 4, generator=gen)
    p = torch.bincount(labels).float() / 800
    entropy = float(-(p * p.log()).sum())
    assert classifier_bound(noise, labels) < 0.02  # held-out: no information to find, none found
    assert classifier_bound(copy, labels) == pytest.approx(entropy, abs=0.05)


def test_channel_bounds_of_separated_and_of_equal_centres():
    """Four centres t_j 40 s apart: each noisy z is explained by its own centre alone (the others'
    likelihood ratio is below exp(-600)), so the lower bound is its ceiling ln N = ln 4 exactly
    and the leave-one-out upper bound, which only sees how badly the other centres explain z,
    is far above it. Four equal centres carry nothing: both bounds are exactly 0."""
    t = torch.tensor([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0], [40.0, 40.0]])
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    lower, upper, _ = channel_bounds(t, t.repeat(50, 1) + noise, 1.0)
    assert lower == pytest.approx(math.log(4), abs=1e-9) and upper > 100
    same = torch.zeros(4, 2)
    assert channel_bounds(same, same.repeat(50, 1) + noise, 1.0)[:2] == pytest.approx((0.0, 0.0), abs=1e-12)


def test_relative_noise_reads_a_rescaled_layer_the_same():
    """With noise_relative the noise is in units of each layer's spread: multiplying a layer's
    weights (and so its output T) by 10 changes no estimate (the channel bounds and the
    classifier bound depend on T / spread only); with absolute noise I(X; T + N) grows."""

    def readings(scale: float, relative: bool) -> dict:
        torch.manual_seed(0)
        model = Net()
        with torch.no_grad():
            model.body[0].weight.mul_(scale)
            model.body[0].bias.mul_(scale)
        monitor = _monitor(model, layers=["body.0"], noise=0.5, noise_relative=relative)
        return monitor.measure(0)["layers"]["body.0"]

    base, scaled = readings(1.0, True), readings(10.0, True)
    for key in ("x_t", "x_t_upper", "t_y"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-5, abs=1e-6), key
    assert scaled["noise_std"] == pytest.approx(10 * base["noise_std"], rel=1e-6)
    assert readings(10.0, False)["x_t"] > readings(1.0, False)["x_t"] + 1.0


# ----------------------------------------------------------------------------- figures
def test_figures_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from mine_reg import estimate_mi

    monitor = _monitor(Net())
    monitor.measure(1)
    monitor.measure(2)
    plane = plot_information_plane(monitor.history, tmp_path / "plane.png")
    over = plot_mi_over_time(monitor.history, tmp_path / "over.png")
    x, _ = _probe(400)
    curve = plot_result(estimate_mi(x[:, :3], x[:, :3] + x[:, 3:], **CHEAP), tmp_path / "curve.png")
    for path in (plane, over, curve):
        assert path.stat().st_size > 5_000 and path.read_bytes()[:4] == b"\x89PNG"
    no_labels = _monitor(Net(), y=None)
    no_labels.measure(1)
    with pytest.raises(ValueError, match="no I\\(T;Y\\)"):
        no_labels.plot_plane(tmp_path / "p.png")
    assert os.path.exists(no_labels.plot_over_time(tmp_path / "o.png"))
