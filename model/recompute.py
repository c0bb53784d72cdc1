"""Less memory for backward at unchanged numerics: cheap activations recomputed, and whole regions checkpointed.

Two tools, both exact (the backward pass runs the same kernels on bitwise the same values):

* :class:`RecomputeScope` (always on in training): inside ``with RecomputeScope():``, tensors registered with
  :func:`recomputable` are not kept for backward. Autograd keeps a recipe instead (a function and the tensors
  it reads), and the recipe is re-run when the backward pass reaches a node that saved the tensor. Only cheap
  recipes belong here (GroupNorm + ReLU, a slice, a concatenation, a bilinear resize): what they save in memory
  they cost in time, and a recipe whose inputs are not kept anyway saves nothing. The scope is ambient (a context
  variable, so one per thread): the model's functions take no scope, and :func:`recomputable` does nothing outside one.
* :func:`checkpoint` (``--checkpoint-learner``): a region's inputs are saved, its forward runs without a graph,
  and backward runs it again with one. Unlike ``torch.utils.checkpoint`` the inputs are saved through
  ``ctx.save_for_backward``, so what the region keeps is visible to saved-tensor accounting.
"""
from __future__ import annotations

import contextvars
import functools
import weakref
from typing import Any, Callable, Optional, Sequence

import torch

__all__ = ["RecomputeScope", "checkpoint", "recomputable", "recomputed"]

# the scope of this thread's current forward (DataParallel's replicas each enter their own in their forward)
_ACTIVE: contextvars.ContextVar[Optional["RecomputeScope"]] = contextvars.ContextVar("recompute_scope", default=None)


