"""Hook specs that reach any tensor, and several forward passes per regularizer call.

Tuple / dict outputs, seq-first layers rearranged by an einops pattern, integer inputs refused,
gradient accumulation (micro-batches joined in call order), no_grad forwards left out, and a
module run twice within one forward pass refused. Reference values are computed by hand from the
same tensors, in float64, so exact comparisons only allow for rounding (1e-10).
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from recording_critic import Recorder
from torch import nn

from mine_reg import MIRegularizer
from mine_reg import hooks as hooks_module
from mine_reg.hooks import Tap, read_input

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------ helpers
def _recording(model: nn.Module, x, z) -> MIRegularizer:
    return MIRegularizer(
        model, x=x, z=z, critic=Recorder, marginals="shuffle", estimator="mine", standardize=False
    )


class Bilinear(nn.Module):
    """T(x, z) = x W z with fixed random W; ``score_matrix`` scores every pair (marginals="all")."""

    def __init__(self, dx: int, dz: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.w = nn.Parameter(0.3 * torch.randn(dx, dz, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return ((x @ self.w) * z).sum(-1)

    def score_matrix(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x @ self.w @ z.T


def _infonce(x: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """InfoNCE over all pairs of a batch of N: mean_i [T_ii - log (1/N) sum_j exp T_ij]."""
    t = x @ w @ z.T
    return (t.diagonal() - torch.logsumexp(t, dim=1) + math.log(len(x))).mean()


class SeqModel(nn.Module):
    """Seq-first input [S, B, 3] -> LSTM (seq-first) -> head on the last layer's h_n."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


class DictBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.lin(x)
        return {"hidden": h, "norm": h.norm(dim=-1)}


class DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = DictBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)["hidden"].sum(-1)


