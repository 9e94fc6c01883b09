"""The one-node MINE term (mine_reg.fused_term) against the general path, bit for bit."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mine_reg import MIRegularizer


def _model(dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(6, 16), act1=nn.ReLU(), fc3=nn.Linear(16, 4), act3=nn.ReLU(), head=nn.Linear(4, 3)
        )
    )
    return net.to(dtype)


def _train(fused: bool, steps: int, dtype: torch.dtype = torch.float32, **reg_kwargs):
    """Train a small classifier with the regularizer for ``steps`` steps; returns the model, the
    regularizer and the metrics of every step."""
    model = _model(dtype)
    kwargs = {"x": "input", "z": "fc3", "beta": 0.5, "estimator": "mine", "lr": 1e-2, **reg_kwargs}
    reg = MIRegularizer(model, **kwargs)
    if not fused:
        reg._fused_plan = lambda: None  # the general path: the chain of autograd nodes
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        x = torch.randn(32, 6, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (32,), generator=gen)
        loss = F.cross_entropy(model(x), y) + reg()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((float(loss.detach()), reg.metrics()))
    return model, reg, history


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"standardize": False},
        {"mode": "minimize"},
        {"x": "fc1", "z": "fc3"},  # x inside the model: its gradient flows through the node too
        {"hidden": (8,)},
        {"hidden": (8, 8, 8)},
        {"dtype": torch.float64},
    ],
    ids=["default", "raw", "minimize", "x-with-grad", "one-hidden", "three-hidden", "float64"],
)
def test_fused_term_trains_exactly_like_the_general_path(options):
    options = dict(options)
    dtype = options.pop("dtype", torch.float32)
    model_f, reg_f, hist_f = _train(True, 6, dtype, **options)
    model_g, reg_g, hist_g = _train(False, 6, dtype, **options)
    assert reg_f._fused is not None and reg_g._fused is None
    assert hist_f == hist_g  # losses and every metric, to the last bit
    for a, b in zip(
        [*model_f.parameters(), *reg_f.critic_parameters()],
        [*model_g.parameters(), *reg_g.critic_parameters()],
        strict=True,
    ):
        assert torch.equal(a, b)
    assert reg_f.critic_steps == reg_g.critic_steps == 6
    assert torch.equal(reg_f.estimator.ema.log_ema, reg_g.estimator.ema.log_ema)


def test_fused_term_gives_the_same_gradients_as_the_general_path():
    model = _model(torch.float64)
    reg_f = MIRegularizer(model, x="fc1", z="fc3", beta=0.3, estimator="mine")
    x = torch.randn(20, 6, dtype=torch.float64)
    model(x)
    reg_f()  # builds the critic
    reg_g = copy.deepcopy(reg_f)
    reg_f.remove()
    reg_g.remove()
    reg_g._fused = None
    grads = []
    for reg in (reg_f, reg_g):
        h = model.fc1(x).detach().requires_grad_()
        z = model.fc3(F.relu(h)).detach().requires_grad_()
        params = reg.critic_parameters()
        reg.critic_optimizer.step = lambda: None  # keep the gradients for the comparison
        term = reg(h, z)
        grads.append(torch.autograd.grad(term, [h, z, *params]))
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_fused_term_applies_only_to_its_configuration():
    for kwargs, applies in [
        ({}, True),
        ({"critic": "separable"}, False),
        ({"estimator": "mine-f"}, False),
        ({"marginals": "all"}, False),
    ]:
        _, reg, _ = _train(True, 1, **kwargs)
        assert (reg._fused is not None) is applies, kwargs
    # adaptive clipping and autocast take the general path (same results, by the tests above)
    _, reg, _ = _train(True, 1)
    model = reg.model[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(8, 6))
        assert reg._fused_term(*reg._prepare(None, None), [1.0]) is None


def test_fused_term_refuses_a_diverged_critic_with_the_general_message():
    _, reg, _ = _train(True, 1)
    with torch.no_grad():
        reg.critic_parameters()[-1].fill_(float("inf"))
    reg.model[0](torch.randn(8, 6))
    with pytest.raises(ValueError, match="the critic diverged"):
        reg()
