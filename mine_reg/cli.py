"""``mine-reg``: estimate I(X; Y) in nats from arrays saved with NumPy.

    mine-reg estimate data.npz                      # arrays named x and y
    mine-reg estimate --x x.npy --y y.npy --json    # one JSON object on stdout

Estimator flags map one to one onto :func:`mine_reg.estimate_mi` keyword arguments; a flag left
out is not passed, so ``estimate_mi``'s own defaults apply. Bad input (a missing file or key,
mismatched sample counts, NaN, ...) prints ``mine-reg: error: <message>`` to stderr and exits
with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .estimate import CRITICS, PREPROCESS, estimate_mi
from .estimator import ESTIMATORS

__all__ = ["main", "build_parser"]

PROG = "mine-reg"

# argparse dest -> estimate_mi keyword (identical names); only flags the user gave are passed on.
_ESTIMATE_KWARGS = (
    "estimator",
    "critic",
    "marginals",
    "hidden",
    "embed_dim",
    "batch_size",
    "lr",
    "max_steps",
    "eval_every",
    "patience",
    "heldout",
    "preprocess",
    "ema_rate",
    "tau",
    "seed",
    "device",
    "progress",
)


# estimate_mi's defaults, shown in --help (read from its signature, never restated here).
_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(estimate_mi).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _default(name: str) -> str:
    value = _DEFAULTS.get(name)
    if isinstance(value, tuple | list):
        value = ",".join(str(v) for v in value)
    return f"default: {value}"


class InputError(Exception):
    """Bad input detected by the CLI itself (file or key missing, unreadable file, ...)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    """'128,128' -> (128, 128); '' -> () (no hidden layer)."""
    parts = [p.strip() for p in text.split(",")]
    if parts == [""]:
        return ()
    try:
        return tuple(_positive_int(p) for p in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 128,128, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Mutual information estimation with neural critics (MINE and relatives)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    est = sub.add_parser(
        "estimate",
        help="estimate I(X;Y) in nats from .npz / .npy arrays",
        description=(
            "Estimate I(X;Y) in nats, read out on held-out samples. Give either FILE.npz holding "
            "arrays named x and y, or both --x and --y (.npy files). Arrays are [N] or [N, d] with "
            "the same N."
        ),
    )
    est.add_argument("npz", nargs="?", metavar="FILE.npz", help=".npz file with arrays named 'x' and 'y'")
    est.add_argument(
        "--x", dest="x_path", metavar="X.npy", help=".npy file with the x samples, [N] or [N, dx]"
    )
    est.add_argument(
        "--y", dest="y_path", metavar="Y.npy", help=".npy file with the y samples, [N] or [N, dy]"
    )
    est.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a line")

    opts = est.add_argument_group(
        "estimator options", "passed to mine_reg.estimate_mi; when left out, its defaults apply"
    )
    s = argparse.SUPPRESS
    opts.add_argument("--estimator", choices=sorted(ESTIMATORS), default=s, help=_default("estimator"))
    opts.add_argument("--critic", choices=CRITICS, default=s, help=_default("critic"))
    opts.add_argument(
        "--marginals",
        choices=("all", "shuffle"),
        default=s,
        help="default: all for critics that score every pair of a batch at once, shuffle otherwise",
    )
    opts.add_argument(
        "--hidden",
        type=_int_list,
        default=s,
        metavar="W1,W2,...",
        help=f"hidden widths, {_default('hidden')}",
    )
    opts.add_argument("--embed-dim", type=_positive_int, default=s, metavar="E", help=_default("embed_dim"))
    opts.add_argument("--batch-size", type=_positive_int, default=s, metavar="B", help=_default("batch_size"))
    opts.add_argument("--lr", type=_positive_float, default=s, help=_default("lr"))
    opts.add_argument(
        "--max-steps", type=_positive_int, default=s, metavar="STEPS", help=_default("max_steps")
    )
    opts.add_argument(
        "--eval-every", type=_positive_int, default=s, metavar="STEPS", help=_default("eval_every")
    )
    opts.add_argument(
        "--patience",
        type=_positive_int,
        default=s,
        metavar="EVALS",
        help=f"evaluations without improvement before stopping, {_default('patience')}",
    )
    opts.add_argument(
        "--heldout",
        type=_finite_float,
        default=s,
        metavar="FRACTION",
        help=f"fraction held out, in (0, 1), {_default('heldout')}",
    )
    opts.add_argument("--preprocess", choices=PREPROCESS, default=s, help=_default("preprocess"))
    opts.add_argument(
        "--ema-rate", type=_finite_float, default=s, metavar="RATE", help=f"in (0, 1], {_default('ema_rate')}"
    )
    opts.add_argument("--tau", type=_positive_float, default=s, help=f"SMILE's clip, {_default('tau')}")
    opts.add_argument("--seed", type=int, default=s, help=_default("seed"))
    opts.add_argument("--device", default=s, help="e.g. cpu, cuda, cuda:1; default: cuda if available")
    opts.add_argument("--progress", action="store_true", default=s, help="progress bar on stderr")
    est.set_defaults(func=_cmd_estimate, parser=est)
    return parser


def _open(path: str) -> Any:
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {path}")
    if p.is_dir():
        raise InputError(f"expected a file, got a directory: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"could not read {path} as a NumPy .npy/.npz file: {e}") from None


def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = _open(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds a single array, not an .npz archive; for .npy files use --x and --y")
    with data:
        for key in ("x", "y"):
            if key not in data.files:
                present = ", ".join(repr(k) for k in data.files) or "none"
                raise InputError(f"{path} has no array named {key!r} (arrays present: {present})")
        try:
            return data["x"], data["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"could not read arrays from {path}: {e}") from None


def _load_npy(path: str) -> np.ndarray:
    data = _open(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        data.close()
        raise InputError(f"{path} is an .npz archive; pass it as the positional FILE.npz instead")
    return data


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise InputError(f"invalid --device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r} asks for CUDA, which is not available here")


def _json_safe(value: Any) -> Any:
    """NaN / Inf (e.g. the stderr of a single held-out batch) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _summary(d: dict[str, Any]) -> str:
    lo, hi = d["interval"]
    if math.isfinite(d["stderr"]):
        interval = f"95% interval {lo:.3f} to {hi:.3f}"
    else:
        interval = "no interval: a single held-out batch"
    n_train, n_monitor, n_heldout = d["n_train"], d["n_monitor"], d["n_heldout"]
    return (
        f"I(X;Y) = {d['mi']:.3f} nats ({interval}), N = {n_train + n_monitor + n_heldout} "
        f"[{n_train} train / {n_monitor} monitor / {n_heldout} held-out], "
        f"estimator {d['estimator']}, {d['seconds']:.1f} s"
    )


def _cmd_estimate(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.npz is not None and (args.x_path is not None or args.y_path is not None):
        parser.error("give either FILE.npz or --x and --y, not both")
    if args.npz is None and (args.x_path is None or args.y_path is None):
        if args.x_path is None and args.y_path is None:
            parser.error("give FILE.npz (arrays x and y) or both --x X.npy and --y Y.npy")
        parser.error(f"{'--y' if args.y_path is None else '--x'} is missing: --x and --y go together")

    kwargs = {name: getattr(args, name) for name in _ESTIMATE_KWARGS if hasattr(args, name)}
    start = time.perf_counter()
    if "device" in kwargs:
        _check_device(kwargs["device"])
    if args.npz is not None:
        x, y = _load_npz(args.npz)
    else:
        x, y = _load_npy(args.x_path), _load_npy(args.y_path)
    result = estimate_mi(x, y, **kwargs)
    out = result.to_dict()
    # Wall time of the whole estimate as the command sees it: loading the arrays plus estimate_mi.
    out["seconds"] = time.perf_counter() - start
    out["n"] = result.n_train + result.n_monitor + result.n_heldout
    out["units"] = "nats"

    if args.json:
        safe = {k: _json_safe(v) for k, v in out.items()}
        sys.stdout.write(json.dumps(safe, allow_nan=False) + "\n")
    else:
        sys.stdout.write(_summary(out) + "\n")
    sys.stdout.flush()
    return 0


def _error(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mine-reg`` and ``python -m mine_reg``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        sys.stderr.write(f"{e.code}\n")
        return 1
    except (InputError, ValueError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
