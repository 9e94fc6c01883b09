"""Hook plumbing: read the tensors that define X and Z out of any model's forward pass.

A *spec* names a tensor:

- ``"input"``: the model's own input (its first positional argument);
- ``"encoder.fc2"``: a submodule's output (dotted name, as in ``model.named_modules()``); it must
  be a tensor: a tuple, list or dict output needs a callable to pick one part;
- ``"encoder.fc2:input"``: that submodule's input (its first positional argument);
- a callable ``f``: applied to the model's input, ``f(input)``, e.g. slicing a latent code out of
  a generator's input (with several positional arguments, ``f`` receives their tuple);
- a pair ``(name, f)``: ``f`` applied to what the name reads, whole: the module's output as it is
  returned (a tensor, a tuple, a dict ...), so ``("lstm", lambda out: out[1][0][-1])`` reads an
  ``nn.LSTM``'s last-layer ``h_n``; for ``"name:input"`` (and ``"input"``), the input when the
  module is called with exactly one positional argument, else the tuple of them;
- a triple ``(name, f_or_None, pattern)``: then the einops ``pattern`` rearranges the tensor,
  e.g. ``"s b d -> b (s d)"`` for a seq-first layer; the result's dim 0 must be the batch.
  ``nn.MultiheadAttention``, ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` are seq-first ([S, B, ...])
  unless built with ``batch_first=True``.

Names resolve on the unwrapped model, so ``module.`` (DDP, Accelerate) and ``_orig_mod.``
(torch.compile) prefixes may be given or left out.

A :class:`Tap` keeps every capture since its last :meth:`Tap.take`: several forward passes
before one read (gradient accumulation) are read together, joined along dim 0 in call order. A
module run more than once within one forward pass of the model (shared weights) is refused.
"""

from __future__ import annotations

import difflib
import math
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from einops import EinopsError, rearrange
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "Spec",
    "Tap",
    "unwrap_model",
    "find_module",
    "parse_spec",
    "check_finite",
    "read_input",
    "read_mean_std",
    "check_mean_std",
    "read_pair",
    "check_pair",
    "check_inputs_finite",
]

Reader = Callable[[Any], Any]
Spec = str | Reader | tuple[str, Reader | None] | tuple[str, Reader | None, str]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Captures kept without a take() before a tap warns that they (and their graphs) pile up.
MANY_CAPTURES = 100


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


def parse_spec(spec: Spec, label: str) -> tuple[str, Reader | None, str | None]:
    """(name, callable or None, einops pattern or None) of a spec; ValueError for anything else."""
    if isinstance(spec, str):
        return spec, None, None
    if callable(spec):
        return "input", spec, None
    parts = spec if isinstance(spec, tuple) and len(spec) in (2, 3) else (None, None, None)
    name, fn, pattern = parts if len(parts) == 3 else (*parts, None)
    if (
        not isinstance(name, str)
        or not (fn is None or callable(fn))
        or not (pattern is None or (isinstance(pattern, str) and "->" in pattern))
    ):
        raise ValueError(
            f"{label}: a spec is a name, a callable, (name, callable) or (name, callable or None, "
            f"einops pattern such as 's b d -> b (s d)'); got {spec!r}"
        )
    return name, fn, pattern


# ------------------------------------------------------------------------ describing values
def _parts(value: Any) -> list[tuple[Any, Any]] | None:
    """(key or index, part) of a dict, tuple or list; None for anything else."""
    if isinstance(value, dict):
        return list(value.items())
    return list(enumerate(value)) if isinstance(value, tuple | list) else None


def _describe(value: Any, path: str, depth: int = 0) -> list[str]:
    """One line per part of a (nested) tuple / list / dict output: its index or key, type, shape."""
    if isinstance(value, Tensor):
        return [f"{path}: Tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"]
    items = _parts(value)
    if items is None or depth >= 2:
        return [f"{path}: {type(value).__name__}"]
    return [line for key, part in items for line in _describe(part, f"{path}[{key!r}]", depth + 1)]


