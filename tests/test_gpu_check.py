"""recipes/benchmarks/gpu_check.py: without CUDA it measures nothing and says so (exit 0); its
``--cpu-dry-run`` runs the same code paths on CPU at tiny sizes: a recipe as its own program under
bf16 autocast (the run's Accelerator must report bf16), MIRegularizer's forward and backward
under bf16 autocast, and ``estimate_mi`` on two devices, printed as one markdown table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.benchmarks import gpu_check


def test_without_cuda_nothing_is_measured(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out.startswith("CUDA not available: nothing measured")


def test_regularizer_and_estimate_rows_on_cpu() -> None:
    reg = gpu_check.regularizer_row(torch.device("cpu"), steps=2)
    assert reg[-1] == "ok" and reg[2] == "bf16 autocast" and "nats" in reg[5]
    est = gpu_check.estimate_row("cpu", n=600, dim=2, max_steps=10)
    assert est[-1] == "ok" and "ratio cpu/cpu" in est[4]
    assert len(reg) == len(est) == len(gpu_check.COLUMNS)


@pytest.mark.slow
def test_cpu_dry_run_prints_one_table(tmp_path: Path, capsys) -> None:
    """One recipe (IB with the MINE regularizer on mnist5k) keeps the dry run short; every recipe
    runs on mnist5k in tests/test_mnist5k.py."""
    rc = gpu_check.main(["--cpu-dry-run", "--recipes", "ib", "--out", str(tmp_path), "--reg-steps", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(gpu_check.COLUMNS) + " |"
    assert len(table) == 2 + 3  # header, rule, ib, MIRegularizer, estimate_mi
    ib = table[2].split(" | ")
    assert ib[0] == "| ib" and ib[1] == "cpu" and ib[2] == "bf16" and ib[-1] == "ok |", table[2]
    assert all(line.endswith("| ok |") for line in table[2:]), table
    assert (tmp_path / "ib" / "results.json").is_file()
