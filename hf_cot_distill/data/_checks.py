"""Field checks shared by the generator configs (CoT-ICL Lab and symbolic)."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable


def check_int(owner: str, name: str, value: object, minimum: int | None) -> None:
    """Refuse a non-integer (a float, a bool, a string) or a value below ``minimum``.

    A float would be accepted by Python arithmetic and fail later (``vocab_size=1024.0`` in a
    slice) or be silently rounded (``seed=1.5`` hashing like ``seed=1``), so it is refused here.
    """
    bound = "" if minimum is None else f" >= {minimum}"
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral or (minimum is not None and value < minimum):
        raise ValueError(f"{owner}.{name}={value!r} must be an int{bound}.")


def check_known_keys(where: str, keys: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse keys that are not config fields, naming the closest valid one for each."""
    valid = sorted(valid)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, valid, 1)})" for k in unknown]
        raise ValueError(f"{where}: unknown config keys {', '.join(hints)}; valid keys: {valid}.")
