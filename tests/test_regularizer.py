"""MIRegularizer: gradient semantics, hooks, wrapped models, checkpoints, effect and input errors.

The reference for every gradient check is computed independently of the regularizer: a deep copy
of its estimator (critic and MINE's moving average) taken before the step, scored on the same
batch with a copy of the regularizer's shuffle generator, differentiated with torch.autograd.grad
w.r.t. the model's parameters. Models run in float64 there, so the regularizer's path (gradient
scaling through x and z) and the reference (sign·beta times the objective's gradient) can only
differ by rounding: ~1e-16 relative, checked at 1e-10.
"""

from __future__ import annotations

import copy
import math
import socket
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from recording_critic import Recorder
from torch import nn

from mine_reg import MIRegularizer, estimate_mi

# One intra-op thread (conftest.single_thread): tiny tensors, shared CPUs, reproducible runs.
pytestmark = pytest.mark.usefixtures("single_thread")

BETA = 0.7
SIGN = {"minimize": 1.0, "maximize": -1.0}


# ------------------------------------------------------------------------------------ helpers
def _mlp(dtype: torch.dtype = torch.float64, seed: int = 1) -> nn.Sequential:
    """input [B, 4] -> Linear -> Tanh ("1": the hidden code, [B, 6]) -> Linear [B, 3]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _hidden(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """model[1]'s output recomputed without calling model[1] (whose hooks belong to the regularizer)."""
    return torch.tanh(model[0](x))


def _batches(n: int, size: int = 32, dim: int = 4, dtype=torch.float64, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, dim, generator=g, dtype=dtype) for _ in range(n)]


def _generator_copy(reg: MIRegularizer) -> torch.Generator:
    g = torch.Generator()
    g.set_state(reg.generator.get_state())
    return g


def _count_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Named(nn.Module):
    """A model with dotted submodule names: enc.fc1 -> enc.act -> enc.fc2 -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            OrderedDict(fc1=nn.Linear(5, 7), act=nn.Tanh(), fc2=nn.Linear(7, 4)),
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x))


def _recording(model: nn.Module, x, z, **kw) -> MIRegularizer:
    return MIRegularizer(
        model,
        x=x,
        z=z,
        critic=Recorder,
        marginals="shuffle",
        **{"estimator": "mine", "standardize": False, **kw},
    )


def _warm(model: nn.Module, reg: MIRegularizer, batches: list[torch.Tensor]) -> None:
    """Full regularizer steps: the critic leaves its all-zero start (whose scores, hence the MI
    gradient on the model, are exactly 0) and MINE's EMA is past its initialising update."""
    for x in batches:
        model(x)
        reg().backward()
    model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------ 1. gradient semantics
@pytest.mark.parametrize("mode", ["minimize", "maximize"])
@pytest.mark.parametrize(
    "estimator, critic",
    [
        ("mine", "concat"),
        ("mine-biased", "concat"),
        ("nwj", "separable"),
        ("infonce", "separable"),
        ("jsd", "concat"),
    ],
)
def test_model_gradient_is_signed_beta_times_objective_gradient(mode, estimator, critic):
    model = _mlp()
    reg = MIRegularizer(
        model, x="input", z="1", beta=BETA, mode=mode, estimator=estimator, critic=critic,
        hidden=(16,), embed_dim=8, lr=1e-2, ema_rate=0.3,
    )  # fmt: skip
    batches = _batches(3)
    _warm(model, reg, batches[:2])
    assert int(reg.estimator.ema.steps) == (2 if estimator == "mine" else 0)

    x = batches[2]
    before, gen = copy.deepcopy(reg.estimator), _generator_copy(reg)
    model(x)
    term = reg()
    term.backward()

    # the reference: the critic as it was before this step; for "mine" the copy's EMA is updated
    # by this very call, as the regularizer's was, before the corrected gradient is formed
    params = list(model.parameters())
    ref = before(x, _hidden(model, x), generator=gen)
    grads = torch.autograd.grad(ref.objective, params, allow_unused=True)
    sign = SIGN[mode]
    # value: sign·beta·I in nats (the read-out bound, = the objective except for "jsd")
    assert term.item() == pytest.approx(sign * BETA * ref.mi.item(), rel=1e-10, abs=1e-12)
    assert ref.mi.item() != 0.0
    for p, g in zip(params, grads, strict=True):
        if g is None:  # the last layer lies after z: no MI gradient reaches it
            assert p.grad is None
        else:
            assert g.abs().max() > 1e-6  # a non-trivial gradient: the sign is checked
            torch.testing.assert_close(p.grad, sign * BETA * g, rtol=1e-10, atol=1e-14)