def _first_tensor_path(value: Any, path: str) -> str | None:
    if isinstance(value, Tensor):
        return path
    for key, part in _parts(value) or []:
        found = _first_tensor_path(part, f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def _seq_first(module: nn.Module) -> bool:
    return getattr(module, "batch_first", True) is False


def _seq_first_hint(module: nn.Module, name: str, label: str) -> str:
    return (
        f" {type(module).__name__} {name!r} is seq-first (batch_first=False): the batch is dim 1 "
        f"of its sequences ([S, B, ...]); put the batch first with a pattern, e.g. "
        f"{label}=({name!r}, lambda out: out[0], 's b d -> b (s d)'), or build it with batch_first=True."
    )


# ------------------------------------------------------------------------------------- Tap
class _Pass:
    """A root module's forward pass in progress, shared by every tap on that root."""

    __slots__ = ("finished", "refused")

    def __init__(self) -> None:
        self.finished = self.refused = False


_PASSES: weakref.WeakKeyDictionary[nn.Module, _Pass] = weakref.WeakKeyDictionary()


class Tap:
    """Captures one spec's value on forward passes of ``model`` and keeps every capture since
    the last :meth:`take` (in call order).

    ``label`` names the variable in error messages (``"x"``, ``"z"``). With ``grad_only`` a
    forward pass run without gradients (``torch.no_grad()``, ``torch.inference_mode()``) is not
    captured, only counted (:attr:`skipped`), so a validation pass does not enter the next read.
    """

    def __init__(self, model: nn.Module, spec: Spec, label: str, *, grad_only: bool = False) -> None:
        self.label, self.spec, self.grad_only = label, spec, grad_only
        self.name, self.fn, self.pattern = parse_spec(spec, label)
        self.root = unwrap_model(model)
        module_name, _, part = self.name.partition(":")
        if part not in ("", "input", "output"):
            raise ValueError(f"{label}: {self.name!r}: the part after ':' must be 'input' or 'output'")
        if module_name == "input":
            self.module, self.module_name, want_input = self.root, "input", True
        else:
            self.module, self.module_name = find_module(self.root, module_name), module_name
            want_input = part == "input"
        self.where = f"{label} = {self.name!r}"
        self.captures: list[Any] = []
        self.skipped = 0  # forward passes left out for running without gradients
        self._pending: list[Any] | None = None  # captures of the root forward pass in progress
        self._warned = False
        # The root's forward passes are marked, so a capture counts only once its pass has
        # finished (a pass that raised leaves nothing behind, in any tap on that root) and a
        # shared module is spotted. Every tap's check runs (prepended) before any tap commits.
        self._pass = _PASSES.setdefault(self.root, _Pass())
        on_root = self.module is self.root
        self.handles: list[RemovableHandle] = [
            self.module.register_forward_pre_hook(self._enter_and_capture if on_root else self._pre_hook)
            if want_input
            else self.module.register_forward_hook(self._hook)
        ]
        if not on_root:
            self.handles.append(self.root.register_forward_pre_hook(self._enter))
        self.handles.append(self.root.register_forward_hook(self._check, prepend=True))
        self.handles.append(self.root.register_forward_hook(self._commit, always_call=True))

    @property
    def fired(self) -> bool:
        """Whether anything was captured since the last take."""
        return self.count > 0

    @property
    def count(self) -> int:
        """Captures kept since the last take (with those of a forward pass in progress)."""
        return len(self.captures) + (len(self._pending) if self._pending else 0)

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        self._capture(args, True)

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._capture(output, False)

    def _enter_and_capture(self, module: nn.Module, args: tuple) -> None:
        self._enter(module, args)
        self._capture(args, True)

    def _enter(self, module: nn.Module, args: tuple) -> None:
        self._pending = []
        self._pass.finished = self._pass.refused = False

    def _check(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._pass.finished = True
        pending = self._pending
        if pending is not None and len(pending) > 1:
            self._pass.refused = True
            raise ValueError(
                f"{self.where}: module {self.module_name!r} ({type(self.module).__name__}) ran "
                f"{len(pending)} times in one forward pass of {type(self.root).__name__}, so there is "
                "no single tensor to read: give each use its own submodule, or read the tensor from "
                f"a parent module's output with a callable, {self.label}=('parent', lambda out: ...)"
            )

    def _commit(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Runs after every check, also when the forward pass (or a check) raised: keeps the
        pass's captures only if it finished and no tap refused it."""
        pending, self._pending = self._pending, None
        if pending and self._pass.finished and not self._pass.refused:
            self.captures += pending

    def _capture(self, value: Any, is_input: bool) -> None:
        if self.grad_only and not torch.is_grad_enabled():
            self.skipped += 1
            return
        value = self._read(value, is_input)
        (self.captures if self._pending is None else self._pending).append(value)
        if not self._warned and self.count >= MANY_CAPTURES:
            self._warned = True
            warnings.warn(
                f"{self.where} holds {self.count} captures (each with its autograd graph) "
                "since the last regularizer call: call the regularizer after the forward passes it "
                "should see, and run the others under torch.no_grad()",
                stacklevel=2,
            )

    def _read(self, value: Any, is_input: bool) -> Any:
        kind = "input" if is_input else "output"
        if is_input:
            if not value:
                raise ValueError(f"{self.where}: the module was called without a positional argument")
            value = value[0] if self.fn is None or len(value) == 1 else value
        if self.fn is not None:
            value = self.fn(value)
        elif not isinstance(value, Tensor):
            raise self._not_a_tensor(value, kind)
        return value if self.pattern is None else self._rearrange(value)

    def _not_a_tensor(self, value: Any, kind: str) -> ValueError:
        var = "inp" if kind == "input" else "out"
        lines = "; ".join(_describe(value, var))
        pick = _first_tensor_path(value, var) or f"{var}[...]"
        hint = _seq_first_hint(self.module, self.module_name, self.label) if _seq_first(self.module) else ""
        return ValueError(
            f"{self.where}: the {kind} is a {type(value).__name__}, not a tensor: {lines}. Pick one "
            f"part with a callable spec, e.g. {self.label}=({self.name!r}, lambda {var}: {pick}).{hint}"
        )

    def _rearrange(self, value: Any) -> Tensor:
        if not isinstance(value, Tensor):
            raise ValueError(
                f"{self.where}: the pattern {self.pattern!r} needs a tensor; got a {type(value).__name__}"
                + ("" if self.fn is not None else ": add a callable that picks one")
            )
        try:
            return rearrange(value, self.pattern)
        except EinopsError as err:
            raise ValueError(
                f"{self.where}: the pattern {self.pattern!r} does not fit a tensor of shape "
                f"{list(value.shape)}: {err}"
            ) from None

    # ------------------------------------------------------------------ reading
    def take(self) -> Any:
        """Every capture since the last take, then forgotten: a single capture as the spec gave it
        (a tensor, or whatever the callable returned, e.g. a tuple of tensors); several joined
        along dim 0 in call order (tuples part by part). ValueError if nothing was captured."""
        captures, skipped = self.captures + (self._pending or []), self.skipped
        self.drop()
        if not captures:
            if skipped:
                raise ValueError(
                    f"{self.where} was not captured: the {skipped} forward pass(es) since the last "
                    "regularizer call ran without gradients (torch.no_grad() / inference_mode); "
                    "run the training forward pass with gradients before calling the regularizer"
                )
            raise ValueError(
                f"{self.where} has not been captured since the last regularizer call: run the "
                "model's forward pass before calling the regularizer"
            )
        return captures[0] if len(captures) == 1 else _join(captures, self.where)

    def drop(self) -> None:
        """Forget every capture (and the count of skipped passes)."""
        self.captures, self.skipped, self._warned = [], 0, False
        if self._pending:  # read inside the root's forward pass (a loss computed in forward)
            self._pending = []

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.drop()


def _join(captures: list[Any], where: str) -> Any:
    """Captures of several forward passes along dim 0: tensors, or tuples / lists of tensors."""
    first = captures[0]
    if isinstance(first, Tensor) and all(isinstance(c, Tensor) for c in captures):
        shapes = [tuple(c.shape) for c in captures]
        if any(len(s) == 0 for s in shapes) or len({s[1:] for s in shapes}) > 1:
            raise ValueError(
                f"{where}: the {len(captures)} forward passes since the last regularizer call gave "
                f"shapes {[list(s) for s in shapes]}, which do not join along the batch (dim 0)"
            )
        return torch.cat(captures)
    if isinstance(first, tuple | list) and all(
        isinstance(c, tuple | list) and len(c) == len(first) for c in captures
    ):
        return tuple(_join([c[i] for c in captures], f"{where}[{i}]") for i in range(len(first)))
    raise ValueError(
        f"{where}: the {len(captures)} forward passes since the last regularizer call gave "
        f"{sorted({type(c).__name__ for c in captures})}, which cannot be joined: a spec should "
        "give a tensor (or a tuple of tensors)"
    )


# --------------------------------------------------------------------------- reading inputs
def check_finite(t: Tensor, where: str) -> None:
    """ValueError naming ``where`` if ``t`` holds a NaN or an Inf. One reduction in the common
    case: a finite sum has only finite terms; a sum that is not finite (a NaN, an Inf, or finite
    values whose sum overflows) is checked element by element."""
    if t.is_floating_point() and bool(torch.isfinite(t.sum())):
        return
    if not torch.isfinite(t).all():
        raise ValueError(f"{where} contains NaN or Inf")


def check_inputs_finite(x: Tensor, z: Tensor, taps: dict[str, Tap]) -> None:
    """ValueError naming x or z (``taps``) if it holds a NaN or an Inf."""
    check_finite(x.detach(), f"x ({_where(taps, 'x')})")
    check_finite(z.detach(), f"z ({_where(taps, 'z')})")


def _where(taps: dict[str, Tap], label: str) -> str:
    return taps[label].where if label in taps else f"{label} passed at call time"


def _embedding_names(tap: Tap | None) -> list[str]:
    if tap is None:
        return []
    return [n for n, m in tap.root.named_modules() if n and isinstance(m, nn.Embedding)]


def _not_floating(value: Tensor, label: str, tap: Tap | None) -> ValueError:
    where = tap.where if tap is not None else f"{label} passed at call time"
    dtype = str(value.dtype).removeprefix("torch.")
    if value.is_complex():
        return ValueError(f"{where} is a complex tensor ({dtype}); MI needs real floating values")
    names = _embedding_names(tap)
    embed = names[0] if names else "embed"
    labels = (
        f"; for class labels pass one-hot floats, {label}=F.one_hot(labels, num_classes).float()"
        if tap is None
        else ""
    )
    return ValueError(
        f"{where} is an integer tensor ({dtype}): token ids or class indices are not continuous "
        f"values. Read the embedding layer's output instead, e.g. {label}={embed!r}"
        + (f" (embeddings in the model: {', '.join(names[:5])})" if len(names) > 1 else "")
        + labels
    )


def _rows(value: Any, label: str, tap: Tap | None, where: str) -> Tensor:
    """``value`` as a floating [B, D] tensor ([B, ...] flattened per sample); ValueError for a
    non-tensor, a scalar, or an integer / bool tensor (ids or labels)."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{label} must be a tensor, got {type(value).__name__} ({where})")
    if value.ndim == 0:
        raise ValueError(f"{label} must have a batch dimension, got a scalar ({where})")
    if not value.is_floating_point():
        raise _not_floating(value, label, tap)
    return rearrange(value, "b ... -> b (...)") if value.ndim != 2 else value


def _value(taps: dict[str, Tap], label: str, given: Any) -> Any:
    tap = taps.get(label)
    if given is not None and tap is not None:
        raise ValueError(f"{label} is read from the model by a hook; do not pass {label}= as well")
    if given is None and tap is None:
        raise ValueError(f"{label} has no hook (spec None): pass it when calling, reg({label}=tensor)")
    return given if tap is None else tap.take()


def read_input(taps: dict[str, Tap], label: str, given: Any) -> Tensor:
    """The batch for ``label`` ("x" or "z"): its tap's captures (several forward passes joined
    along dim 0), or ``given`` when it has no tap, as a floating [B, D] tensor ([B, ...] flattened
    per sample). ValueError if both or neither are there, for a tuple (a callable must pick one
    tensor) or another non-tensor, a scalar, or an integer / bool tensor (ids or labels)."""
    value, where = _value(taps, label, given), _where(taps, label)
    if isinstance(value, tuple | list):
        raise ValueError(
            f"{where} gave a {type(value).__name__} of {len(value)} parts; the regularizer needs one "
            "tensor: a callable spec must pick one, e.g. (name, lambda out: out[0])"
        )
    return _rows(value, label, taps.get(label), where)


def read_mean_std(taps: dict[str, Tap], label: str, given: Any) -> tuple[Tensor, Tensor]:
    """The (mean, std) pair of a Gaussian layer for ``label``, each a floating [B, K] tensor
    ([B, ...] flattened per sample), for the exact-conditional estimators. ValueError unless the
    capture (or ``given``) is a pair of tensors of one shape."""
    value, where = _value(taps, label, given), _where(taps, label)
    if not (isinstance(value, tuple | list) and len(value) == 2):
        got = f"a {type(value).__name__}" + (
            f" of {len(value)} parts" if isinstance(value, tuple | list) else ""
        )
        raise ValueError(
            f"{where} gave {got}; an exact-conditional estimator needs the Gaussian layer's (mean, "
            "std): a spec whose capture is that pair, e.g. z=('z:input', lambda args: args) for a "
            "layer called as layer(mean, std), or pass reg(z=(mean, std))"
        )
    mean, std = (_rows(v, label, taps.get(label), where) for v in value)
    if mean.shape != std.shape:
        raise ValueError(
            f"{where}: mean and std must have one shape, got {tuple(mean.shape)} and {tuple(std.shape)}"
        )
    return mean, std


def read_pair(taps: dict[str, Tap], x: Any, z: Any, z_mean_std: bool = False) -> tuple[Tensor, Any]:
    """(x, z) by :func:`read_input` (z by :func:`read_mean_std` when ``z_mean_std``); ValueError if
    the x and z taps hold different numbers of captures (forward passes). Every capture is
    dropped, read or not."""
    try:
        if len(taps) == 2 and taps["x"].count and taps["z"].count and taps["x"].count != taps["z"].count:
            raise ValueError(
                f"{taps['x'].where} was captured {taps['x'].count} times and {taps['z'].where} "
                f"{taps['z'].count} times since the last regularizer call: x and z must come from "
                "the same forward passes"
            )
        return read_input(taps, "x", x), (read_mean_std if z_mean_std else read_input)(taps, "z", z)
    finally:
        for tap in taps.values():
            tap.drop()


def check_mean_std(mean: Tensor, std: Tensor, taps: dict[str, Tap]) -> None:
    """ValueError unless std > 0 everywhere (mean and std are checked finite by :func:`check_pair`
    and :func:`check_finite`)."""
    check_finite(std.detach(), f"std of z ({_where(taps, 'z')})")
    if not bool((std.detach() > 0).all()):
        raise ValueError(f"std of z ({_where(taps, 'z')}) must be positive everywhere")


def check_pair(
    x: Tensor, z: Tensor, taps: dict[str, Tap], dims: tuple[int, int] | None, finite: bool = True
) -> None:
    """ValueError unless x [B, dx] and z [B, dz] share B >= 2, are floating point, finite (tested
    only with ``finite``: one synchronizing reduction) and (if ``dims`` is set) have those feature
    sizes; messages name where each came from (``taps``)."""
    wx, wz = _where(taps, "x"), _where(taps, "z")
    if x.shape[0] != z.shape[0]:
        hints = "".join(
            _seq_first_hint(t.module, t.module_name, t.label)
            for t in taps.values()
            if t.pattern is None and _seq_first(t.module)
        )
        raise ValueError(
            f"x and z have different batch sizes: {x.shape[0]} ({wx}) and {z.shape[0]} ({wz}){hints}"
        )
    if x.shape[0] < 2:
        raise ValueError("a batch of 1 sample cannot form marginal pairs: MI needs batches of at least 2")
    # one synchronizing test for both: a finite total has only finite terms
    if not (
        x.is_floating_point()
        and z.is_floating_point()
        and (not finite or math.isfinite(float(x.detach().sum() + z.detach().sum())))
    ):
        check_inputs_finite(x, z, taps)
    if dims is not None and (x.shape[1], z.shape[1]) != dims:
        raise ValueError(
            f"x and z have {x.shape[1]} and {z.shape[1]} features per sample, but the critic was "
            f"built for {dims[0]} and {dims[1]}"
        )
