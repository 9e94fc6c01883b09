"""Recipe configs: a dataclass, filled from a YAML file, overridable from the command line.

@dataclass
class Config:
    seed: int = 0
    dims: list[int] = field(default_factory=lambda: [2, 20])

cfg = load_config(Config)          # --config configs/x.yaml --seed 3 --dims 5,10

A YAML file may start from another one: ``base: other.yaml`` (a path relative to the file's own
folder) takes every value of that file first, and the keys written beside ``base`` override them.
Bases may have bases of their own. Two configs with the same base therefore share everything
they do not state, e.g. the budget of a baseline and of its MINE arm:

    # configs/gan_codes_grid25_mine.yaml
    base: gan_codes_grid25_base.yaml
    method: mine
    out: outputs/gan_codes_grid25_mine
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["load_config", "read_config_file", "parse_value", "BASE_KEY"]

T = TypeVar("T")

BASE_KEY = "base"  # the YAML key naming the file a config inherits from


def parse_value(text: str, hint: Any) -> Any:
    """A command-line string as a value of the annotated type ``hint`` (int, float, str, bool,
    lists and tuples as comma-separated values, optionals with "none"); ValueError if it is not."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return parse_value(text, args[0])
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(hint)[:1] or (str,)
        values = [parse_value(v, item) for v in text.split(",") if v != ""]
        return tuple(values) if origin is tuple else values
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if hint in (int, float, str):
        return hint(text)
    return yaml.safe_load(text)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The values of a YAML config file, merged over those of its ``base:`` file (recursively).

    Keys in a file override the same keys of its base; the ``base`` key itself is not returned.
    Raises ``FileNotFoundError`` for a missing file (naming the file whose ``base:`` points to it)
    and ``ValueError`` for an inheritance cycle, a ``base`` that is not a file name, or a file
    that does not hold a mapping of keys to values.
    """
    return _read(Path(path), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ValueError(f"config inheritance cycle: {cycle}")
    if not path.is_file():
        named_by = f" (the base of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config file not found: {path}{named_by}")
    loaded = yaml.safe_load(path.read_text())
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values, got a {type(loaded).__name__}")
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: '{BASE_KEY}' must name a YAML file, got {base!r}")
    return {**_read(path.parent / base, (*chain, path.resolve())), **loaded}


def load_config(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Build ``cls`` (a dataclass) from defaults < ``--config FILE.yaml`` (after its ``base:``
    files, see :func:`read_config_file`) < ``--field value`` flags.

    Unknown keys in the YAML files or on the command line are errors that list the known fields.
    Lists are given on the command line as comma-separated values.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help="YAML file of field values (may name a base: file)")
    for name in fields:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE")
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = read_config_file(args.config)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            parser.error(f"unknown keys {unknown} in {args.config} or its bases; known: {sorted(fields)}")
        values.update(loaded)
    for name in fields:
        text = getattr(args, name)
        if text is not None:
            try:
                values[name] = parse_value(text, hints[name])
            except ValueError as err:
                parser.error(f"--{name.replace('_', '-')}: {err}")
    return cls(**values)
