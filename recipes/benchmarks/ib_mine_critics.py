"""What a DV critic needs to minimize MI: the IB recipe's MINE arm under several critic settings.

Every arm is ``recipes/ib.py --config configs/ib_mine.yaml --estimator mine --dataset digits``
(8x8 digits, 60 epochs, beta ``--beta``, critic lr 1e-3) with one change to the regularizer, next to the
baseline (beta 0). Printed per arm: the encoder's exact lower and upper bounds on I(X; Z) over the
test digits and the test error, mean over ``--seeds``. A critic setting that lets MINE minimize
should lower both bounds against the baseline.

    python recipes/benchmarks/ib_mine_critics.py [--seeds 0] [--beta 1e-2] [--arms raw,standardized]
    python recipes/benchmarks/ib_mine_critics.py --dataset mnist5k --arms baseline,per_unit_lead2 --epochs 40

``--dataset`` picks the data (digits by default); any other option goes to every run.

Arms:
- ``raw``: the concat critic on x and z as they are (``standardize=False``);
- ``standardized``: the library's default, batch-standardized x and z;
- ``noisy``: ELU 512-512 on raw [x, z] with input noise 0.3 and hidden-layer noise 0.5 (the
  noise-regularized critic of public MINE-IB code), raw inputs;
- ``separable``: the separable critic with all B² - B marginal pairs, raw inputs;
- ``infonce``: the InfoNCE bound with the separable critic, raw inputs;
- ``z_noise_2``: the concat critic reading z + N(0, 2²), raw inputs;
- ``kernel``: a Gaussian-kernel critic T = -1/2 ||(z - m(x)) / s||² (an MLP m, a learned per-unit
  scale s; all B² - B marginal pairs) on batch-standardized x and z: a family that holds the
  exact conditional's log density and cannot be escaped by moving z away from trained regions;
- ``kernel_infonce``: the same critic in the InfoNCE bound (each row normalized on its own);
- ``kernel_raw``: the kernel critic on raw x and z;
- ``per_unit``: ``estimator="mine-per-unit"``, one DV bound per unit of z (a
  :class:`mine_reg.critics.UnitCritic`, all B² - B marginal pairs), summed: an estimate of
  sum_k I(X; Z_k), an upper bound on I(X; Z) for this encoder's independent noise per unit;
- ``per_unit_lead2``: the same with ``extra_critic_steps=2`` (two critic steps on the detached
  batch before each model step);
- ``std_noise_1``, ``std_noise_2``, ``std_noise_3``: the concat critic on batch-standardized x
  and z, reading z + N(0, s²) at s = 1, 2, 3 (a noisier channel, which a batch can estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from mine_reg.critics import ConcatCritic, standardize_rows  # noqa: E402
from recipes import ib  # noqa: E402
from recipes.common import ROOT, load_config  # noqa: E402
from recipes.report import markdown_table  # noqa: E402


class NoisyConcat(nn.Module):
    """An ELU MLP on [x, z] with Gaussian noise on its input and after each hidden layer, in
    training mode only."""

    def __init__(self, x_dim: int, z_dim: int, hidden=(512, 512), input_noise=0.3, hidden_noise=0.5) -> None:
        super().__init__()
        dims = [x_dim + z_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:], strict=False))
        self.out = nn.Linear(dims[-1], 1)
        self.input_noise, self.hidden_noise = input_noise, hidden_noise

    def _noise(self, h: Tensor, std: float) -> Tensor:
        return h + std * torch.randn_like(h) if self.training and std else h

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self._noise(torch.cat([x, z], dim=-1), self.input_noise)
        for layer in self.layers:
            h = self._noise(F.elu(layer(h)), self.hidden_noise)
        return self.out(h).squeeze(-1)


class ZNoiseConcat(nn.Module):
    """The concat critic reading z + N(0, std²) in training mode."""

    def __init__(self, x_dim: int, z_dim: int, std: float = 2.0) -> None:
        super().__init__()
        self.critic, self.std = ConcatCritic(x_dim, z_dim, (128, 128)), std

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.critic(x, z + self.std * torch.randn_like(z) if self.training else z)


class StandardizedZNoise(nn.Module):
    """The concat critic on batch-standardized x and z, reading z + N(0, std²) (every call)."""

    def __init__(self, x_dim: int, z_dim: int, std: float = 1.0) -> None:
        super().__init__()
        self.critic, self.std = ConcatCritic(x_dim, z_dim, (128, 128)), std

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        z = standardize_rows(z)
        return self.critic(standardize_rows(x), z + self.std * torch.randn_like(z))


class GaussianKernel(nn.Module):
    """T(x, z) = -1/2 ||(z - m(x)) / s||^2: a Gaussian kernel around an MLP's prediction m(x) of z,
    with a learned per-unit scale s; scores all pairs with one matmul."""

    def __init__(self, x_dim: int, z_dim: int, hidden=(128, 128)) -> None:
        super().__init__()
        from mine_reg.critics import mlp

        self.mean = mlp(x_dim, hidden, z_dim)
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return -0.5 * (((z - self.mean(x)) * torch.exp(-self.log_scale)) ** 2).sum(-1)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        inv = torch.exp(-self.log_scale)
        m, zz = self.mean(x) * inv, z * inv
        return -0.5 * ((m**2).sum(-1)[:, None] + (zz**2).sum(-1)[None, :] - 2 * m @ zz.T)


ARMS: dict[str, tuple[list[str], dict]] = {
    "baseline": (["--method", "baseline"], {}),
    "raw": ([], {"standardize": False}),
    "standardized": ([], {}),
    "noisy": ([], {"standardize": False, "critic": NoisyConcat}),
    "separable": ([], {"standardize": False, "critic": "separable", "marginals": "all"}),
    "infonce": (["--estimator", "infonce"], {"standardize": False, "critic": "separable"}),
    "z_noise_2": ([], {"standardize": False, "critic": ZNoiseConcat}),
    "kernel": ([], {"critic": GaussianKernel, "marginals": "all"}),
    "kernel_infonce": (["--estimator", "infonce"], {"critic": GaussianKernel}),
    "kernel_raw": ([], {"standardize": False, "critic": GaussianKernel, "marginals": "all"}),
    "per_unit": (["--estimator", "mine-per-unit"], {}),
    "per_unit_lead2": (["--estimator", "mine-per-unit"], {"extra_critic_steps": 2}),
    "std_noise_1": ([], {"standardize": False, "critic": lambda x, z: StandardizedZNoise(x, z, 1.0)}),
    "std_noise_2": ([], {"standardize": False, "critic": lambda x, z: StandardizedZNoise(x, z, 2.0)}),
    "std_noise_3": ([], {"standardize": False, "critic": lambda x, z: StandardizedZNoise(x, z, 3.0)}),
}


def main(argv: list[str] | None = None) -> list[list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--beta", type=float, default=1e-2)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default="outputs/benchmarks/ib_mine_critics")
    parser.add_argument("--dataset", default="digits", help="digits (the README's tables) | mnist5k | mnist")
    parser.add_argument(
        "--reg-kwargs",
        type=json.loads,
        default={},
        help="more MIRegularizer keywords for every arm, as JSON, e.g. '{\"ema_rate\": 0.1}'",
    )
    args, passed_on = parser.parse_known_args(argv)  # the rest goes to every run, e.g. --epochs 40
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for arm in args.arms.split(","):
        extra, options = ARMS[arm]
        options = {**options, **args.reg_kwargs}
        runs = []
        for seed in seeds:
            cli = [
                "--config",
                str(ROOT / "configs" / "ib_mine.yaml"),
                "--estimator",
                "mine",
                "--beta",
                f"{args.beta:g}",
                "--dataset",
                args.dataset,  # digits by default: the README's table (the config's own is mnist5k)
            ]
            cli += ["--critic-lr", "1e-3", "--seed", str(seed), "--mi-every", "1000", *extra]
            cli += [*passed_on, "--out", f"{args.out}/{arm}_{seed}"]
            runs.append(ib.main(load_config(ib.Config, cli), reg_options=options))
        mean = lambda key, runs=runs: statistics.fmean(r[key] for r in runs)  # noqa: E731
        rows.append(
            [arm, f"{mean('I_XZ_lower'):.2f}", f"{mean('I_XZ_upper'):.1f}", f"{100 * mean('test_error'):.2f}"]
        )
        print(f"done: {arm}", flush=True)
    print(f"\nIB on {args.dataset}, MINE arm at beta {args.beta:g}, seeds {seeds} (means)\n")
    table = markdown_table(["arm", "I(X;Z) lower bound", "I(X;Z) upper bound", "test error (%)"], rows)
    print(table)
    return rows


if __name__ == "__main__":
    main()
