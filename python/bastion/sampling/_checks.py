"""Field validators for ``SamplingParams``: each raises ``ValueError`` naming the offending field.

Python's ``bool`` is a subclass of ``int``; a flag passed where a number is expected is almost always
a caller bug (``max_tokens=True``), so numbers reject bools explicitly.
"""

from __future__ import annotations

import math
import struct
from typing import Any


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real ``bool``; raise ValueError naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[low, high]``; raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real within the bounds; raise ValueError otherwise.

    ``low_open`` makes the lower bound exclusive (``top_p`` must be > 0, not >= 0).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    # the sampler computes in float32: a value above an open bound only in float64 (top_p=5e-324) would be
    # the excluded bound itself there, and fail the whole batch's step instead of this request
    if low is not None and low_open and struct.unpack("f", struct.pack("f", value))[0] <= low:
        raise ValueError(f"{name} must be > {low} in float32 (the sampler's precision), got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_stop_strings(name: str, value: Any) -> tuple[str, ...]:
    """Normalise ``None``, one string or a list of strings to a tuple of non-empty strings."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{name} must be a str or a list of str, got {type(value).__name__}")
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{name} entries must be str, got {type(item).__name__} {item!r}")
        if not item:
            raise ValueError(f"{name} entries must be non-empty strings")
    return tuple(dict.fromkeys(items))  # drop duplicates, keep order


def check_token_ids(name: str, value: Any) -> tuple[int, ...]:
    """Normalise ``None`` or a list of non-negative int token ids to a tuple."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of int, got {type(value).__name__}")
    return tuple(dict.fromkeys(check_int(f"{name} entry", item, low=0) for item in value))
