"""mine_reg.config: YAML files with a ``base:`` file, command-line overrides, and the errors for
a missing base, an inheritance cycle and unknown keys; and the repository's configs: every arm
of an experiment shares its base's budget, key for key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import yaml

from mine_reg.config import load_config, read_config_file
from recipes.common import ROOT


@dataclass
class Config:
    method: str = "baseline"
    beta: float = 0.0
    steps: int = 100
    dims: list[int] = field(default_factory=lambda: [2])
    out: str = "outputs/x"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_base_supplies_what_the_file_does_not_state(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "method: baseline\nsteps: 500\ndims: [2, 20]\n")
    child = _write(tmp_path, "mine.yaml", "base: base.yaml\nmethod: mine\nbeta: 1.0\n")
    cfg = load_config(Config, ["--config", str(child)])
    assert asdict(cfg) == {"method": "mine", "beta": 1.0, "steps": 500, "dims": [2, 20], "out": "outputs/x"}
    # the command line still wins over both files
    cfg = load_config(Config, ["--config", str(child), "--steps", "7", "--method", "other"])
    assert (cfg.method, cfg.steps, cfg.beta) == ("other", 7, 1.0)


def test_bases_chain_and_resolve_relative_to_each_file(tmp_path: Path) -> None:
    _write(tmp_path, "shared/root.yaml", "steps: 10\nbeta: 0.5\nout: a\n")
    _write(tmp_path, "shared/middle.yaml", "base: root.yaml\nsteps: 20\n")
    leaf = _write(tmp_path, "arms/leaf.yaml", "base: ../shared/middle.yaml\nout: b\n")
    assert read_config_file(leaf) == {"steps": 20, "beta": 0.5, "out": "b"}


def test_a_missing_base_names_both_files(tmp_path: Path) -> None:
    child = _write(tmp_path, "mine.yaml", "base: nowhere.yaml\nmethod: mine\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml \(the base of .*mine\.yaml\)"):
        read_config_file(child)


def test_a_cycle_is_an_error_naming_the_chain(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "base: b.yaml\nsteps: 1\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\nsteps: 2\n")
    with pytest.raises(ValueError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        read_config_file(tmp_path / "a.yaml")
    _write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        read_config_file(tmp_path / "self.yaml")


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mapping"):
        read_config_file(_write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="'base' must name a YAML file"):
        read_config_file(_write(tmp_path, "num.yaml", "base: 3\n"))
    assert read_config_file(_write(tmp_path, "empty.yaml", "")) == {}


def test_load_config_reports_base_problems_as_usage_errors(tmp_path: Path, capsys) -> None:
    child = _write(tmp_path, "mine.yaml", "base: nowhere.yaml\n")
    with pytest.raises(SystemExit) as exit_info:
        load_config(Config, ["--config", str(child)])
    assert exit_info.value.code == 2
    assert "config file not found" in capsys.readouterr().err
    # an unknown key in a base is reported too, with the known fields
    _write(tmp_path, "bad_base.yaml", "stpes: 3\n")
    child = _write(tmp_path, "child.yaml", "base: bad_base.yaml\n")
    with pytest.raises(SystemExit):
        load_config(Config, ["--config", str(child)])
    err = capsys.readouterr().err
    assert "unknown keys ['stpes']" in err and "'steps'" in err


ARMS = {
    "ib_base.yaml": ["ib_baseline.yaml", "ib_mine.yaml", "ib_vib.yaml"],
    "ali_base.yaml": ["ali.yaml", "ali_mine.yaml"],
    "gan_codes_grid25_base.yaml": ["gan_codes_grid25.yaml", "gan_codes_grid25_mine.yaml"],
    "gan_codes_stacked_base.yaml": ["gan_codes_stacked.yaml", "gan_codes_stacked_mine.yaml"],
}
BUDGET = {"epochs", "steps", "batch_size", "lr", "lr_g", "lr_d", "seed", "dataset"}


@pytest.mark.parametrize("base", sorted(ARMS))
def test_every_arm_keeps_its_base_budget(base: str) -> None:
    """Equal budgets by construction: each arm inherits its experiment's base and overrides none
    of the base's keys except what selects the method and its MI term."""
    shared = read_config_file(ROOT / "configs" / base)
    assert BUDGET & set(shared), shared
    for arm in ARMS[base]:
        assert yaml.safe_load((ROOT / "configs" / arm).read_text())["base"] == base, arm
        values = read_config_file(ROOT / "configs" / arm)
        assert {k: values[k] for k in shared} == shared, arm
        assert not BUDGET & (set(values) - set(shared)), arm
