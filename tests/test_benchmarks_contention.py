"""recipes/benchmarks/contention.py: the aggregation and table on fake timings (fast), and the
script itself with tiny settings, neighbours included (slow)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from recipe_runs import ROOT, run_recipe

from recipes.benchmarks import contention

SCRIPT = ROOT / "recipes" / "benchmarks" / "contention.py"

HEADER = "| condition | setting | runs | median (s) | min (s) | max (s) | median / idle median |"


def _fake_runs() -> list[contention.Run]:
    times = {
        ("idle", "default"): [2.0, 3.0, 2.5],
        ("idle", "num_threads=1"): [4.0, 5.0],
        ("python", "default"): [4.0, 6.0, 5.5],
        ("python", "num_threads=1"): [4.5, 5.5],
        ("torch+torch", "default"): [90.0, 100.0, 130.0],
        ("torch+torch", "num_threads=1"): [6.0, 7.0],
    }
    runs = []
    # interleaved, as the script times them
    for i in range(3):
        for (condition, setting), t in times.items():
            if i < len(t):
                runs.append(contention.Run(condition, setting, t[i], mi=1.0))
    return runs


def test_summarize_medians_extremes_and_ratios_to_idle():
    runs = _fake_runs()
    rows = {(r.condition, r.setting): r for r in contention.summarize(runs)}
    assert len(rows) == 6
    for (c, s), row in rows.items():
        t = [r.seconds for r in runs if (r.condition, r.setting) == (c, s)]
        assert row.n_runs == len(t)
        assert (row.median, row.min, row.max) == (statistics.median(t), min(t), max(t))
        idle = statistics.median([r.seconds for r in runs if (r.condition, r.setting) == ("idle", s)])
        assert row.ratio == pytest.approx(row.median / idle)
    assert rows["idle", "default"].ratio == 1.0
    assert rows["python", "default"].ratio == pytest.approx(5.5 / 2.5)
    assert rows["torch+torch", "num_threads=1"].ratio == pytest.approx(6.5 / 4.5)
    # no idle row for a setting: no ratio
    lone = contention.summarize([contention.Run("python", "default", 3.0, 1.0)])
    assert lone[0].ratio is None


def test_table_and_target_line():
    rows = contention.summarize(_fake_runs())
    table = contention.format_table(rows).splitlines()
    assert table[0] == HEADER
    assert len(table) == 2 + len(rows)
    assert table[2] == "| idle | default | 3 | 2.50 | 2.00 | 3.00 | 1.00x |"
    assert "| torch+torch | default | 3 | 100.00 | 90.00 | 130.00 | 40.00x |" in table
    line, ok = contention.target(rows)
    # python: 5.5 / 2.5 = 2.2x > 2: FAIL; the two-neighbour condition does not count
    assert ok is False
    assert line.startswith(
        "with one CPU-bound neighbour the default's median is within 2x of its idle median: FAIL"
    )
    assert "python: 2.20x" in line and "torch+torch" not in line
    faster = [
        contention.Run(r.condition, r.setting, r.seconds * (0.5 if r.condition == "python" else 1), r.mi)
        for r in _fake_runs()
    ]
    line, ok = contention.target(contention.summarize(faster))
    assert ok is True and ": PASS (python: 1.10x)" in line
    line, ok = contention.target(contention.summarize([r for r in _fake_runs() if r.condition != "idle"]))
    assert ok is None and ": n/a" in line


def test_conditions_and_settings():
    assert contention.condition_kinds("idle") == ()
    assert contention.condition_kinds("python+torch") == ("python", "torch")
    with pytest.raises(ValueError, match="unknown condition 'gpu'"):
        contention.condition_kinds("gpu")
    assert [s for s, _ in contention.thread_settings(4, has_option=True)] == [
        "default",
        "num_threads=1",
        "num_threads=4 (torch default)",
    ]
    assert contention.thread_settings(4, has_option=True)[2][1] == {"num_threads": 4}
    assert contention.thread_settings(1, has_option=True) == [
        ("default", {}),
        ("num_threads=1", {"num_threads": 1}),
    ]
    assert contention.thread_settings(4, has_option=False) == [("default", {})]


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        contention.parse_args(["--conditions", "idle,gpu"])
    assert "unknown condition 'gpu'" in capsys.readouterr().err
    args = contention.parse_args(["--quick"])
    assert (args.repeats, args.n) == (contention.QUICK_REPEATS, contention.QUICK_N)
    assert contention.parse_args(["--quick", "--repeats", "3"]).repeats == 3


class _FakeResult:
    mi = 0.97


def _fake_estimate_mi(calls):
    """An estimate_mi stand-in with the num_threads option, recording its keyword arguments."""

    def estimate_mi(x, y, estimator="mine", *, max_steps=2000, num_threads=None):
        calls.append({"n": len(x), "max_steps": max_steps, "num_threads": num_threads})
        return _FakeResult()

    return estimate_mi


def test_main_times_every_setting_with_the_num_threads_option(monkeypatch, capsys, tmp_path):
    calls: list[dict] = []
    monkeypatch.setattr(contention, "estimate_mi", _fake_estimate_mi(calls))
    monkeypatch.setattr(contention.torch, "get_num_threads", lambda: 3)
    record = contention.main(
        ["--repeats", "2", "--n", "50", "--max-steps", "7", "--conditions", "idle", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    # one warm-up, then 2 repeats of 3 settings, interleaved
    assert [c["num_threads"] for c in calls] == [None, None, 1, 3, None, 1, 3]
    assert all(c["n"] == 50 and c["max_steps"] == 7 for c in calls)
    assert HEADER in out and "no num_threads option" not in out
    for setting in ("default", "num_threads=1", "num_threads=3 (torch default)"):
        assert f"| idle | {setting} | 2 |" in out
    assert ": n/a" in out  # no one-neighbour condition was run
    saved = json.loads((tmp_path / "contention.json").read_text())
    assert saved["rows"] == record["rows"] and len(saved["runs"]) == 6
    assert {r["mi"] for r in saved["runs"]} == {0.97}


def test_main_without_the_option_times_the_default_only(monkeypatch, capsys):
    calls: list[dict] = []

    def old_estimate_mi(x, y, estimator="mine", *, max_steps=2000):
        calls.append({"max_steps": max_steps})
        return _FakeResult()

    monkeypatch.setattr(contention, "estimate_mi", old_estimate_mi)
    contention.main(["--repeats", "1", "--n", "50", "--conditions", "idle"])
    out = capsys.readouterr().out
    assert "note: this estimate_mi has no num_threads option" in out
    assert "| idle | default | 1 |" in out and "num_threads=1" not in out
    assert calls == [{"max_steps": 2000}, {"max_steps": 2000}]  # estimate_mi's own default


@pytest.mark.slow
def test_neighbours_are_stopped_on_error():
    with pytest.raises(RuntimeError, match="inside"):
        with contention.neighbours(("python", "torch"), threads=1, settle=0.0) as procs:
            assert len(procs) == 2 and all(p.is_alive() for p in procs)
            raise RuntimeError("inside")
    assert not any(p.is_alive() for p in procs)
    assert all(p.exitcode is not None for p in procs)


@pytest.mark.slow
def test_script_runs_and_prints_the_table(tmp_path: Path):
    out = tmp_path / "out"
    proc = run_recipe(
        "benchmarks/contention",
        tmp_path,
        *("--repeats", "1", "--n", "3000", "--max-steps", "5", "--conditions", "idle,python"),
        *("--settle", "0", "--out", str(out)),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert HEADER in lines
    settings = [s for s, _ in contention.thread_settings(1, contention.supports_num_threads())]
    for condition in ("idle", "python"):
        for setting in settings:
            assert any(line.startswith(f"| {condition} | {setting} | 1 |") for line in lines), (
                condition,
                setting,
            )
    assert any(
        line.startswith("with one CPU-bound neighbour the default's median is within 2x") for line in lines
    )
    record = json.loads((out / "contention.json").read_text())
    assert len(record["runs"]) == 2 * len(settings)
    assert all(r["seconds"] > 0 for r in record["runs"])
    assert record["target"]["pass"] in (True, False)
