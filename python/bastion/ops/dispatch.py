"""Backend registry and ``backend="auto"`` resolution for the ``bastion.ops`` op layer.

A backend is a module exposing functions named after the ops (``paged_attention``, ...). Backends are
imported lazily on first use; a backend whose import fails (no triton, no CUDA build, no native core)
is recorded as unavailable with the reason, and "auto" skips it. A backend module may define
``supports(op: str, dtype: torch.dtype) -> bool``: "auto" only picks it where that returns True (the
CPU backend uses this to advertise only the ops where it measured faster than torch), and
``PARTIAL_OPS``: ops that may raise ``Unsupported`` for some arguments, after which "auto" tries
the next backend. Resolved
functions are cached per (op, backend, device type, dtype), so a call costs one dict lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Literal, get_args

import torch

OPS: tuple[str, ...] = (
    "paged_attention",
    "reshape_and_cache",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "sample",
    "apply_token_bitmask",
)
Backend = Literal["torch", "cpu", "triton", "cuda"]
BACKENDS: tuple[str, ...] = get_args(Backend)

# backend name -> module implementing it (imported on first use)
_BACKEND_MODULES: dict[str, str] = {
    "torch": "bastion.ops.torch_ref",
    "cpu": "bastion.ops.cpu_backend",
    "triton": "bastion.ops.triton_backend",
    "cuda": "bastion.ops.cuda_backend",
}
# device type -> backends "auto" tries, fastest first; torch always works and ends every list
_AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}

_registry: dict[str, dict[str, Callable[..., Any]]] = {}
_supports: dict[str, Callable[[str, torch.dtype], bool]] = {}
_unavailable: dict[str, str] = {}
_partial: dict[str, frozenset[str]] = {}  # backend -> ops that may raise Unsupported for some arguments
_resolved: dict[tuple[str, str, str, torch.dtype], Callable[..., Any]] = {}


class Unsupported(ValueError):
    """A backend cannot serve these particular arguments (e.g. a decode-only kernel given a prefill
    batch). Under ``backend="auto"`` the next backend in line takes the call; named explicitly, the
    backend's error reaches the caller."""


def _first_that_serves(fns: list[Callable[..., Any]]) -> Callable[..., Any]:
    """One function trying ``fns`` in order, moving on when one raises ``Unsupported``."""
    if len(fns) == 1:
        return fns[0]

    def call(*args: Any, **kwargs: Any) -> Any:
        for fn in fns[:-1]:
            try:
                return fn(*args, **kwargs)
            except Unsupported:
                continue
        return fns[-1](*args, **kwargs)

    call.candidates = tuple(fns)  # type: ignore[attr-defined]  # what may serve a call (see candidates())
    return call


def candidates(fn: Callable[..., Any]) -> tuple[Callable[..., Any], ...]:
    """The backend functions a resolved ``fn`` may hand a call to: itself, or each one it tries in turn."""
    return getattr(fn, "candidates", (fn,))


def register(backend: str, op: str, fn: Callable[..., Any]) -> None:
    """Register ``fn`` as ``backend``'s implementation of ``op`` (replacing any earlier one)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    if backend in _BACKEND_MODULES:
        _load(backend)  # import the module's own ops first so they do not shadow this registration later
    _registry.setdefault(backend, {})[op] = fn
    _unavailable.pop(backend, None)
    _resolved.clear()


def _load(backend: str) -> dict[str, Callable[..., Any]] | None:
    """Import ``backend``'s module once and register its op functions; None if it cannot load."""
    if backend in _registry:
        return _registry[backend]
    if backend in _unavailable:
        return None
    module_name = _BACKEND_MODULES.get(backend)
    if module_name is None:
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of: {', '.join(BACKENDS)}")
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as exc:  # optional dependency (triton, CUDA build, native core) missing
        _unavailable[backend] = f"{type(exc).__name__}: {exc}"
        return None
    ops = {op: getattr(module, op) for op in OPS if callable(getattr(module, op, None))}
    _partial[backend] = frozenset(getattr(module, "PARTIAL_OPS", ()))
    supports = getattr(module, "supports", None)
    if callable(supports):
        _supports[backend] = supports
    _registry[backend] = ops
    return ops


