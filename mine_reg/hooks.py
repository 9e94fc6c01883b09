"""Hook plumbing: read the tensors that define X and Z out of any model's forward pass.

A *spec* names a tensor:

- ``"input"``: the model's own (first positional) input;
- ``"encoder.fc2"``: a submodule's output (dotted name, as in ``model.named_modules()``);
- ``"encoder.fc2:input"``: that submodule's (first positional) input;
- a callable ``f``: applied to the model's input (``f(input)``), e.g. slicing a latent code out
  of a generator's input;
- a pair ``("encoder.fc2", f)``: ``f`` applied to the tensor the first element names.

Names resolve on the unwrapped model, so ``module.`` (DDP, Accelerate) and ``_orig_mod.``
(torch.compile) prefixes may be given or left out.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Spec", "Tap", "unwrap_model", "find_module", "check_finite", "read_input", "check_pair"]

Spec = str | Callable[[Tensor], Tensor] | tuple[str, Callable[[Tensor], Tensor]]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name.replace("._orig_mod.", ".").replace(".module.", ".") if name else name


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (wrapper prefixes ignored); ValueError listing close names."""
    root = unwrap_model(model)
    modules = {_strip(n): m for n, m in root.named_modules() if n}
    key = _strip(name)
    if key in modules:
        return modules[key]
    close = difflib.get_close_matches(key, list(modules), n=5, cutoff=0.4)
    hint = f"closest: {', '.join(close)}" if close else f"available: {', '.join(list(modules)[:20])}"
    raise ValueError(f"no submodule named {name!r} in {type(root).__name__}; {hint}")


def _first_tensor(args: Any, where: str) -> Tensor:
    value = args[0] if isinstance(args, tuple | list) and args else args
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    if not isinstance(value, Tensor):
        raise ValueError(f"{where} is not a tensor (got {type(value).__name__}); pass a callable spec")
    return value


class Tap:
    """Captures one spec's tensor on every forward pass of ``model``; ``value`` holds the latest.

    ``label`` names the variable in error messages (``"x"``, ``"z"``).
    """

    def __init__(self, model: nn.Module, spec: Spec, label: str) -> None:
        self.label, self.spec = label, spec
        self.value: Tensor | None = None
        self.fired = False
        name, fn = (
            (spec, None) if isinstance(spec, str) else (spec if isinstance(spec, tuple) else ("input", spec))
        )
        if not isinstance(name, str) or (fn is not None and not callable(fn)):
            raise ValueError(f"{label}: a spec is a name, a callable, or (name, callable); got {spec!r}")
        self.name, self.fn = name, fn
        root = unwrap_model(model)
        module_name, _, part = name.partition(":")
        if part not in ("", "input", "output"):
            raise ValueError(f"{label}: {name!r}: the part after ':' must be 'input' or 'output'")
        if module_name == "input":
            self.module, want_input = root, True
        else:
            self.module, want_input = find_module(root, module_name), part == "input"
        self.where = f"{label} = {name!r}"
        self.handle: RemovableHandle = (
            self.module.register_forward_pre_hook(self._pre_hook)
            if want_input
            else self.module.register_forward_hook(self._hook)
        )

    def _store(self, tensor: Any, kind: str) -> None:
        value = _first_tensor(tensor, f"{self.where} ({kind})")
        self.value = self.fn(value) if self.fn is not None else value
        self.fired = True

    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        self._store(args, "input")

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._store(output, "output")

    def take(self) -> Tensor:
        """The captured tensor; ValueError if the hook has not fired since the last take."""
        if not self.fired or self.value is None:
            raise ValueError(
                f"{self.where} has not been captured since the last regularizer call: run the "
                "model's forward pass before calling the regularizer"
            )
        value, self.value, self.fired = self.value, None, False
        return value

    def remove(self) -> None:
        self.handle.remove()
        self.value, self.fired = None, False


def check_finite(t: Tensor, where: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{where} contains NaN or Inf")


def _where(taps: dict[str, Tap], label: str) -> str:
    return taps[label].where if label in taps else f"{label} passed at call time"


def read_input(taps: dict[str, Tap], label: str, given: Any) -> Tensor:
    """The batch for ``label`` ("x" or "z"): its tap's capture, or ``given`` when it has no tap, as
    a floating [B, D] tensor ([B, ...] flattened per sample; an integer [B] as float [B, 1]).
    ValueError if both or neither are there, or for a non-tensor or a scalar."""
    tap = taps.get(label)
    if given is not None and tap is not None:
        raise ValueError(f"{label} is read from the model by a hook; do not pass {label}= as well")
    if given is None and tap is None:
        raise ValueError(f"{label} has no hook (spec None): pass it when calling, reg({label}=tensor)")
    value = given if tap is None else tap.take()
    if not isinstance(value, Tensor):
        raise ValueError(f"{label} must be a tensor, got {type(value).__name__}")
    if value.ndim == 0:
        raise ValueError(f"{label} must have a batch dimension, got a scalar")
    if not value.is_floating_point():
        value = value.float()
    return rearrange(value, "b ... -> b (...)") if value.ndim != 2 else value


def check_pair(x: Tensor, z: Tensor, taps: dict[str, Tap], dims: tuple[int, int] | None) -> None:
    """ValueError unless x [B, dx] and z [B, dz] share B >= 2, are finite and (if ``dims`` is set)
    have those feature sizes; messages name where each came from (``taps``)."""
    wx, wz = _where(taps, "x"), _where(taps, "z")
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"x and z have different batch sizes: {x.shape[0]} ({wx}) and {z.shape[0]} ({wz})")
    if x.shape[0] < 2:
        raise ValueError("a batch of 1 sample cannot form marginal pairs: MI needs batches of at least 2")
    check_finite(x.detach(), f"x ({wx})")
    check_finite(z.detach(), f"z ({wz})")
    if dims is not None and (x.shape[1], z.shape[1]) != dims:
        raise ValueError(
            f"x and z have {x.shape[1]} and {z.shape[1]} features per sample, but the critic was "
            f"built for {dims[0]} and {dims[1]}"
        )
