"""GPU readiness in one command: every digit recipe, the regularizer and ``estimate_mi`` on CUDA with
bf16 autocast, printed as one markdown table.

    python recipes/benchmarks/gpu_check.py                  # on a CUDA machine (a few minutes)
    python recipes/benchmarks/gpu_check.py --cpu-dry-run    # the same code paths on CPU, tiny sizes

Rows:

- ``ib`` / ``ali`` / ``gan_codes_stacked``: the MINE arm of each recipe on ``mnist5k`` (28x28,
  the paper's widths) for a short budget, as its own program with
  ``ACCELERATE_MIXED_PRECISION=bf16`` (the recipes' ``Accelerator`` then runs the prepared models
  under bf16 autocast); the row gives the run's wall time, its main metric and the device and
  precision the run's ``Accelerator`` reported. ALI and the stacked GAN need the mnist5k digit
  classifier: the cached one (``outputs/classifier_mnist5k_seed0.pt``, trained on first use, about
  a minute on CPU) or ``--classifier PATH``; the dry run saves an untrained stand-in, so its mode
  counts and reconstruction accuracy mean nothing.
- ``MIRegularizer``: forward and backward of a small MLP (784-256-64-10) with
  ``MIRegularizer(model, x="input", z="hidden", mode="minimize")`` under bf16 autocast, Adam on
  the model, for ``--reg-steps`` steps: milliseconds per step and the last MI estimate (nats),
  checked finite, with the critic's parameters checked to have moved.
- ``estimate_mi``: the same correlated-Gaussian data (``--mi-n`` pairs of ``--mi-dim``
  dimensions, true MI in the row) estimated with ``device="cuda"`` and ``device="cpu"`` at the
  same settings; the row gives both times and their ratio (CPU / GPU). In the dry run both sides
  run on the CPU.

Without CUDA (and without ``--cpu-dry-run``) it prints "CUDA not available: nothing measured" and
exits 0. Any failed row makes the exit status 1. Outputs go under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mine_reg import MIRegularizer, estimate_mi
from mine_reg.synthetic import correlated_gaussian, rho_for_mi
from recipes.common import ROOT, recipe_env
from recipes.report import fmt, markdown_table

COLUMNS = ["check", "device", "precision", "budget", "seconds", "result", "status"]

# each recipe's MINE arm on mnist5k: (config, GPU budget, dry-run budget, metric shown)
RECIPES = {
    "ib": (
        "configs/ib_mine.yaml",
        ["--epochs", "2", "--mi-every", "2", "--mi-steps", "200"],
        ["--epochs", "1", "--hidden", "32", "--k", "4", "--batch-size", "500", "--mi-steps", "5",
         "--mi-samples", "200", "--mi-draws", "1"],
        "test_error",
    ),
    "ali": (
        "configs/ali_mine.yaml",
        ["--epochs", "2", "--eval-every", "2", "--mi-steps", "200"],
        ["--epochs", "1", "--hidden", "16", "--z-dim", "4", "--batch-size", "1000", "--mi-steps", "5"],
        "recon_error",
    ),
    "gan_codes_stacked": (
        "configs/gan_codes_stacked_mine.yaml",
        ["--steps", "300", "--eval-every", "0", "--ckpt-every", "0"],
        ["--steps", "2", "--batch-size", "16", "--conv-width", "4", "--eval-every", "0",
         "--ckpt-every", "0", "--eval-samples", "100", "--mi-samples", "100", "--mi-steps", "5"],
        "modes",
    ),
}  # fmt: skip

# runs the recipe in a child process and reports what its Accelerator was set to
CHILD = """
import json, sys
from accelerate.state import AcceleratorState
from recipes.common import call
call(sys.argv[1], sys.argv[2:])
state = AcceleratorState()
print("ACCELERATOR " + json.dumps({"device": str(state.device), "precision": str(state.mixed_precision)}))
"""


def run_recipe_row(recipe: str, dry: bool, out: Path, classifier: str | None) -> list[str]:
    """One recipe for its short budget under bf16 autocast, as its own program."""
    config, gpu_budget, dry_budget, metric = RECIPES[recipe]
    budget = dry_budget if dry else gpu_budget
    argv = ["--config", config, "--dataset", "mnist5k", *budget, "--out", str(out / recipe)]
    if classifier and recipe != "ib":
        argv += ["--classifier", classifier]
    env = recipe_env(ACCELERATE_MIXED_PRECISION="bf16")
    env.setdefault("WANDB_MODE", "disabled")
    if dry:
        env.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, recipe, *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    budget_text = " ".join(budget[:2])
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return [recipe, "?", "bf16", budget_text, f"{seconds:.1f}", tail[0][:120], "FAILED"]
    state = json.loads(proc.stdout.split("ACCELERATOR ", 1)[1].splitlines()[0])
    results = json.loads((out / recipe / "results.json").read_text())
    value = results[metric]
    shown = f"{metric} {value}" if isinstance(value, int) else f"{metric} {value:.4f}"
    ok = state["precision"] == "bf16" and (dry or state["device"].startswith("cuda"))
    ok = ok and (isinstance(value, int) or math.isfinite(value))
    return [
        recipe,
        state["device"],
        state["precision"],
        budget_text,
        f"{seconds:.1f}",
        shown,
        "ok" if ok else "FAILED",
    ]


def regularizer_row(device: torch.device, steps: int) -> list[str]:
    """MIRegularizer's forward and backward on a small MLP under bf16 autocast on ``device``."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(784, 256))
    model.add_module("act", nn.ReLU())
    model.add_module("hidden", nn.Linear(256, 64))
    model.add_module("head", nn.Sequential(nn.ReLU(), nn.Linear(64, 10)))
    model = model.to(device)
    reg = MIRegularizer(model, x="input", z="hidden", beta=1e-3, mode="minimize", seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(128, 784, generator=gen).to(device), torch.randint(10, (128,), generator=gen).to(device)
    critic_before: list[torch.Tensor] | None = None
    loss = torch.tensor(math.nan)
    times = []
    for step in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y) + reg()
        if critic_before is None:  # the critic is built on the first call
            critic_before = [p.detach().clone() for p in reg.estimator.parameters()]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0 or steps == 1:
            times.append(time.perf_counter() - tick)
    mi = reg.metrics().get("mi", math.nan)
    moved = critic_before is not None and any(
        not torch.equal(a, b.detach()) for a, b in zip(critic_before, reg.estimator.parameters(), strict=True)
    )
    grads = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    ok = math.isfinite(float(loss.detach())) and math.isfinite(mi) and moved and grads
    ms = 1000 * sorted(times)[len(times) // 2]
    return [
        "MIRegularizer fwd+bwd (784-256-64-10, batch 128)", str(device), "bf16 autocast", f"{steps} steps",
        f"{ms:.2f} ms/step (median)", f"I(X;Z) {mi:.3f} nats", "ok" if ok else "FAILED",
    ]  # fmt: skip


def estimate_row(fast: str, n: int, dim: int, max_steps: int) -> list[str]:
    """``estimate_mi`` on the same data on ``fast`` (cuda, or cpu in the dry run) and on the CPU."""
    truth = dim / 4  # nats
    x, y = correlated_gaussian(n, dim, rho_for_mi(truth, dim), seed=0)
    found = []
    for device in (fast, "cpu"):
        if device == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        result = estimate_mi(x, y, device=device, seed=0, max_steps=max_steps)
        if device == "cuda":
            torch.cuda.synchronize()
        found.append((time.perf_counter() - tick, result.mi))
    (t_fast, mi_fast), (t_cpu, mi_cpu) = found
    ok = math.isfinite(mi_fast) and math.isfinite(mi_cpu)
    return [
        f"estimate_mi {fast} vs cpu (n {n}, d {dim}, true {truth:.2f} nats)",
        f"{fast} / cpu", "float32", f"max_steps {max_steps}",
        f"{t_fast:.1f} / {t_cpu:.1f} (ratio cpu/{fast} {t_cpu / t_fast:.2f}x)",
        f"{fmt(mi_fast)} / {fmt(mi_cpu)} nats", "ok" if ok else "FAILED",
    ]  # fmt: skip


def ensure_classifier(dry: bool, out: Path, given: str | None) -> str | None:
    """The classifier path to pass to ALI and the stacked GAN: ``given``, an untrained stand-in
    (dry run), or None (the recipes' cache, trained on first use)."""
    if given or not dry:
        return given
    from recipes.digits import DigitClassifier, classifier_arch, save_classifier

    path = out / "untrained_classifier_mnist5k.pt"
    torch.manual_seed(0)
    save_classifier(DigitClassifier(**classifier_arch(28)), path, "mnist5k")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same code paths on CPU at tiny sizes")
    parser.add_argument("--out", default="outputs/gpu_check")
    parser.add_argument("--classifier", default=None, help="mnist5k classifier for ALI and the stacked GAN")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of the recipes")
    parser.add_argument("--reg-steps", type=int, default=None, help="default 200 (GPU), 3 (dry run)")
    parser.add_argument("--mi-n", type=int, default=None, help="default 50000 (GPU), 600 (dry run)")
    parser.add_argument("--mi-dim", type=int, default=None, help="default 20 (GPU), 2 (dry run)")
    parser.add_argument("--mi-steps", type=int, default=None, help="default 2000 (GPU), 20 (dry run)")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print(
            "CUDA not available: nothing measured (run with --cpu-dry-run to exercise the code paths on CPU)"
        )
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pick = lambda value, gpu, cpu: value if value is not None else (cpu if dry else gpu)  # noqa: E731
    device = torch.device("cpu" if dry else "cuda")
    where = "CPU dry run (tiny sizes; timings say nothing)" if dry else torch.cuda.get_device_name(0)
    print(f"gpu_check: {where}; torch {torch.__version__}")

    classifier = ensure_classifier(dry, out, args.classifier)
    rows = [run_recipe_row(r, dry, out, classifier) for r in args.recipes.split(",") if r]
    rows.append(regularizer_row(device, pick(args.reg_steps, 200, 3)))
    rows.append(
        estimate_row(
            device.type, pick(args.mi_n, 50_000, 600), pick(args.mi_dim, 20, 2), pick(args.mi_steps, 2000, 20)
        )
    )
    print(markdown_table(COLUMNS, rows, align="llllrll"))
    failed = [row[0] for row in rows if row[-1] != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
