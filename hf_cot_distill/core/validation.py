"""The one validator: ints, floats, bools, choices and config keys, with one message style.

Every refusal is a ``ValueError`` (``TypeError`` never: a recipe value of the wrong type is bad
input like any other) that names the field, the value and the fix::

    CoTICLConfig.n_inputs=1.5: must be an int >= 1; fix: pass a whole number, e.g. n_inputs=4.

Rules, the same everywhere:

* an **int** is a ``numbers.Integral`` (Python ``int``, NumPy integers) and never a ``bool``
  (``True`` would count as 1) nor a float (``1.0`` slices and hashes like ``1`` but ``1.5`` would
  be silently rounded: refused alike). Returned as a Python ``int``.
* a **float** is any ``numbers.Real`` (ints included) but not a ``bool``, finite unless
  ``finite=False``. Returned as a Python ``float``.
* a **bool** is ``True`` / ``False`` / ``np.bool_`` only (not 0/1, not ``"true"``).
* a **choice** is one of the given values (compared with ``==``, strings case-sensitive).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def _fail(field: str, value: object, what: str, fix: str | None) -> ValueError:
    return ValueError(f"{field}={value!r}: must be {what}; fix: {fix or 'pass ' + what}.")


def _bounds(minimum: float | None, maximum: float | None, min_open: bool, max_open: bool) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if min_open else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"{'<' if max_open else '<='} {maximum}")
    return " and ".join(parts)


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer in the sense of this module (no bool, no float)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(
    field: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    fix: str | None = None,
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (each bound optional), else ``ValueError``."""
    bound = _bounds(minimum, maximum, False, False)
    what = "an int" + (f" {bound}" if bound else "")
    if not is_int(value):
        raise _fail(field, value, what, fix)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(field, value, what, fix)
    return int(value)


def check_float(
    field: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    finite: bool = True,
    fix: str | None = None,
) -> float:
    """``value`` as a ``float`` within the bounds (``min_open``/``max_open``: strict), else ``ValueError``.

    ``finite=False`` lets ``inf`` through (never NaN: it compares false with every bound)."""
    bound = _bounds(minimum, maximum, min_open, max_open)
    what = ("a finite number" if finite else "a number") + (f" {bound}" if bound else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(field, value, what, fix)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range (10**400): as large as inf
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or (finite and math.isinf(number)):
        raise _fail(field, value, what, fix)
    if minimum is not None and (number <= minimum if min_open else number < minimum):
        raise _fail(field, value, what, fix)
    if maximum is not None and (number >= maximum if max_open else number > maximum):
        raise _fail(field, value, what, fix)
    return number


def check_probability(field: str, value: object, *, fix: str | None = None) -> float:
    """A probability: a finite number in ``[0, 1]``."""
    return check_float(field, value, minimum=0.0, maximum=1.0, fix=fix)


def check_bool(field: str, value: object, *, fix: str | None = None) -> bool:
    """``value`` if it is a bool (``True``/``False``/``np.bool_``), else ``ValueError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(field, value, "true or false", fix)
    return bool(value)


def check_choice(
    field: str, value: Any, choices: Sequence[Any] | Iterable[Any], *, fix: str | None = None
) -> Any:
    """``value`` if it is one of ``choices``; else ``ValueError`` listing them (and the closest one)."""
    options = list(choices)
    try:
        if value in options:
            return value
    except (TypeError, ValueError):  # unhashable, incomparable or an array (ambiguous ==): not a choice
        pass
    close = []
    if isinstance(value, str):
        names = [str(c) for c in options]
        lowered = {name.lower(): name for name in names}  # 'KEEP' -> 'keep' too
        close = difflib.get_close_matches(value, names, 1) or [
            lowered[m] for m in difflib.get_close_matches(value.lower(), list(lowered), 1)
        ]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(repr(c) for c in options)
    raise ValueError(f"{field}={value!r}: must be one of {shown}{hint}; fix: {fix or 'use one of them'}.")


def check_known_keys(where: str, keys: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse keys that are not config fields, naming the closest valid one for each."""
    valid = sorted(valid)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, 1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise ValueError(f"{where}: unknown config keys {', '.join(hints)}; valid keys: {valid}.")


def check_int_array(
    field: str, value: object, *, ndim: int = 1, minimum: int | None = None, fix: str | None = None
) -> np.ndarray:
    """``value`` (a list, range, numpy array or tensor of integers) as an ``int64`` array of exactly
    ``ndim`` dims, every entry ``>= minimum`` when given. Refused rather than coerced: floats (they
    would be cut), bools, strings, and another rank (a ``(1, n)`` batch where one row is expected
    would otherwise be flattened silently)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    arr = np.asarray(
        value if not isinstance(value, range) else np.arange(value.start, value.stop, value.step)
    )
    if (
        arr.size == 0 and arr.dtype == np.float64 and arr.ndim == ndim
    ):  # [] reads as float64: no values to cut
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        shown = arr.flat[0].item() if arr.size else value
        raise _fail(field, shown, f"integers (got dtype {arr.dtype})", fix or "pass integer values")
    if arr.ndim != ndim:
        raise ValueError(
            f"{field}: shape {arr.shape} has {arr.ndim} dims, expected {ndim}"
            + (f"; fix: {fix}" if fix else "; fix: pass one value per entry, not a nested or batched array")
            + "."
        )
    if minimum is not None and arr.size and int(arr.min()) < minimum:
        raise _fail(field, int(arr.min()), f">= {minimum} (its smallest entry)", fix)
    return arr.astype(np.int64)
