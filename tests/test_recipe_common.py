"""recipes/common.py, recipes/training.py and recipes/report.py: the plumbing the recipes share
(checkpointed counters, strict resuming, the penalty object, the linear decay, markdown tables,
the error wrapper), and that recipes run as a package: ``python -m recipes.<name>`` and
``python recipes/<name>.py`` alike, with no ``sys.path`` edits in any recipe."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recipe_runs import recipe_env

from recipes.common import ROOT, TrainState, recipe_command, resume, run
from recipes.report import fmt, markdown_table
from recipes.training import Penalty, set_linear_decay


def test_train_state_round_trips_counters_history_and_generator() -> None:
    gen = torch.Generator().manual_seed(3)
    state = TrainState(gen)
    state.epoch, state.step, state.history = 2, 26, [{"epoch": 1, "error": 0.5}, {"epoch": 2, "error": 0.25}]
    saved = state.state_dict()
    expected_next = torch.rand(4, generator=gen)  # what the generator draws after the save

    restored = TrainState(torch.Generator().manual_seed(99))
    restored.load_state_dict(saved)
    assert (restored.epoch, restored.step, restored.history) == (2, 26, state.history)
    assert torch.equal(torch.rand(4, generator=restored.generator), expected_next)
    # an older checkpoint with only some counters loads with the rest at 0
    older = TrainState()
    older.load_state_dict({"epoch": 5})
    assert (older.epoch, older.step, older.history) == (5, 0, [])
    with pytest.raises(ValueError, match="no sampling generator"):
        TrainState(torch.Generator()).load_state_dict({"step": 1})


class _Loads:
    """Stands in for an Accelerator: records which folder ``load_state`` was given."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load_state(self, path: str) -> None:
        self.loaded.append(path)

    def print(self, *args: object) -> None:
        pass


def test_resume_is_strict_about_named_folders(tmp_path: Path) -> None:
    acc = _Loads()
    ckpt = tmp_path / "checkpoint"
    assert resume(acc, None, ckpt) is None and resume(acc, "auto", ckpt) is None  # fresh starts
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found: .*elsewhere"):
        resume(acc, str(tmp_path / "elsewhere"), ckpt)
    assert acc.loaded == []
    ckpt.mkdir()
    assert resume(acc, "auto", ckpt) == ckpt and resume(acc, str(ckpt), ckpt) == ckpt
    assert acc.loaded == [str(ckpt), str(ckpt)]


def test_penalty_is_zero_a_term_or_a_regularizer() -> None:
    assert Penalty()(mean=torch.ones(2)) == 0.0 and Penalty().metrics() == {}
    kl = Penalty(lambda mean: 0.5 * mean.pow(2).sum())
    assert kl(mean=torch.tensor([2.0])).item() == 2.0 and kl.metrics() == {}

    class Reg:
        def __call__(self, task_loss=None):
            return torch.tensor(3.0 if task_loss is None else 4.0)

        def metrics(self):
            return {"mi": 1.5}

    registered = []
    acc = type("Acc", (), {"register_for_checkpointing": lambda self, obj: registered.append(obj)})()
    reg = Reg()
    plain = Penalty.of(acc, reg)
    clipped = Penalty.of(acc, reg, lambda task_loss: reg(task_loss=task_loss))
    assert plain(task_loss=torch.tensor(0.0)).item() == 3.0  # reg() whatever the loop passes
    assert clipped(task_loss=torch.tensor(0.0)).item() == 4.0
    assert plain.metrics() == {"mi": 1.5} and registered == [reg, reg]


def test_linear_decay_is_a_function_of_the_step() -> None:
    a = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=9.0)
    b = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=9.0)
    set_linear_decay(25, 100, (a, 1.0), (b, 0.1))
    assert a.param_groups[0]["lr"] == 0.75 and b.param_groups[0]["lr"] == pytest.approx(0.075)
    set_linear_decay(100, 100, (a, 1.0))
    assert a.param_groups[0]["lr"] == 0.0


def test_markdown_table() -> None:
    table = markdown_table(["d", "MI"], [[2, fmt(0.28768)], [20, fmt(math.nan)]], align="lr")
    assert table.splitlines() == ["| d | MI |", "|---|---:|", "| 2 | 0.288 |", "| 20 | — |"]
    assert markdown_table(["a", "b", "c"], [], align="lrc").splitlines()[1] == "|---|---:|:---:|"
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a"], [], align="x")


def test_run_turns_bad_settings_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        n: int = 1

    def main(cfg: Cfg) -> None:
        raise ValueError(f"n must be even, got {cfg.n}")

    monkeypatch.setattr(sys, "argv", ["some_recipe.py", "--n", "3"])
    with pytest.raises(SystemExit) as exit_info:
        run(main, Cfg)
    assert exit_info.value.code == "some_recipe.py: error: n must be even, got 3"


def test_no_recipe_edits_sys_path() -> None:
    offenders = [p for p in (ROOT / "recipes").rglob("*.py") if "sys.path" in p.read_text()]
    assert offenders == []


@pytest.mark.slow
@pytest.mark.parametrize("as_module", [True, False], ids=["python -m recipes.ib", "python recipes/ib.py"])
def test_a_recipe_runs_as_module_and_as_script(tmp_path: Path, as_module: bool) -> None:
    proc = subprocess.run(
        recipe_command("ib", ["--help"], as_module=as_module),
        cwd=ROOT, env=recipe_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--config" in proc.stdout and "Information bottleneck" in proc.stdout
