"""Time overhead of MIRegularizer on one training step of an MLP classifier.

The model is the information-bottleneck-sized MLP 784-1024-1024-256-10 (ReLU) trained with
cross-entropy and Adam on random data at batch 100. One step = forward, loss, zero_grad,
backward, optimizer step; with the regularizer the loss gains ``reg()`` (I(input; 256-d layer)
by MINE) and the critic's own Adam step runs inside the backward pass.

Variants, each on its own copy of the model (same initialisation):

- ``baseline``: no regularizer;
- ``concat``: ``MIRegularizer(model, x="input", z="fc3", estimator="mine", critic="concat")``
  with ``--critic-hidden`` (default: the regularizer's default widths), the configuration whose
  ratio is the headline number (target <= 1.15x, the median over ``--runs 4``);
- ``concat ..., general path``: the same configuration scored through the chain of autograd
  nodes that :mod:`mine_reg.fused_term` replaces by one (same values and gradients), to show
  what that node saves;
- ``separable``: the same with ``critic="separable"`` (all B² - B pairs as marginals);
- ``concat (256, 256)``: a wider concat critic, to show what width costs.

Timing: a warm-up of every variant first, then blocks of ``--block`` steps cycle through the
variants (so drifting machine load hits all of them alike); each step is timed on its own and
the table reports the median (and the 25-75% range) over ``--steps`` steps per variant.

Usage, from the repository root:

    python recipes/benchmarks/overhead.py                       # CPU, defaults
    python recipes/benchmarks/overhead.py --device cuda --steps 500
    python recipes/benchmarks/overhead.py --threads 1 --steps 60 --warmup 10
    python recipes/benchmarks/overhead.py --steps 20 --count-ops   # aten operators per step too
    python recipes/benchmarks/overhead.py --parts                  # the critic's pieces timed alone
    python recipes/benchmarks/overhead.py --phases                 # and each phase's median time
"""

from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mine_reg import MIRegularizer
from recipes.report import markdown_table

BATCH = 100
DEFAULT_HIDDEN: tuple[int, ...] = tuple(inspect.signature(MIRegularizer).parameters["hidden"].default)
TARGET_RATIO = 1.15


def make_model() -> nn.Sequential:
    """784-1024-1024-256-10 with ReLU; ``fc3`` is the 256-d layer."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(784, 1024),
            act1=nn.ReLU(),
            fc2=nn.Linear(1024, 1024),
            act2=nn.ReLU(),
            fc3=nn.Linear(1024, 256),
            act3=nn.ReLU(),
            head=nn.Linear(256, 10),
        )
    )


@dataclass
class Variant:
    name: str
    critic: str | None  # None: no regularizer
    hidden: tuple[int, ...] = ()
    general_path: bool = False  # score through the chain of autograd nodes, not the one-node term
    times: list[float] = field(default_factory=list)
    step: Callable[[int], dict[str, float]] | None = None
    reg: MIRegularizer | None = None


def build_step(variant: Variant, device: torch.device, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    torch.manual_seed(0)
    model = make_model().to(device)
    if variant.critic is not None:
        variant.reg = MIRegularizer(
            model,
            x="input",
            z="fc3",
            beta=1e-3,
            estimator="mine",
            critic=variant.critic,
            hidden=variant.hidden,
        )
        if variant.general_path:  # what the default configuration costs without mine_reg.fused_term
            variant.reg._fused_plan = lambda: None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    reg = variant.reg

    def step(i: int) -> dict[str, float]:
        """One training step; returns the seconds of each phase (CPU clocks: on CUDA the phases
        overlap, and only the whole step, timed by :func:`timed` around a synchronize, counts)."""
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        if reg is not None:
            loss = loss + reg()
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        return {"forward": t1 - t0, "reg()": t2 - t1, "backward": t3 - t2, "optimizer step": t4 - t3}

    variant.step = step


def timed(step: Callable[[int], object], i: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> list[Variant]:
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(BATCH, 784, generator=gen).to(device),
            torch.randint(0, 10, (BATCH,), generator=gen).to(device),
        )
        for _ in range(8)
    ]
    hidden = tuple(args.critic_hidden) if args.critic_hidden else DEFAULT_HIDDEN
    variants = [
        Variant("baseline", None),
        Variant(f"concat {hidden}", "concat", hidden),
        Variant(f"concat {hidden}, general path", "concat", hidden, general_path=True),
        Variant(f"separable {DEFAULT_HIDDEN}", "separable", DEFAULT_HIDDEN),
        Variant("concat (256, 256)", "concat", (256, 256)),
    ]
    for v in variants:
        build_step(v, device, batches)
    for v in variants:  # warm-up (builds the critics lazily, fills allocator caches)
        for i in range(args.warmup):
            v.step(i)
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        for v in variants:
            for i in range(done, done + n):
                v.times.append(timed(v.step, i, device))
        done += n
    return variants


def count_operators(variants: list[Variant], steps: int = 5) -> list[list[str]]:
    """Rows [variant, aten operators per step]: every operator dispatched (nested ones included)
    over ``steps`` steps under ``torch.profiler``, divided by ``steps``. Run after the warm-up."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    for v in variants:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                v.step(i)
        calls = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
        rows.append([v.name, f"{calls / steps:.0f}"])
    return rows


def phase_table(variants: list[Variant], steps: int, block: int) -> str:
    """Median milliseconds of each phase of a step (forward, ``reg()``, backward with the critic's
    step, the model's optimizer step) for every variant, blocks interleaved as in the main run."""
    phases: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    done = 0
    while done < steps:
        for v in variants:
            for i in range(done, done + block):
                for phase, seconds in v.step(i).items():
                    phases[v.name].setdefault(phase, []).append(seconds)
        done += block
    names = list(phases[variants[0].name])
    rows = [[v.name] + [f"{statistics.median(phases[v.name][p]) * 1e3:.2f}" for p in names] for v in variants]
    return markdown_table(["variant"] + [f"{p} (ms)" for p in names], rows, align="l" + "r" * len(names))


