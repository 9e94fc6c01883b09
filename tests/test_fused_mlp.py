"""The concat critic's one-node shuffled scoring against the op-by-op autograd path."""

import pytest
import torch
from torch import nn

from mine_reg import critics
from mine_reg.critics import ConcatCritic, _cyclic_derangement
from mine_reg.fused_mlp import relu_mlp_parameters, shuffled_relu_scores


def op_by_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(critics, "relu_mlp_parameters", lambda net: None)


def random_critic(hidden: tuple[int, ...], seed: int = 0) -> ConcatCritic:
    torch.manual_seed(seed)
    critic = ConcatCritic(7, 5, hidden).double()
    nn.init.normal_(critic.net[-1].weight)  # the zero start would leave every inner gradient 0
    nn.init.normal_(critic.net[-1].bias)
    return critic


def scores_and_grads(critic: ConcatCritic, x: torch.Tensor, z: torch.Tensor, index: torch.Tensor):
    joint, marginal = critic.score_shuffled(x, z, index)
    weights = torch.linspace(-1.0, 2.0, 2 * x.shape[0], dtype=x.dtype)  # any fixed cotangent
    out = (torch.cat([joint, marginal]) * weights).sum()
    wrt = [t for t in (x, z, *critic.parameters()) if t.requires_grad]
    return [joint, marginal, *torch.autograd.grad(out, wrt)]


@pytest.mark.parametrize("hidden", [(16, 12), (8,), (5, 6, 7)])
@pytest.mark.parametrize("x_grad", [True, False])
def test_matches_autograd(monkeypatch: pytest.MonkeyPatch, hidden: tuple[int, ...], x_grad: bool) -> None:
    critic = random_critic(hidden)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 7, dtype=torch.float64, generator=gen).requires_grad_(x_grad)
    z = torch.randn(9, 5, dtype=torch.float64, generator=gen).requires_grad_()
    index = _cyclic_derangement(9, x.device, gen)
    assert relu_mlp_parameters(critic.net) is not None
    fused = scores_and_grads(critic, x, z, index)
    op_by_op(monkeypatch)
    reference = scores_and_grads(critic, x, z, index)
    assert len(fused) == len(reference)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck() -> None:
    critic = random_critic((4, 3))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    z = torch.randn(5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    index = _cyclic_derangement(5, x.device, gen)
    params = [p.detach().clone().requires_grad_() for p in critic.parameters()]
    assert torch.autograd.gradcheck(
        lambda x, z, *p: shuffled_relu_scores(list(p), x, z, index), (x, z, *params)
    )


def test_frozen_parameters_give_input_gradients_only(monkeypatch: pytest.MonkeyPatch) -> None:
    critic = random_critic((16, 12)).requires_grad_(False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 7, dtype=torch.float64, generator=gen)
    z = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    index = _cyclic_derangement(6, x.device, gen)
    fused = scores_and_grads(critic, x, z, index)
    op_by_op(monkeypatch)
    reference = scores_and_grads(critic, x, z, index)
    assert len(fused) == 3  # joint, marginal, dz
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_other_networks_take_the_op_by_op_path() -> None:
    assert relu_mlp_parameters(ConcatCritic(3, 2, (4,), activation="elu").net) is None
    two_outputs = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    assert relu_mlp_parameters(two_outputs) is None
    no_bias = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1, bias=False))
    assert relu_mlp_parameters(no_bias) is None
    critic = ConcatCritic(3, 2, (4,), activation="elu")
    joint, marginal = critic.score_shuffled(torch.randn(4, 3), torch.randn(4, 2), torch.tensor([1, 2, 3, 0]))
    assert joint.shape == marginal.shape == (4,)


def test_autocast_takes_the_op_by_op_path(monkeypatch: pytest.MonkeyPatch) -> None:
    critic = random_critic((16, 12)).float()
    gen = torch.Generator().manual_seed(4)
    x, z = torch.randn(8, 7, generator=gen), torch.randn(8, 5, generator=gen, requires_grad=True)
    index = _cyclic_derangement(8, x.device, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = scores_and_grads(critic, x, z, index)
    op_by_op(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = scores_and_grads(critic, x, z, index)
    assert fused[0].dtype == torch.bfloat16
    for a, b in zip(fused, reference, strict=True):
        assert torch.equal(a, b)


def test_second_backward_raises() -> None:
    critic = random_critic((4,))
    x = torch.randn(4, 7, dtype=torch.float64)
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    joint, _ = critic.score_shuffled(x, z, torch.tensor([1, 2, 3, 0]))
    (gz,) = torch.autograd.grad(joint.sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        gz.sum().backward()