def available_backends() -> dict[str, str]:
    """Map every backend to "available" or the reason it could not be loaded."""
    return {name: "available" if _load(name) is not None else _unavailable[name] for name in BACKENDS}


def _device_types(backend: str) -> tuple[str, ...] | None:
    """Device types whose tensors ``backend`` (loaded) computes on; None = any torch device."""
    if backend == "triton":  # CPU tensors only when the kernels were decorated under TRITON_INTERPRET=1
        return ("cuda", "cpu") if importlib.import_module("bastion.kernels").interpreted() else ("cuda",)
    return {"cpu": ("cpu",), "cuda": ("cuda",)}.get(backend)


def plan(backend: str, device_type: str, dtypes: Mapping[str, torch.dtype]) -> dict[str, str]:
    """The ``backend=`` argument to give each op of ``dtypes`` (op -> dtype of its data) so that
    ``backend`` serves every call it can, decided once, before any call.

    "auto" maps every op to "auto". A named backend maps the ops it implements in full and accepts
    for their dtype (its ``supports``) to itself; the rest (ops it lacks, or serves only for some
    arguments, ``PARTIAL_OPS``) to "auto". Raises ValueError, with the reason, for an unknown or
    unavailable backend, one that does not run on ``device_type``, or one that would serve none of the ops.
    """
    if backend == "auto":
        return dict.fromkeys(dtypes, "auto")
    ops = _load(backend)
    if ops is None:
        raise ValueError(f"backend {backend!r} is not available: {_unavailable[backend]}")
    devices = _device_types(backend)
    if devices is not None and device_type not in devices:
        raise ValueError(f"backend {backend!r} runs on {' / '.join(devices)} tensors, not on {device_type}")
    supports = _supports.get(backend)
    partial = _partial.get(backend, frozenset())
    chosen = {op: backend if op in ops and op not in partial and (supports is None or supports(op, dtype)) else "auto"
              for op, dtype in dtypes.items()}
    if dtypes and backend not in chosen.values():
        kinds = ", ".join(sorted({str(d) for d in dtypes.values()}))
        raise ValueError(f"backend {backend!r} serves none of the ops {', '.join(dtypes)} on {device_type} {kinds} data")
    return chosen


def _explicit(op: str, backend: str) -> Callable[..., Any]:
    ops = _load(backend)
    if ops is None:
        raise ValueError(f"backend {backend!r} is not available: {_unavailable[backend]}")
    fn = ops.get(op)
    if fn is None:
        raise ValueError(f"backend {backend!r} does not implement op {op!r} (it has: {', '.join(ops) or 'none'})")
    return fn


def _auto(op: str, device_type: str, dtype: torch.dtype) -> Callable[..., Any]:
    candidates = []
    for backend in _AUTO_ORDER.get(device_type, ("torch",)):
        ops = _load(backend)
        if ops is None or op not in ops:
            continue
        supports = _supports.get(backend)
        if supports is not None and not supports(op, dtype):
            continue
        candidates.append(ops[op])
        if op not in _partial.get(backend, ()):
            break  # this backend serves every call: later ones would never be reached
    if candidates:
        return _first_that_serves(candidates)
    raise ValueError(f"no backend implements op {op!r} for {device_type} tensors of dtype {dtype}")


def resolve(op: str, backend: str, tensor: torch.Tensor) -> Callable[..., Any]:
    """Return the function implementing ``op`` on ``backend`` ("auto" picks by ``tensor``'s device/dtype).

    Raises ValueError for an unknown backend, an unavailable backend, or an op the backend lacks.
    """
    key = (op, backend, tensor.device.type, tensor.dtype)
    fn = _resolved.get(key)
    if fn is None:
        fn = _auto(op, key[2], key[3]) if backend == "auto" else _explicit(op, backend)
        _resolved[key] = fn
    return fn