def test_value_and_gradient_scale_with_beta():
    """Same state, beta and 2·beta: value and model gradient double (float64: exact to rounding)."""
    grads, values = [], []
    for beta in (0.5, 1.0):
        model = _mlp()
        reg = MIRegularizer(model, x="input", z="1", beta=beta, estimator="nwj", hidden=(16,), lr=1e-2)
        batches = _batches(3)
        for x in batches[:2]:  # the critic's steps do not depend on beta
            model(x)
            reg().backward()
        model.zero_grad(set_to_none=True)
        model(batches[2])
        term = reg()
        term.backward()
        values.append(term.item())
        grads.append(model[0].weight.grad.clone())
    assert values[0] != 0.0
    assert values[1] == pytest.approx(2 * values[0], rel=1e-12)
    torch.testing.assert_close(grads[1], 2 * grads[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("estimator, critic", [("nwj", "separable"), ("mine-biased", "separable")])
def test_one_critic_step_raises_its_bound(estimator, critic):
    # a batch with dependence: z = tanh(W x + b) is a function of x. The separable critic scores
    # all pairs ("all" marginals): no shuffle, so before and after are scored on the same pairs.
    model = _mlp()
    reg = MIRegularizer(model, x="input", z="1", estimator=estimator, critic=critic, hidden=(32,), lr=3e-3)
    batches = _batches(4, size=64)
    _warm(model, reg, batches[:3])
    x = batches[3]
    before, steps = copy.deepcopy(reg.estimator), reg.critic_steps
    params_before = [p.detach().clone() for p in reg.critic_parameters()]
    model(x)
    reg().backward()  # the critic steps itself once its gradient has landed
    assert reg.critic_steps == steps + 1
    assert any(not torch.equal(a, b) for a, b in zip(params_before, reg.critic_parameters(), strict=True))
    z = _hidden(model, x).detach()
    with torch.no_grad():
        old, new = float(before(x, z).mi), float(reg.estimator(x, z).mi)
    # one small Adam step moves each parameter by about lr·sign(gradient): to first order the bound
    # rises by lr·||grad||_1 > 0 (observed: 0.03-0.08 nats); float64 rounding (1e-15) is far below
    assert new > old + 1e-6, (old, new)


def test_loss_and_critic_step_explicit_path():
    model = _mlp()
    reg = MIRegularizer(model, x="input", z="1", beta=BETA, estimator="nwj", hidden=(16,), lr=1e-2)
    batches = _batches(3)
    _warm(model, reg, batches[:2])
    steps = reg.critic_steps
    assert steps == 2
    model(batches[2])
    before, gen = copy.deepcopy(reg.estimator), _generator_copy(reg)
    loss = reg.loss()
    loss.backward()
    # model term only: the model gets sign·beta·dI, the critic no gradient and no step
    assert all(p.grad is None for p in reg.critic_parameters())
    assert reg.critic_steps == steps
    for a, b in zip(before.parameters(), reg.estimator.parameters(), strict=True):
        assert torch.equal(a, b)
    ref = before(batches[2], _hidden(model, batches[2]), generator=gen)
    (g,) = torch.autograd.grad(ref.objective, [model[0].weight])
    assert g.abs().max() > 1e-6
    torch.testing.assert_close(model[0].weight.grad, BETA * g, rtol=1e-10, atol=1e-14)
    assert loss.item() == pytest.approx(BETA * ref.objective.item(), rel=1e-10)

    # on the last captured batch, scored afresh (a new shuffle): the bound before the step
    gen = _generator_copy(reg)
    value = reg.critic_step()
    assert value == pytest.approx(
        before(batches[2], _hidden(model, batches[2]), generator=gen).mi.item(), rel=1e-10
    )
    assert reg.critic_steps == steps + 1
    assert any(
        not torch.equal(a, b) for a, b in zip(before.parameters(), reg.estimator.parameters(), strict=True)
    )


# ----------------------------------------------------------------------------------- 2. hooks
@pytest.mark.parametrize(
    "x_spec, z_spec, expect",
    [
        ("input", "enc.fc2", lambda m, x: (x, m.enc(x))),
        ("input", "enc.fc2:input", lambda m, x: (x, torch.tanh(m.enc.fc1(x)))),
        ("input", "enc.fc1:output", lambda m, x: (x, m.enc.fc1(x))),
        (lambda inp: inp[:, -3:], "enc.act", lambda m, x: (x[:, -3:], torch.tanh(m.enc.fc1(x)))),
        ("input", ("enc.fc2", lambda t: t[:, :2]), lambda m, x: (x, m.enc(x)[:, :2])),
        ("enc.fc1", "head", lambda m, x: (m.enc.fc1(x), m(x))),
    ],
    ids=["output", "name:input", "name:output", "callable", "name+callable", "two-layers"],
)
def test_hooks_capture_the_named_tensors(x_spec, z_spec, expect):
    model = Named()
    reg = _recording(model, x_spec, z_spec)
    x = torch.randn(8, 5)
    model(x)
    term = reg()
    assert torch.isfinite(term)
    seen_x, seen_z = reg.estimator.critic.seen
    with torch.no_grad():
        want_x, want_z = expect(model, x)
    assert torch.equal(seen_x, want_x)
    assert torch.equal(seen_z, want_z)
    assert reg.dims == (want_x.shape[1], want_z.shape[1])


def test_tensors_passed_at_call_time():
    model = Named()
    labels = F.one_hot(torch.arange(8) % 3, 3).to(torch.float32)  # class labels as one-hot floats
    codes = torch.randn(8, 2, 3)  # any shape: flattened per sample
    reg = _recording(model, None, None)
    reg(x=labels, z=codes)
    seen_x, seen_z = reg.estimator.critic.seen
    assert torch.equal(seen_x, labels)
    assert torch.equal(seen_z, codes.reshape(8, 6))

    both = _recording(model, None, "enc.fc2")  # one from a hook, one at call time
    x = torch.randn(8, 5)
    model(x)
    both(x=labels)
    seen_x, seen_z = both.estimator.critic.seen
    assert torch.equal(seen_x, labels)
    assert torch.equal(seen_z, model.enc(x).detach())
    model(x)
    with pytest.raises(ValueError, match=r"z is read from the model by a hook; do not pass z="):
        both(x=labels, z=codes)


def test_conv_activations_are_flattened_per_sample():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    reg = _recording(model, "input", "0")
    x = torch.randn(6, 1, 6, 6)
    model(x)
    reg()
    seen_x, seen_z = reg.estimator.critic.seen
    assert reg.dims == (36, 32)
    assert torch.equal(seen_x, x.reshape(6, 36))
    with torch.no_grad():  # a call with gradients would be captured for the next reg()
        assert torch.equal(seen_z, model[0](x).reshape(6, 32))
    # and the MI gradient reaches the conv layer through the flattening
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        model(x)
        reg().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().max() > 0


def test_remove_leaves_no_hooks():
    model = Named()
    assert _count_hooks(model) == 0
    # per tap: its hook and two forward hooks on the root (3), plus a root pre-hook for a submodule (4)
    reg = MIRegularizer(model, x="input", z="enc.fc2:input", estimator="mine")
    other = MIRegularizer(model, x=lambda t: t[:, :2], z=("head", lambda t: t), estimator="mine")
    assert _count_hooks(model) == 14
    reg.remove()
    assert _count_hooks(model) == 7
    other.remove()
    assert _count_hooks(model) == 0
    reg.remove()  # twice is harmless
    assert _count_hooks(model) == 0


def test_context_manager_removes_hooks():
    model = Named()
    with MIRegularizer(model, x="input", z="enc.fc2", hidden=(8,), estimator="mine") as reg:
        assert _count_hooks(model) == 7
        model(torch.randn(8, 5))
        assert torch.isfinite(reg())
    assert _count_hooks(model) == 0


def test_two_regularizers_on_the_same_tensors():
    model = Named()
    kw = dict(x="input", z="enc.fc2", hidden=(8,), lr=1e-2, seed=3)
    a, b = MIRegularizer(model, **kw), MIRegularizer(model, **kw, beta=2.0)
    for _ in range(3):
        model(torch.randn(16, 5))
        ta, tb = a(), b()
        (ta + tb).backward()
    assert a.critic_steps == b.critic_steps == 3
    # same seed, same batches: the same critic, so b's term is exactly twice a's
    assert ta.item() != 0.0
    assert tb.item() == pytest.approx(2 * ta.item(), rel=1e-6)


def test_attach_twice_raises_and_reattach_after_remove():
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", estimator="mine")
    with pytest.raises(RuntimeError, match="already attached"):
        reg.attach()
    assert _count_hooks(model) == 7
    reg.remove()
    reg.attach()
    assert _count_hooks(model) == 7
    model(torch.randn(4, 5))
    assert torch.isfinite(reg())


# --------------------------------------------------------------------------- 3. wrapped models
def _flows(wrapped: nn.Module, inner: nn.Module, reg: MIRegularizer, n: int = 3) -> None:
    """n steps of reg() alone: the critic steps each time and, once it has left its zero start,
    the MI gradient reaches every model parameter before z."""
    for x in _batches(n, dtype=torch.float32):
        inner.zero_grad(set_to_none=True)
        wrapped(x)
        reg().backward()
    assert reg.critic_steps == n
    grad = inner[0].weight.grad
    assert grad is not None and grad.abs().max() > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests DataParallel's CPU pass-through")
@pytest.mark.parametrize("name", ["module.1", "1"])
def test_data_parallel_names_with_and_without_prefix(name):
    model = _mlp(torch.float32)
    wrapped = nn.DataParallel(model)
    reg = MIRegularizer(wrapped, x="input", z=name, hidden=(16,), lr=1e-2, estimator="mine")
    _flows(wrapped, model, reg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo_world_of_one():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["module.2", "2"])
def test_ddp_names_with_and_without_prefix(gloo_world_of_one, name):
    model = _mlp(torch.float32)
    wrapped = nn.parallel.DistributedDataParallel(model)
    # z = the last layer, so every parameter gets a gradient (DDP expects that each step)
    reg = MIRegularizer(wrapped, x="input", z=name, hidden=(16,), lr=1e-2, estimator="mine")
    _flows(wrapped, model, reg)
    assert model[2].weight.grad.abs().max() > 0


@pytest.mark.slow
def test_torch_compile_after_attach_matches_eager():
    """The model is compiled after the regularizer was attached: dynamo must keep the hooks.
    backend="aot_eager" needs no C compiler yet runs dynamo's tracing and AOT autograd."""
    model, twin = _mlp(torch.float32), _mlp(torch.float32)
    kw = dict(x="input", z="1", hidden=(16,), lr=1e-2)
    reg, twin_reg = MIRegularizer(model, **kw), MIRegularizer(twin, **kw)
    compiled = torch.compile(model, backend="aot_eager")
    for x in _batches(3, dtype=torch.float32):
        model.zero_grad(set_to_none=True)
        twin.zero_grad(set_to_none=True)
        compiled(x)
        term = reg()
        term.backward()
        twin(x)
        twin_term = twin_reg()
        twin_term.backward()
        # same ops in the same order on the same data: equal to float32 rounding
        assert term.item() == pytest.approx(twin_term.item(), rel=1e-5, abs=1e-7)
    assert reg.critic_steps == 3
    assert model[0].weight.grad.abs().max() > 0
    torch.testing.assert_close(model[0].weight.grad, twin[0].weight.grad, rtol=1e-4, atol=1e-7)

    # a name given with torch.compile's prefix resolves on the compiled module too
    other = MIRegularizer(compiled, x="input", z="_orig_mod.1", hidden=(16,), estimator="mine")
    assert other.taps["z"].module is model[1]
    other.remove()


# ------------------------------------------------------------------------------- 4. checkpoint
def _train_step(model, opt, reg, x) -> tuple[float, list[torch.Tensor]]:
    out = model(x)
    term = reg()
    loss = out.pow(2).mean() + term
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(term.detach()), [p.detach().clone() for p in reg.critic_parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_checkpoint_resume_is_bit_identical(tmp_path, dtype):
    # "mine" with a concat critic: the resumed steps depend on the critic, its Adam state, the
    # EMA (corrected gradient), the shuffle generator and the step counts
    kw = dict(x="input", z="1", estimator="mine", critic="concat", hidden=(16,), lr=1e-2, ema_rate=0.2)
    model = _mlp(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = MIRegularizer(model, **kw)
    data = _batches(6, dtype=dtype)
    for x in data[:3]:
        _train_step(model, opt, reg, x)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "reg": reg.state_dict()}, path)
    first = [_train_step(model, opt, reg, x) for x in data[3:]]

    ckpt = torch.load(path, weights_only=True)
    model2 = _mlp(dtype, seed=99)  # fresh objects with other initial values
    model2.load_state_dict(ckpt["model"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["opt"])
    reg2 = MIRegularizer(model2, **kw)
    reg2.load_state_dict(ckpt["reg"])
    assert (reg2.steps, reg2.critic_steps) == (3, 3)
    second = [_train_step(model2, opt2, reg2, x) for x in data[3:]]

    for (v1, c1), (v2, c2) in zip(first, second, strict=True):
        assert v1 == v2
        assert all(p.dtype == dtype for p in c2)
        assert all(torch.equal(a, b) for a, b in zip(c1, c2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))
    assert reg2.critic_steps == reg.critic_steps == 6
    assert torch.equal(reg2.estimator.ema.log_ema, reg.estimator.ema.log_ema)


def test_state_dict_of_a_restored_regularizer_keeps_the_optimizer_state():
    """Save -> load -> save again before any step (e.g. a checkpoint written right after resuming)
    must carry the critic optimizer's state, not a fresh optimizer's."""
    kw = dict(x="input", z="1", hidden=(16,), lr=1e-2)
    model = _mlp()
    reg = MIRegularizer(model, **kw)
    for x in _batches(2):
        model(x)
        reg().backward()
    saved = copy.deepcopy(reg.state_dict())
    assert len(saved["_extra_state"]["optimizer"]["state"]) == len(reg.critic_parameters())

    restored = MIRegularizer(_mlp(), **kw)
    restored.load_state_dict(copy.deepcopy(saved))
    again = restored.state_dict()["_extra_state"]["optimizer"]
    assert len(again["state"]) == len(saved["_extra_state"]["optimizer"]["state"])
    for k, state in saved["_extra_state"]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(again["state"][k][name], value)


def test_checkpoint_from_before_the_first_call_resumes_like_a_fresh_start():
    kw = dict(x="input", z="1", hidden=(16,), lr=1e-2, seed=4)
    fresh_model = _mlp()
    fresh = MIRegularizer(fresh_model, **kw)
    saved = copy.deepcopy(fresh.state_dict())
    assert saved["_extra_state"]["dims"] is None and saved["_extra_state"]["optimizer"] is None
    model = _mlp()
    restored = MIRegularizer(model, **kw)
    restored.load_state_dict(saved)
    for x in _batches(3):
        fresh_model(x)
        model(x)
        a, b = fresh(), restored()
        a.backward()
        b.backward()
        assert a.item() == b.item()
    assert restored.critic_steps == fresh.critic_steps == 3


# -------------------------------------------------------------------------------------- 5. effect
SIGMA = 0.5  # noise added to the code: keeps I(X; Z) finite (at most ~3.2 nats for 4 tanh units)


class Noise(nn.Module):
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + SIGMA * torch.randn_like(t)


def _source(n: int, g: torch.Generator) -> torch.Tensor:
    """x in R^8 with correlated coordinates: standard normals mixed by 1 on, 0.4 off the diagonal."""
    mix = torch.full((8, 8), 0.4) + 0.6 * torch.eye(8)
    return torch.randn(n, 8, generator=g) @ mix.T


def _heldout_mi(beta: float, mode: str):
    """Train encoder (8 -> 4, tanh) + noise + linear head to predict x_0 with beta·I(X; Z) added,
    then estimate I(X; Z) on 4,096 fresh samples passed through the trained encoder and noise."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(8, 4), nn.Tanh())
    model = nn.Sequential(enc, Noise(), nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    reg = MIRegularizer(
        model,
        x="input",
        z="1",
        beta=beta,
        mode=mode,
        critic="separable",
        hidden=(32,),
        embed_dim=16,
        lr=5e-3,
        estimator="mine",
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        x = _source(128, g)
        loss = F.mse_loss(model(x), x[:, :1]) + reg()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        x = _source(4096, g)
        z = enc(x) + SIGMA * torch.randn(4096, 4, generator=g)
    return estimate_mi(
        x.numpy(), z.numpy(), hidden=(64,), max_steps=300, batch_size=256, device="cpu", seed=0
    )


@pytest.mark.slow
def test_minimize_lowers_and_maximize_raises_heldout_mi():
    base = _heldout_mi(0.0, "minimize")
    low = _heldout_mi(1.0, "minimize")
    high = _heldout_mi(1.0, "maximize")
    # each stderr is the spread of the read-out over 8 held-out batches of 256 (observed 0.02-0.03
    # nats); the differences observed with these seeds are ~0.2-0.3 nats, > 6 combined stderrs.
    # Requiring 4 combined stderrs keeps the conclusion well clear of read-out noise.
    for other, direction in ((low, -1.0), (high, 1.0)):
        se = math.hypot(base.stderr, other.stderr)
        assert math.isfinite(se) and se > 0
        assert direction * (other.mi - base.mi) > 4 * se, (base.mi, other.mi, se)


# ---------------------------------------------------------------------------------- 6. bad input
def test_unknown_module_name_lists_close_names():
    with pytest.raises(ValueError, match=r"no submodule named 'enc\.fc3' in Named; closest: .*enc\.fc2"):
        MIRegularizer(Named(), x="input", z="enc.fc3", estimator="mine")


def test_batch_size_mismatch():
    model = Named()
    reg = MIRegularizer(model, x=None, z="enc.fc2", estimator="mine")
    model(torch.randn(8, 5))
    with pytest.raises(
        ValueError, match=r"different batch sizes: 7 \(x passed at call time\) and 8 \(z = 'enc\.fc2'\)"
    ):
        reg(x=torch.randn(7, 3))


def test_call_before_the_forward_pass():
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", hidden=(8,), estimator="mine")
    with pytest.raises(ValueError, match=r"run the model's forward pass before calling the regularizer"):
        reg()
    model(torch.randn(8, 5))
    reg()
    with pytest.raises(ValueError, match=r"'input' has not been captured since the last regularizer call"):
        reg()  # once per forward pass


def test_nan_and_inf_in_captured_activations():
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", hidden=(8,), estimator="mine")
    x = torch.randn(8, 5)
    x[2, 1] = float("nan")
    model(x)
    with pytest.raises(ValueError, match=r"x \(x = 'input'\) contains NaN or Inf"):
        reg()
    with torch.no_grad():
        model.enc.fc2.bias[0] = float("inf")
    model(torch.randn(8, 5))
    with pytest.raises(ValueError, match=r"z \(z = 'enc\.fc2'\) contains NaN or Inf"):
        reg()


def test_batch_of_one():
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", estimator="mine")
    model(torch.randn(1, 5))
    with pytest.raises(ValueError, match=r"batch of 1 sample cannot form marginal pairs"):
        reg()


def test_bad_settings():
    with pytest.raises(ValueError, match=r"mode must be 'minimize' or 'maximize', got 'max'"):
        MIRegularizer(Named(), z="enc.fc2", mode="max", estimator="mine")
    with pytest.raises(ValueError, match=r"unknown estimator 'mien'; choose from \[.*'mine'"):
        MIRegularizer(Named(), z="enc.fc2", estimator="mien")
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0"):
        MIRegularizer(Named(), z="enc.fc2", beta=float("nan"), estimator="mine")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"critic": "bad"}, r"critic must be one of \['concat', 'separable'\], an nn.Module or a factory"),
        ({"critic": 3}, r"critic must be one of .* got 3"),
        ({"hidden": (16, 0)}, r"every hidden width must be a positive integer, got 0"),
        ({"hidden": 16}, r"hidden must be a sequence of layer widths, got 16"),
        ({"embed_dim": -3}, r"embed_dim must be a positive integer, got -3"),
        ({"marginals": "given"}, r"marginals must be 'shuffle', 'all' or None, got 'given'"),
        ({"ema_rate": 0.0}, r"ema_rate must lie in \(0, 1\], got 0.0"),
        ({"tau": float("nan")}, r"tau must be positive, got nan"),
        ({"lr": 0.0}, r"lr must be a positive number, got 0.0"),
        ({"warmup_steps": -1}, r"warmup_steps must be an integer >= 0, got -1"),
        ({"seed": None}, r"seed must be an integer, got None"),
        ({"estimator": "club", "gather_marginals": True}, r"'club' does not support gather_marginals=True"),
        ({"estimator": "club", "adaptive_clip": True}, r"'club' does not support adaptive_clip=True"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, message):
    """Every argument is checked when the regularizer is made, before any batch (the critic itself
    is built from the first batch's dims)."""
    with pytest.raises(ValueError, match=message):
        MIRegularizer(Named(), x="input", z="enc.fc2", **kwargs)


# --------------------------------------------------------------------------- 7. metrics, warm-up
def test_metrics_are_floats_consistent_with_the_term():
    model = _mlp(torch.float32)
    reg = MIRegularizer(model, x="input", z="1", beta=BETA, mode="maximize", hidden=(16,), lr=1e-2)
    for x in _batches(3, dtype=torch.float32):
        model(x)
        term = reg()
        term.backward()
    m = reg.metrics()
    assert {"mi", "joint_mean", "log_partition", "beta"} <= set(m)
    assert all(type(v) is float and math.isfinite(v) for v in m.values())
    assert m["beta"] == BETA
    assert m["mi"] != 0.0
    assert term.item() == pytest.approx(-BETA * m["mi"], rel=1e-6)
    # the DV read-out is E_P[T] - log E_Q[exp T] (float32 parts: agree to ~1e-6)
    assert m["mi"] == pytest.approx(m["joint_mean"] - m["log_partition"], abs=1e-5)


@pytest.mark.parametrize("mode", ["minimize", "maximize"])
def test_warmup_grows_beta_linearly(mode):
    model = _mlp(torch.float32)
    beta, warmup = 2.0, 10
    reg = MIRegularizer(
        model,
        x="input",
        z="1",
        beta=beta,
        mode=mode,
        warmup_steps=warmup,
        lr=1e-2,
        hidden=(16,),
        estimator="mine",
    )
    nonzero = 0
    for k, x in enumerate(_batches(13, dtype=torch.float32)):
        want = beta * min(1.0, k / warmup)
        assert reg.current_beta() == pytest.approx(want, rel=1e-12, abs=0)
        model(x)
        term = reg()
        term.backward()
        mi = reg.metrics()["mi"]
        nonzero += mi != 0.0
        assert term.item() == pytest.approx(SIGN[mode] * want * mi, rel=1e-6, abs=0)
    assert nonzero >= 10  # the critic left zero after its first step: the scaling is really checked
    assert reg.current_beta() == beta


def test_metrics_beta_is_the_beta_of_the_latest_term():
    """During warm-up, metrics()["beta"] should be the weight applied to the term just returned."""
    model = _mlp(torch.float32)
    reg = MIRegularizer(
        model, x="input", z="1", beta=2.0, warmup_steps=10, lr=1e-2, hidden=(16,), estimator="mine"
    )
    for k, x in enumerate(_batches(4, dtype=torch.float32)):
        used = reg.current_beta()
        model(x)
        reg().backward()
        assert reg.metrics()["beta"] == pytest.approx(used), k


# ----------------------------------------------------------------------------- 8. adaptive clip
@pytest.mark.parametrize("beta, clipped", [(200.0, True), (1e-3, False)])
def test_adaptive_clip_gradient(beta, clipped):
    model = _mlp()
    kw = dict(x="input", z="1", beta=beta, estimator="nwj", hidden=(16,), lr=1e-2)
    reg = MIRegularizer(model, **kw, adaptive_clip=True)
    batches = _batches(3)
    target = torch.randn(32, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for x in batches[:2]:  # warm the critic through the explicit path (no task loss needed)
        model(x)
        reg.loss()
        reg.critic_step()
    model.zero_grad(set_to_none=True)

    x = batches[2]
    before, gen = copy.deepcopy(reg.estimator), _generator_copy(reg)
    task = F.mse_loss(model(x), target)
    term = reg(task_loss=task)
    params = list(model.parameters())
    g_u = torch.autograd.grad(task, params, retain_graph=True)
    ref = before(x, _hidden(model, x), generator=gen)
    g_m = torch.autograd.grad(beta * ref.objective, params, allow_unused=True)
    g_m = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_m, strict=True)]
    norm_u = torch.sqrt(sum((g**2).sum() for g in g_u))
    norm_m = torch.sqrt(sum((g**2).sum() for g in g_m))
    scale = torch.minimum(norm_u, norm_m) / norm_m
    assert (float(scale) < 0.5) if clipped else (float(scale) == 1.0)  # the case is what it claims

    term.backward()
    assert reg.critic_steps == 3
    # the regularizer sums the squared gradients in float32 (g.float()), so its scale carries
    # float32 rounding, ~1e-7 relative, even for this float64 model: checked at 1e-6
    for p, g in zip(params, g_m, strict=True):
        got = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(got, scale * g, rtol=1e-6, atol=1e-12)


def test_adaptive_clip_updates_mine_ema_once_per_call():
    """Each regularizer call folds its batch into MINE's moving average once, as without clipping."""
    counts = []
    for clip in (False, True):
        model = _mlp()
        reg = MIRegularizer(model, x="input", z="1", estimator="mine", hidden=(16,), adaptive_clip=clip)
        x = _batches(1)[0]
        out = model(x)
        reg(task_loss=out.pow(2).mean()) if clip else reg()
        counts.append(int(reg.estimator.ema.steps))
    assert counts == [1, 1]


def test_adaptive_clip_needs_the_task_loss():
    model = _mlp()
    reg = MIRegularizer(model, x="input", z="1", adaptive_clip=True, estimator="mine")
    model(_batches(1)[0])
    with pytest.raises(ValueError, match=r"adaptive_clip=True needs the task loss: reg\(task_loss=loss\)"):
        reg()


def test_club_minimizes_the_upper_bound_and_fits_q():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    reg = MIRegularizer(model, x="input", z="2", beta=0.5, estimator="club", lr=1e-2)
    x = torch.randn(32, 4)
    model(x)
    reg().backward()  # first call builds q and takes one q step
    model.zero_grad()

    q_before = copy.deepcopy(reg.estimator)
    z = model(x)  # the forward pass reg() reads (every forward with gradients is captured)
    expected = torch.autograd.grad(0.5 * q_before(x, z), list(model.parameters()), retain_graph=True)
    nll_before = float(q_before.learning_loss(x, z).detach())
    model.zero_grad()
    term = reg()
    assert float(term.detach()) == pytest.approx(0.5 * float(q_before(x, z).detach()), rel=1e-5)
    term.backward()
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert reg.critic_steps == 2
    assert float(reg.estimator.learning_loss(x, z).detach()) < nll_before  # q moved toward the data


def test_club_metrics_are_its_own_and_finite():
    """CLUB reports the bound and q's log-likelihood, no NaN stand-ins for MINE's parts."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    reg = MIRegularizer(model, x="input", z="2", beta=0.5, estimator="club", lr=1e-2, hidden=(16,))
    x = torch.randn(32, 4)
    model(x)
    reg().backward()
    q = copy.deepcopy(reg.estimator)
    z = model(x)
    term = reg()
    m = reg.metrics()
    assert list(m) == ["mi", "log_likelihood", "beta", "critic_steps"]
    assert all(type(v) is float and math.isfinite(v) for v in m.values())
    with torch.no_grad():
        assert m["mi"] == pytest.approx(float(q(x, z)), rel=1e-6)
        assert m["log_likelihood"] == pytest.approx(-float(q.learning_loss(x, z)), rel=1e-6)
    assert term.item() == pytest.approx(0.5 * m["mi"], rel=1e-6)
    term.backward()
    assert reg.metrics()["critic_steps"] == 2.0


def test_mine_metrics_keys():
    model = _mlp(torch.float32)
    reg = MIRegularizer(model, x="input", z="1", hidden=(16,), estimator="mine")
    model(_batches(1, dtype=torch.float32)[0])
    reg().backward()
    assert list(reg.metrics()) == ["mi", "objective", "joint_mean", "log_partition", "beta", "critic_steps"]


def test_club_refuses_to_maximize():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="upper bound, for mode='minimize' only"):
        MIRegularizer(model, x="input", z="0", estimator="club", mode="maximize")


def test_critic_adam_steps_exactly_as_optimizer_step() -> None:
    """The critic's direct fused update equals torch.optim.Adam.step bit for bit, across a
    checkpoint round trip (which replaces Adam's state tensors)."""
    from mine_reg.critic_optimizer import CriticOptimizer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    twin = copy.deepcopy(net)
    ours = CriticOptimizer(list(net.parameters()), lr=1e-2)
    reference = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=True)
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        data = torch.randn(16, 5, generator=gen)
        net(data).square().mean().backward()  # ours steps inside this backward
        twin(data).square().mean().backward()
        reference.step()
        reference.zero_grad(set_to_none=True)
        if i == 2:
            ours.load_state_dict(copy.deepcopy(ours.state_dict()))
        for a, b in zip(net.parameters(), twin.parameters(), strict=True):
            assert torch.equal(a, b)
    assert ours.steps == 6
    assert ours._adam_state is not None  # the direct path ran


def test_nan_in_inputs_is_caught_by_the_deferred_check_before_the_critic_or_average_change():
    """MINE skips the up-front finite test of x and z once built (its batch statistics are read
    anyway); a NaN must still be named, and must leave the critic and its moving average as
    they were."""
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", hidden=(8,), estimator="mine", extra_critic_steps=1)
    model(torch.randn(8, 5))
    reg().backward()
    assert reg._scores_checked  # the deferred path is the one under test
    weights = [p.detach().clone() for p in reg.critic_parameters()]
    ema = (float(reg.estimator.ema.log_ema), reg.estimator.ema.steps)
    x = torch.randn(8, 5)
    x[3, 0] = float("nan")
    model(x)
    with pytest.raises(ValueError, match=r"x \(x = 'input'\) contains NaN or Inf"):
        reg()
    assert all(torch.equal(w, p) for w, p in zip(weights, reg.critic_parameters(), strict=True))
    assert (float(reg.estimator.ema.log_ema), reg.estimator.ema.steps) == ema


def test_a_diverged_critic_is_named_when_the_inputs_are_finite():
    model = Named()
    reg = MIRegularizer(model, x="input", z="enc.fc2", hidden=(8,), estimator="mine")
    model(torch.randn(8, 5))
    reg().backward()
    with torch.no_grad():
        reg.critic_parameters()[-1].fill_(float("inf"))  # the last layer's bias
    model(torch.randn(8, 5))
    with pytest.raises(
        ValueError, match=r"scores are not finite .* though x and z are finite: the critic diverged"
    ):
        reg()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_critic_optimizer_skips_a_step_with_non_finite_gradients(bad):
    from mine_reg.critic_optimizer import CriticOptimizer

    params = [nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(4, dtype=torch.float64))]
    opt = CriticOptimizer(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    if bad is not None:
        params[1].grad[2] = bad
    before = [p.detach().clone() for p in params]
    opt.step()
    assert all(p.grad is None for p in params)
    if bad is None:
        assert opt.steps == 1 and all(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    else:
        assert opt.steps == 0 and all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
