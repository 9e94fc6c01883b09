"""The estimator benchmark's case lists: sizes, unique seeds, samplers that match their declared
dims and truths, and the command-line selection of parts and families. No estimator runs here."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "benchmarks" / "estimators.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_estimators", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_suite_keeps_the_original_grid_and_adds_every_new_family(bench):
    cases = bench.suite_cases(quick=False, base_seed=0)
    assert len(cases) <= 100
    original = [c for c in cases if c.family in bench.FAMILIES]
    assert len(original) == len(bench.FAMILIES) * len(bench.SUITE_DIMS) == 40
    assert {c.family for c in cases} == {*bench.FAMILIES, *bench.NEW_FAMILIES}
    assert len({c.key for c in cases}) == len(cases) and len({c.seed for c in cases}) == len(cases)
    quick = bench.suite_cases(quick=True, base_seed=0)
    assert {c.family for c in quick} == {*bench.FAMILIES, *bench.NEW_FAMILIES}
    assert len(quick) == len(bench.FAMILIES) + len(bench.NEW_FAMILIES)


def test_every_case_samples_its_declared_shapes(bench):
    for case in bench.suite_cases(quick=False, base_seed=0):
        x, y = case.sample(64)
        assert x.shape == (64, case.dim_x) and y.shape == (64, case.dim_y), case.key
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), case.key
        assert math.isfinite(case.truth) and case.truth >= 0.0, case.key
        again = case.sample(64)
        assert np.array_equal(x, again[0]) and np.array_equal(y, again[1]), case.key


def test_families_filter_and_groups(bench):
    only = bench.suite_cases(quick=False, base_seed=0, families=["spiral", "t3"])
    assert {c.family for c in only} == {"spiral", "t3"}
    full = {c.key: c.seed for c in bench.suite_cases(quick=False, base_seed=0)}
    assert all(full[c.key] == c.seed for c in only)  # filtering keeps each case's seed


def test_check_parts_truths(bench):
    indep = bench.independent_checks()
    assert {c.kind for c in indep} == {"continuous", "tied", "discrete", "mixed"}
    for check in indep:
        x, y = check.sampler(200, 1)
        assert x.shape[0] == y.shape[0] == 200 and check.truth == 0.0
        assert f"{x.shape[1]}+{y.shape[1]}" == check.dims, check.name
    det = bench.deterministic_checks(quick=False)
    scored = [c for c in det if c.scored]
    assert max(c.truth for c in scored) == pytest.approx(bench.DETERMINISTIC_MAX_TRUTH)
    assert {int(c.dims.split("+")[0]) for c in scored} == {1, 2, 3, 5}
    for check in det:
        x, y = check.sampler(20_000, 3)
        dim = x.shape[1]
        # y - x is the noise: its variance s² fixes the truth d/2·log(1 + 1/s²) to within ~2%
        s2 = float(np.var(y - x))
        assert 0.5 * dim * math.log1p(1.0 / s2) == pytest.approx(check.truth, rel=0.02), check.name


def test_cli_rejects_unknown_parts_and_families(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--part", "suite,nonsense"])
    assert "unknown part 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--part", "suite", "--families", "spirals"])
    assert "unknown families 'spirals'" in capsys.readouterr().err


def test_estimate_speed_refuses_a_path_that_is_not_a_checkout(tmp_path):
    from recipes.benchmarks import estimate_speed

    with pytest.raises(SystemExit, match="is not a mine_reg checkout"):
        estimate_speed.main(["--checkouts", f"{tmp_path},."])
