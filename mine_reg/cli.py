"""``mine-reg``: estimate I(X; Y) in nats from arrays saved with NumPy.

    mine-reg estimate data.npz                      # arrays named x and y
    mine-reg estimate --x x.npy --y y.npy --json    # one JSON object on stdout

The estimator flags are generated from :class:`mine_reg.estimate.EstimateOptions`: one flag per
field, passed on only when given, so ``estimate_mi``'s own defaults apply. Bad input prints
``mine-reg: error: <message>`` on one line to stderr and exits with status 2; warnings about the
estimate go to stderr as ``mine-reg: warning: <message>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
import typing
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import parse_value
from .estimate import EstimateOptions, EstimateWarning, estimate_mi

__all__ = ["main", "build_parser"]

PROG = "mine-reg"


class InputError(Exception):
    """Bad input detected by the CLI itself (file or key missing, unreadable file, ...)."""


def _option_type(name: str, hint: Any) -> Any:
    """argparse ``type`` for a field of :class:`EstimateOptions`: :func:`parse_value` with a
    message naming the expected form."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    form = (
        "comma-separated positive integers such as 128,128"
        if typing.get_origin(hint) is tuple
        else "a number"
    )

    def convert(text: str) -> Any:
        try:
            return parse_value(text, hint)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}") from None

    convert.__name__ = name
    return convert


def _add_option_flags(group: argparse._ArgumentGroup) -> None:
    hints = typing.get_type_hints(EstimateOptions)
    for f in dataclasses.fields(EstimateOptions):
        flag, meta = f"--{f.name.replace('_', '-')}", f.metadata
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        help_text = f"{meta.get('help', '')} (default: {default})"
        if hints[f.name] is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        kind = str if f.name == "critic" else _option_type(f.name, hints[f.name])
        group.add_argument(
            flag, type=kind, choices=meta.get("choices"), default=argparse.SUPPRESS, help=help_text
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Mutual information estimation with neural critics."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    est = sub.add_parser("estimate", help="estimate I(X;Y) in nats from .npz / .npy arrays")
    est.add_argument("npz", nargs="?", metavar="FILE.npz", help=".npz file with arrays named 'x' and 'y'")
    est.add_argument(
        "--x", dest="x_path", metavar="X.npy", help=".npy file with the x samples, [N] or [N, dx]"
    )
    est.add_argument(
        "--y", dest="y_path", metavar="Y.npy", help=".npy file with the y samples, [N] or [N, dy]"
    )
    est.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a line")
    est.add_argument("--plot", metavar="FILE.png", help="also draw the critic's training and monitor curve")
    _add_option_flags(est.add_argument_group("estimator options (mine_reg.EstimateOptions)"))
    est.set_defaults(func=_cmd_estimate, parser=est)
    return parser


def _load(path: str, want_npz: bool) -> Any:
    """An .npy array, or the (x, y) arrays of an .npz archive; InputError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"file not found: {path}" if not p.exists() else f"expected a file, got a directory: {path}"
        )
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"could not read {path} as a NumPy .npy/.npz file: {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile) != want_npz:
        hint = (
            "pass it as the positional FILE.npz instead"
            if want_npz is False
            else "for .npy files use --x and --y"
        )
        kind = "is an .npz archive" if not want_npz else "holds a single array, not an .npz archive"
        raise InputError(f"{path} {kind}; {hint}")
    if not want_npz:
        return data
    with data:
        for key in ("x", "y"):
            if key not in data.files:
                present = ", ".join(repr(k) for k in data.files) or "none"
                raise InputError(f"{path} has no array named {key!r} (arrays present: {present})")
        return data["x"], data["y"]


def _summary(d: dict[str, Any]) -> str:
    lo, hi = d["interval"]
    interval = f"95% interval {lo:.3f} to {hi:.3f}" if d["n_batches"] else "counted: " + d["method"]
    parts = f"[{d['n_train']} train / {d['n_monitor']} monitor / {d['n_heldout']} held-out]"
    tail = f"estimator {d['estimator']}, {d['seconds']:.1f} s"
    return f"I(X;Y) = {d['mi']:.3f} nats ({interval}), N = {d['n']} {parts}, {tail}"


def _cmd_estimate(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.npz is not None and (args.x_path is not None or args.y_path is not None):
        parser.error("give either FILE.npz or --x and --y, not both")
    if args.npz is None and (args.x_path is None or args.y_path is None):
        if args.x_path is None and args.y_path is None:
            parser.error("give FILE.npz (arrays x and y) or both --x X.npy and --y Y.npy")
        parser.error(f"{'--y' if args.y_path is None else '--x'} is missing: --x and --y go together")
    options = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(EstimateOptions) if hasattr(args, f.name)
    }
    start = time.perf_counter()
    EstimateOptions(**options)  # a bad value is reported before any file is read
    x, y = (
        _load(args.npz, True)
        if args.npz is not None
        else (_load(args.x_path, False), _load(args.y_path, False))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)  # printed below, one line each
        result = estimate_mi(x, y, **options)
    out = {**result.to_dict(), "seconds": time.perf_counter() - start, "units": "nats"}
    out["n"] = result.n_train + result.n_monitor + result.n_heldout
    for message in result.warnings:
        sys.stderr.write(f"{PROG}: warning: {message}\n")
    if args.plot is not None:
        try:
            result.plot(args.plot)
        except ImportError as err:
            parser.error(f"--plot: {err}")
    finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
    sys.stdout.write((json.dumps(finite, allow_nan=False) if args.json else _summary(out)) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mine-reg`` and ``python -m mine_reg``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        sys.stderr.write(f"{e.code}\n")
        return 1
    except (InputError, ValueError, TypeError) as e:
        sys.stderr.write(f"{PROG}: error: {' '.join(str(e).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