class _Recipe:
    """How to rebuild one registered tensor; ``inputs`` are the tensors the recipe reads (kept alive by it)."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: Sequence[Any], like: torch.Tensor) -> None:
        self.fn, self.inputs = fn, tuple(inputs)
        self.size, self.stride, self.offset = like.shape, like.stride(), like.storage_offset()
        self.autocast = _autocast_state(like.device.type)
        self.pending = 0  # tokens packed and not yet unpacked: while > 0 the rebuilt tensor is cached
        self._value: Optional[torch.Tensor] = None

    def value(self, cache: bool) -> torch.Tensor:
        """The rebuilt tensor (with the registered tensor's shape and strides)."""
        if self._value is not None:
            return self._value
        with torch.no_grad(), _autocast(self.autocast):
            value = self.fn(*(item.view_value(cache=False) if isinstance(item, _Token) else item
                              for item in self.inputs))
        if value.shape != self.size or value.stride() != self.stride:
            raise RuntimeError(f"recomputed tensor {tuple(value.shape)} / {value.stride()} differs from the one of "
                               f"the forward {tuple(self.size)} / {self.stride}")
        if cache or self.pending > 0:  # a token will still ask for it: keep it until the last one has
            self._value = value
        return value


class _Token:
    """What autograd keeps instead of a registered tensor (or a view of one)."""

    __slots__ = ("recipe", "size", "stride", "offset")

    def __init__(self, recipe: _Recipe, view: torch.Tensor) -> None:
        self.recipe = recipe
        self.size, self.stride = view.shape, view.stride()
        self.offset = view.storage_offset() - recipe.offset

    def view_value(self, cache: bool) -> torch.Tensor:
        """The view of the rebuilt tensor that this token stands for."""
        recipe = self.recipe
        base = recipe.value(cache)
        if self.size == recipe.size and self.stride == recipe.stride and self.offset == 0:
            return base
        return base.as_strided(self.size, self.stride, base.storage_offset() + self.offset)

    def unpack(self) -> torch.Tensor:
        """For autograd: the rebuilt view; the rebuilt tensor is cached until its last token is unpacked."""
        value = self.view_value(cache=True)
        self.recipe.pending -= 1
        if self.recipe.pending <= 0:
            self.recipe._value = None
        return value


class RecomputeScope:
    """``with RecomputeScope():`` the forward of a region; inside it, ``recomputable(t, fn, *inputs)`` (or
    ``scope.recomputable``) says that ``t == fn(*inputs)`` (bitwise) and that autograd should keep the recipe rather
    than ``t``. ``RecomputeScope(enabled=False)`` registers nothing: inside it, an enclosing scope is suspended.

    ``inputs`` may hold tensors, other registered tensors (their recipe is run first: chains of cheap steps keep
    only the first input) and plain values. ``fn`` must not close over tensors (they would be kept without
    being accounted for) and must rebuild ``t`` with the same shape and strides. A registered tensor must not be
    modified in place after registration. Views of a registered tensor (slices, reshapes) are rebuilt as views.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        # storage address -> (weak reference to the registered tensor, recipe): the scope must not keep the
        # tensor alive (the forward's peak would be that of keeping everything); a dead reference means the
        # address may now belong to another tensor
        self._recipes: dict[int, tuple[weakref.ref, _Recipe]] = {}
        self._hooks: Optional[torch.autograd.graph.saved_tensors_hooks] = None
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> "RecomputeScope":
        if self.enabled:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
            self._hooks.__enter__()
        self._token = _ACTIVE.set(self if self.enabled else None)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._token is not None
        _ACTIVE.reset(self._token)
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None
        self._recipes.clear()

    def recomputable(self, tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
        """Register ``tensor`` as ``fn(*inputs)``; returns ``tensor``."""
        if tensor.numel() == 0:
            return tensor
        resolved = [_Token(self._recipes[_key(item)][1], item) if isinstance(item, torch.Tensor) and
                    self.is_registered(item) else item for item in inputs]
        self._recipes[_key(tensor)] = (weakref.ref(tensor), _Recipe(fn, resolved, tensor))
        return tensor

    def is_registered(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is (a view of) a registered tensor that is still alive."""
        entry = self._recipes.get(_key(tensor)) if tensor.numel() > 0 else None
        if entry is None:
            return False
        registered = entry[0]()
        if registered is None or _key(registered) != _key(tensor):
            del self._recipes[_key(tensor)]  # stale: the registered tensor is gone, its address reused
            return False
        return True

    # autograd calls the hooks from inside a torch.compile'd module too (--compile): left to Dynamo, they would
    # be traced (storage addresses break the graph) and recompiled for every tensor until its limit
    @torch.compiler.disable
    def _pack(self, tensor: torch.Tensor) -> Any:
        if not self.is_registered(tensor):
            return tensor
        recipe = self._recipes[_key(tensor)][1]
        recipe.pending += 1
        return _Token(recipe, tensor)


def recomputable(tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
    """``tensor``, registered as ``fn(*inputs)`` with the active :class:`RecomputeScope` (none active, or while
    ``torch.compile`` traces, where storage addresses would break the graph: nothing is registered)."""
    if torch.compiler.is_compiling():
        return tensor
    scope = _ACTIVE.get()
    return tensor if scope is None else scope.recomputable(tensor, fn, *inputs)


def recomputed(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` whose result is registered as ``fn(*args)`` (see :func:`recomputable`); the recipe is ``fn`` itself."""
    @functools.wraps(fn)
    def registered(*args: Any) -> torch.Tensor:
        return recomputable(fn(*args), fn, *args)
    return registered


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@torch.compiler.disable
def _unpack(packed: Any) -> torch.Tensor:
    return packed.unpack() if isinstance(packed, _Token) else packed


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def _autocast(state: tuple[str, bool, torch.dtype]):
    device_type, enabled, dtype = state
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled)


class _Checkpoint(torch.autograd.Function):
    """``outputs = run(*inputs)`` without a graph; backward re-runs ``run`` with one (see :func:`checkpoint`)."""

    @staticmethod
    def forward(ctx: Any, run: Callable[..., tuple[torch.Tensor, ...]], n_inputs: int, device_type: str,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = tensors[:n_inputs]
        ctx.run, ctx.n_inputs = run, n_inputs
        ctx.autocast = _autocast_state(device_type)
        ctx.params = tensors[n_inputs:]
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            return tuple(run(*inputs))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        inputs = [x.detach().requires_grad_(x.requires_grad) for x in ctx.saved_tensors]
        with torch.enable_grad(), _autocast(ctx.autocast):
            outputs = ctx.run(*inputs)
        wanted = [x for x in (*inputs, *ctx.params) if x.requires_grad]
        pairs = [(out, grad) for out, grad in zip(outputs, grads) if grad is not None and out.requires_grad]
        found = iter(torch.autograd.grad([out for out, _ in pairs], wanted, [grad for _, grad in pairs],
                                         allow_unused=True) if pairs and wanted else [None] * len(wanted))
        result = [next(found) if x.requires_grad else None for x in (*inputs, *ctx.params)]
        return (None, None, None, *result)


def checkpoint(run: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor],
               params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Activation checkpointing of ``run(*inputs)`` (a tuple of tensors), ``params`` being every tensor that
    ``run`` reads besides ``inputs`` and that needs a gradient (the parameters of the modules it calls).

    Memory kept for backward: ``inputs`` only. Time: ``run``'s forward once more in backward. The gradients are
    those of the plain graph: backward re-runs the same forward on the same inputs (no randomness inside).
    """
    device_type = inputs[0].device.type if inputs else "cpu"
    return _Checkpoint.apply(run, len(inputs), device_type, *inputs, *params)