def parts_table(variant: Variant, device: torch.device, steps: int) -> str:
    """Median milliseconds of the default critic's pieces timed alone, in a loop of their own on
    the benchmark's shapes (x [100, 784], z [100, 256]): its MLP forward and backward
    (:mod:`mine_reg.fused_mlp`) and its Adam step, on the critic the ``variant`` has built."""
    from mine_reg.critics import _cyclic_derangement
    from mine_reg.fused_mlp import relu_mlp_backward, relu_mlp_forward

    reg = variant.reg
    params, _ = reg._fused
    gen = torch.Generator().manual_seed(0)
    x, z = (
        torch.randn(BATCH, 784, generator=gen).to(device),
        torch.randn(BATCH, 256, generator=gen).to(device),
    )
    index = _cyclic_derangement(BATCH, device, gen)
    with torch.no_grad():
        _, acts = relu_mlp_forward(params, x, z, index)
        d = torch.randn(2 * BATCH, 1, generator=gen).to(device)
        saved = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = reg.critic_optimizer
        pieces = {
            "critic MLP forward": lambda: relu_mlp_forward(params, x, z, index),
            "critic MLP backward": lambda: relu_mlp_backward(
                d, x, z, index, params[0], params[2::2], acts, False, True, True
            ),
            "critic Adam step": lambda: opt._adam_step(params, [p.grad for p in params]),
        }
        rows = []
        for name, piece in pieces.items():
            times = [timed(lambda _, piece=piece: piece(), i, device) for i in range(steps)]
            rows.append([name, f"{statistics.median(times) * 1e3:.2f}"])
        for p, v in zip(params, saved, strict=True):  # the weights as they were (Adam has moved on)
            p.copy_(v)
            p.grad = None
    return markdown_table(["piece, timed alone", "ms (median)"], rows, align="lr")


def quartiles(times: list[float]) -> tuple[float, float, float]:
    if len(times) < 2:
        return times[0], times[0], times[0]
    q1, q2, q3 = statistics.quantiles(times, n=4)
    return q1, q2, q3


def report(variants: list[Variant], args: argparse.Namespace) -> str:
    base = statistics.median(variants[0].times)
    cpu = platform.processor() or platform.machine()
    lines = [
        f"MLP 784-1024-1024-256-10, batch {BATCH}, Adam, cross-entropy; device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {cpu}; "
        f"median of {args.steps} steps per variant (after {args.warmup} warm-up), blocks of {args.block}",
        "",
    ]
    rows = []
    for v in variants:
        q1, med, q3 = quartiles(v.times)
        n_params = sum(p.numel() for p in v.reg.critic_parameters()) if v.reg is not None else 0
        ratio = med / base
        ok = "" if v.reg is None else ("yes" if ratio <= TARGET_RATIO else "no")
        rows.append(
            [
                v.name,
                f"{n_params:,}",
                f"{med * 1e3:.2f}",
                f"{q1 * 1e3:.2f}-{q3 * 1e3:.2f}",
                f"{ratio:.3f}",
                ok,
            ]
        )
    columns = ["variant", "critic params", "ms/step (median)", "25-75% (ms)", "ratio", f"<= {TARGET_RATIO}x"]
    lines.append(markdown_table(columns, rows, align="lrrrrc"))
    return "\n".join(lines)


def parse_hidden(text: str) -> list[int]:
    return [int(w) for w in text.replace("(", "").replace(")", "").split(",") if w.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant first (default 20)")
    parser.add_argument("--block", type=int, default=10, help="steps per variant per round (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument(
        "--critic-hidden",
        type=parse_hidden,
        default=None,
        help=f"concat critic hidden widths, e.g. 256,256 (default: the regularizer's {DEFAULT_HIDDEN})",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--runs", type=int, default=1, help="whole measurements, each on fresh models (default 1)"
    )
    parser.add_argument(
        "--count-ops", action="store_true", help="also print aten operators per step (torch.profiler)"
    )
    parser.add_argument(
        "--phases", action="store_true", help="also print each phase of a step, timed on its own"
    )
    parser.add_argument(
        "--parts", action="store_true", help="also time the default critic's MLP and Adam step alone"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.block < 1 or args.runs < 1:
        parser.error("--steps, --block and --runs must be >= 1, --warmup >= 0")
    ratios = []
    for r in range(args.runs):
        variants = run(args)
        if args.runs > 1:
            print(f"\nrun {r + 1} of {args.runs}")
        print(report(variants, args))
        if args.count_ops and r == 0:
            print("\n" + markdown_table(["variant", "aten operators per step"], count_operators(variants)))
        if args.phases and r == 0:
            print("\n" + phase_table(variants, args.steps, args.block))
        if args.parts and r == 0:
            print("\n" + parts_table(variants[1], torch.device(args.device), args.steps))
        ratios.append(statistics.median(variants[1].times) / statistics.median(variants[0].times))
    if args.runs > 1:
        median = statistics.median(ratios)
        verdict = "PASS" if median <= TARGET_RATIO else "FAIL"
        print(
            f"\n{variants[1].name}{' (default)' if variants[1].hidden == DEFAULT_HIDDEN else ''} ratio per "
            f"run: {', '.join(f'{q:.3f}' for q in ratios)}; "
            f"median {median:.3f} (target <= {TARGET_RATIO}: {verdict})"
        )


if __name__ == "__main__":
    main()
