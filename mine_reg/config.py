"""Recipe configs: a dataclass, filled from a YAML file, overridable from the command line.

@dataclass
class Config:
    seed: int = 0
    dims: list[int] = field(default_factory=lambda: [2, 20])

cfg = load_config(Config)          # --config configs/x.yaml --seed 3 --dims 5,10
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

__all__ = ["load_config"]

T = TypeVar("T")


def _parse(text: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse(text, args[0])
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(hint)[:1] or (str,)
        values = [_parse(v, item) for v in text.split(",") if v != ""]
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


def load_config(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Build ``cls`` (a dataclass) from defaults < ``--config FILE.yaml`` < ``--field value`` flags.

    Unknown keys in the YAML file or on the command line are errors that list the known fields.
    Lists are given on the command line as comma-separated values.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help="YAML file with field values")
    for name in fields:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE")
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            parser.error(f"config file not found: {args.config}")
        loaded = yaml.safe_load(args.config.read_text()) or {}
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            parser.error(f"unknown keys {unknown} in {args.config}; known: {sorted(fields)}")
        values.update(loaded)
    for name in fields:
        text = getattr(args, name)
        if text is not None:
            try:
                values[name] = _parse(text, hints[name])
            except ValueError as err:
                parser.error(f"--{name.replace('_', '-')}: {err}")
    return cls(**values)
