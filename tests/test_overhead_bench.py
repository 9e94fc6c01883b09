"""recipes/benchmarks/overhead.py at a tiny budget: the tables it prints, and that the
regularized variants really run the regularizer (more operators, time in reg())."""

from __future__ import annotations

from recipes.benchmarks import overhead


def _rows(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_overhead_prints_operator_counts_and_phases(capsys):
    overhead.main(["--steps", "2", "--warmup", "1", "--block", "1", "--count-ops", "--phases", "--parts"])
    out = capsys.readouterr().out
    ops = _rows(out, "variant")  # the first table: ms/step
    assert set(ops) == {
        "baseline",
        "concat (128, 128)",
        "concat (128, 128), general path",
        "separable (128, 128)",
        "concat (256, 256)",
    }
    counts = {k: int(v[0]) for k, v in _rows(out[out.index("aten operators") - 20 :], "variant").items()}
    assert all(counts[k] > counts["baseline"] for k in counts if k != "baseline"), counts
    # the default configuration takes the one-node term: fewer operators than its general path
    assert counts["concat (128, 128)"] < counts["concat (128, 128), general path"], counts
    phases = _rows(out[out.index("reg() (ms)") - 40 :], "variant")
    # the baseline has no regularizer: its reg() phase is an empty branch, every other one builds
    # and scores a critic (over a millisecond on these CPUs, against microseconds)
    assert all(float(phases[k][1]) > float(phases["baseline"][1]) for k in phases if k != "baseline"), phases
    parts = _rows(out[out.index("piece, timed alone") - 2 :], "piece, timed alone")
    assert set(parts) == {"critic MLP forward", "critic MLP backward", "critic Adam step"}
    assert all(float(v[0]) > 0 for v in parts.values()), parts


def test_the_runs_summary_calls_only_the_default_widths_the_default(capsys):
    overhead.main(
        ["--steps", "1", "--warmup", "0", "--block", "1", "--runs", "2", "--critic-hidden", "16,16"]
    )
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("concat (16, 16) ratio per run: ") and "(default)" not in summary
    overhead.main(["--steps", "1", "--warmup", "0", "--block", "1", "--runs", "2"])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"concat {overhead.DEFAULT_HIDDEN} (default) ratio per run: ")