class Shared(nn.Module):
    """``lin`` runs ``uses`` times per forward pass (weight sharing when uses > 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.uses = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.uses):
            x = self.lin(x)
        return x


class Pair(nn.Module):
    """Called with two positional tensors (mean, std)."""

    def forward(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return mean + std


class Stochastic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stats = nn.Linear(4, 6)
        self.sample = Pair()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, pre = self.stats(x).chunk(2, dim=-1)
        return self.sample(mean, F.softplus(pre))


# ------------------------------------------------------------------ tuple, dict, seq-first
def test_lstm_h_n_through_a_callable_and_the_input_through_a_pattern():
    model = SeqModel()
    reg = _recording(model, ("input", None, "s b d -> b (s d)"), ("lstm", lambda out: out[1][0][-1]))
    x = torch.randn(7, 4, 3)  # [S, B, D]
    model(x)
    reg()
    seen_x, seen_z = reg.estimator.critic.seen
    # the same layer, run without its hooks and with grad enabled as in the hooked call: CPU
    # LSTM kernels differ between grad and no_grad modes in the last float32 bits
    _, (h, _) = nn.LSTM.forward(model.lstm, x)
    assert torch.equal(seen_x, x.permute(1, 0, 2).reshape(4, 21))
    assert torch.equal(seen_z, h[-1].detach())
    assert reg.dims == (21, 5)


def test_lstm_output_without_a_callable_lists_its_parts():
    model = SeqModel()
    MIRegularizer(model, x=None, z="lstm", estimator="mine")
    with pytest.raises(ValueError) as err:
        model(torch.randn(7, 4, 3))
    message = str(err.value)
    assert "z = 'lstm': the output is a tuple, not a tensor" in message
    assert "out[0]: Tensor [7, 4, 5] float32" in message
    assert "out[1][0]: Tensor [1, 4, 5] float32" in message and "out[1][1]: Tensor [1, 4, 5]" in message
    assert "callable spec" in message and "seq-first (batch_first=False)" in message


def test_dict_output_with_and_without_a_callable():
    model = DictModel()
    reg = _recording(model, "input", ("block", lambda out: out["hidden"]))
    x = torch.randn(6, 4)
    model(x)
    reg()
    with torch.no_grad():
        want = model.block.lin(x)
    assert torch.equal(reg.estimator.critic.seen[1], want)

    reg.remove()
    MIRegularizer(model, x="input", z="block", estimator="mine")
    with pytest.raises(ValueError) as err:
        model(x)
    message = str(err.value)
    assert "the output is a dict, not a tensor" in message
    assert "out['hidden']: Tensor [6, 3]" in message and "out['norm']: Tensor [6]" in message
    assert "lambda out: out['hidden']" in message


def test_seq_first_attention_with_a_pattern_gives_batch_first_rows():
    seq_first = nn.MultiheadAttention(4, 2)  # batch_first=False, the default
    batch_first = nn.MultiheadAttention(4, 2, batch_first=True)
    batch_first.load_state_dict(seq_first.state_dict())

    class Attend(nn.Module):
        def __init__(self, att: nn.MultiheadAttention) -> None:
            super().__init__()
            self.att = att

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.att(x, x, x)[0]

    model = Attend(seq_first)
    reg = _recording(model, None, ("att", lambda out: out[0], "s b d -> b (s d)"))
    x = torch.randn(5, 3, 4)  # [S, B, D]
    model(x)
    reg(x=torch.randn(3, 2))
    with torch.no_grad():
        want = batch_first(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1))[0]  # [B, S, D]
    torch.testing.assert_close(reg.estimator.critic.seen[1], want.reshape(3, 20), rtol=1e-5, atol=1e-6)

    # without the pattern the sequence axis would be read as the batch: the mismatch says so
    reg.remove()
    plain = MIRegularizer(model, x=None, z=("att", lambda out: out[0]), estimator="mine")
    model(x)
    with pytest.raises(ValueError, match=r"different batch sizes: 3 .* and 5 .*seq-first"):
        plain(x=torch.randn(3, 2))


def test_a_pattern_that_does_not_fit_and_bad_specs():
    model = DictModel()
    MIRegularizer(
        model, x="input", z=("block", lambda out: out["hidden"], "b s d -> b (s d)"), estimator="mine"
    )
    with pytest.raises(ValueError, match=r"the pattern 'b s d -> b \(s d\)' does not fit a tensor of shape"):
        model(torch.randn(6, 4))
    for spec in [("block", "not callable"), ("block", None, "no arrow"), (3, None), ("a", None, "x->x", 1)]:
        with pytest.raises(ValueError, match=r"a spec is a name, a callable"):
            MIRegularizer(DictModel(), x="input", z=spec, estimator="mine")


# ---------------------------------------------------------------------------- inputs
def test_name_input_with_one_or_several_positional_arguments():
    model = Stochastic()
    tap = Tap(model, ("sample:input", lambda args: args), "z")
    one = Tap(model, ("stats:input", lambda inp: inp * 2), "x")
    first = Tap(model, "sample:input", "w")  # no callable: the first positional argument
    x = torch.randn(5, 4)
    model(x)
    (mean, std), doubled, plain = tap.take(), one.take(), first.take()
    want_mean, pre = nn.Linear.forward(model.stats, x).chunk(2, dim=-1)  # without stats' hooks
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(std, F.softplus(pre))
    torch.testing.assert_close(doubled, 2 * x)
    torch.testing.assert_close(plain, want_mean)

    # several forward passes: a tuple is joined part by part
    x2 = torch.randn(3, 4)
    model(x)
    model(x2)
    mean, std = tap.take()
    assert mean.shape == std.shape == (8, 3)
    torch.testing.assert_close(mean[5:], nn.Linear.forward(model.stats, x2).chunk(2, dim=-1)[0])
    one.drop(), first.drop()

    # read_input insists on one tensor
    model(x)
    with pytest.raises(ValueError, match=r"z = 'sample:input' gave a tuple of 2 parts.*must pick one"):
        read_input({"z": tap}, "z", None)


def test_integer_and_bool_inputs_are_refused_with_the_embedding_hint():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids))

    model = Tokens()
    reg = MIRegularizer(model, x="input", z="head", estimator="mine")
    model(torch.randint(0, 10, (8,)))
    with pytest.raises(ValueError, match=r"x = 'input' is an integer tensor \(int64\).*e\.g\. x='embed'"):
        reg()
    reg.remove()

    fixed = MIRegularizer(model, x="embed", z="head", estimator="mine")  # the suggested spec works
    model(torch.randint(0, 10, (8,)))
    assert torch.isfinite(fixed())
    fixed.remove()

    given = MIRegularizer(model, x=None, z="head", estimator="mine")
    for bad, dtype in [(torch.arange(8) % 3, "int64"), (torch.arange(8) % 2 == 0, "bool")]:
        model(torch.randint(0, 10, (8,)))
        message = rf"x passed at call time is an integer tensor \({dtype}\).*one_hot"
        with pytest.raises(ValueError, match=message):
            given(x=bad)
    model(torch.randint(0, 10, (8,)))
    assert torch.isfinite(given(x=F.one_hot(torch.arange(8) % 3, 3).float()))


# ------------------------------------------------------------------ several forward passes
def _accumulating() -> tuple[nn.Sequential, MIRegularizer]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    reg = MIRegularizer(
        model, x="input", z="2", beta=1.0, estimator="infonce", critic=Bilinear, standardize=False
    )
    return model, reg


def test_gradient_accumulation_reads_every_micro_batch():
    model, reg = _accumulating()
    g = torch.Generator().manual_seed(11)
    x1, x2 = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (5, 7))
    out1, out2 = model(x1), model(x2)
    out1.retain_grad(), out2.retain_grad()
    term = reg()
    w = reg.estimator.critic.w.detach().clone()  # the critic only steps at backward

    z = torch.cat([out1, out2]).detach().requires_grad_()
    hand = _infonce(torch.cat([x1, x2]), z, w)
    assert term.item() == pytest.approx(hand.item(), rel=1e-10)  # minimize, beta 1: +I
    (want,) = torch.autograd.grad(hand, z)
    term.backward()
    # each micro-batch's graph gets its rows of d(InfoNCE)/dz, the joined batch's gradient
    torch.testing.assert_close(out1.grad, want[:5], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out2.grad, want[5:], rtol=1e-10, atol=1e-12)
    assert out1.grad.abs().max() > 0 and out2.grad.abs().max() > 0
    assert reg.critic_steps == 1
    assert all(tap.count == 0 for tap in reg.taps.values())


def test_reg_after_each_micro_batch():
    model, reg = _accumulating()
    g = torch.Generator().manual_seed(12)
    for n in (5, 7):
        x = torch.randn(n, 4, generator=g, dtype=torch.float64)
        out = model(x)
        out.retain_grad()
        term = reg()
        w = reg.estimator.critic.w.detach().clone()
        z = out.detach().requires_grad_()
        hand = _infonce(x, z, w)
        (want,) = torch.autograd.grad(hand, z)
        assert term.item() == pytest.approx(hand.item(), rel=1e-10)
        term.backward()
        torch.testing.assert_close(out.grad, want, rtol=1e-10, atol=1e-12)
    assert reg.critic_steps == 2


def test_x_and_z_from_different_numbers_of_forward_passes():
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)
            self.use_b = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h) if self.use_b else h

    model = Branch()
    reg = MIRegularizer(model, x="input", z="b", estimator="mine")
    model(torch.randn(4, 4))
    model.use_b = False
    model(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"x = 'input' was captured 2 times and z = 'b' 1 times"):
        reg()
    assert all(tap.count == 0 for tap in reg.taps.values())  # dropped, not left for the next call
    model.use_b = True
    model(torch.randn(4, 4))
    assert torch.isfinite(reg())


def test_forwards_without_gradients_are_not_captured():
    model, reg = _accumulating()
    x = torch.randn(6, 4, dtype=torch.float64)
    model(x)
    with torch.no_grad():
        model(torch.randn(9, 4, dtype=torch.float64))  # a validation pass before reg()
    with torch.inference_mode():
        model(torch.randn(9, 4, dtype=torch.float64))
    reg()
    assert torch.equal(reg._last_inputs[0], x)  # x = "input": a tensor without grad is fine

    for context in (torch.no_grad, torch.inference_mode):
        with context():
            model(x)
        with pytest.raises(ValueError, match=r"forward pass\(es\) since the last regularizer call ran wi"):
            reg()


def test_captures_are_dropped_at_take_and_remove():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    reg = MIRegularizer(model, x="input", z="0", estimator="mine")
    out = model(torch.randn(5, 4))
    ref = weakref.ref(reg.taps["z"].captures[0])
    tap = reg.taps["z"]
    reg.remove()
    assert tap.count == 0 and not tap.handles
    del out
    gc.collect()
    assert ref() is None  # nothing else held the layer's output

    reg.attach()
    model(torch.randn(5, 4))
    ref = weakref.ref(reg.taps["z"].captures[0])
    term = reg()
    assert reg.taps["z"].count == 0
    term.backward()
    del term
    gc.collect()
    assert ref() is None


def test_many_captures_without_a_call_warn(monkeypatch):
    monkeypatch.setattr(hooks_module, "MANY_CAPTURES", 3)
    model = nn.Sequential(nn.Linear(4, 2))
    reg = MIRegularizer(model, x="input", z="0", estimator="mine")
    model(torch.randn(4, 4)), model(torch.randn(4, 4))
    with pytest.warns(UserWarning, match=r"holds 3 captures"):
        model(torch.randn(4, 4))
    assert torch.isfinite(reg())


# -------------------------------------------------------------------------- shared modules
def test_a_module_run_twice_in_one_forward_is_refused():
    model = Shared()
    reg = MIRegularizer(model, x="input", z="lin", estimator="mine")
    with pytest.raises(ValueError, match=r"z = 'lin': module 'lin' \(Linear\) ran 2 times in one forward"):
        model(torch.randn(4, 4))
    assert reg.taps["x"].count == reg.taps["z"].count == 0  # that pass left no capture behind
    # several root forward passes each running it once are micro-batches, not sharing
    model.uses = 1
    model(torch.randn(4, 4))
    model(torch.randn(3, 4))
    assert reg.taps["z"].count == 2
    assert torch.isfinite(reg())
    assert reg._last_inputs[1].shape == (7, 4)


def test_a_forward_pass_that_raises_leaves_no_capture():
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)
            self.fail = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            if self.fail:
                raise RuntimeError("out of memory")
            return self.b(h)

    model = Fails()
    reg = MIRegularizer(model, x="input", z="a", estimator="mine")
    with pytest.raises(RuntimeError, match="out of memory"):
        model(torch.randn(4, 4))
    assert reg.taps["x"].count == reg.taps["z"].count == 0
    model.fail = False
    model(torch.randn(5, 4))
    assert torch.isfinite(reg())
    assert reg._last_inputs[0].shape == (5, 4)


def test_reg_called_inside_the_models_forward():
    class WithLoss(nn.Module):
        """Computes its own loss, the MI term included, in forward."""

        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.reg: list[MIRegularizer] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x).pow(2).mean() + self.reg[0]()

    model = WithLoss()
    model.reg.append(MIRegularizer(model, x="input", z="a", estimator="mine"))
    for _ in range(2):
        model(torch.randn(6, 4)).backward()
    assert model.reg[0].critic_steps == 2
