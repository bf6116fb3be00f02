"""CoT-Recipe: how many in-context examples carry their chain of thought, by prompt index.

Kothapalli et al., "To Think or Not to Think" (CoT-Recipe). For the training sequence with
index ``i`` out of ``n``, every in-context example independently carries its CoT (its think
block) with probability ``p(i)``. The paper's schedule is a power law in ``x = i / n``::

    p(i) = min(scale * x**alpha + p_initial, p_final)

With ``p_initial = 0, p_final = 1, scale = 1`` the mean CoT fraction over the dataset is
``1 / (alpha + 1)``. ``alpha = 0`` gives ``p = 1`` everywhere (``0**0 = 1``); ``alpha = inf``
keeps ``p = p_initial`` for every index ``i < n`` (``x**inf = 0`` for ``x < 1``).

The schedule fixes the *mix* of CoT and non-CoT examples; sequences are shuffled for training,
so it is not a curriculum. Besides the paper's power law we offer ``constant``, ``linear``,
``step`` and ``cosine`` schedules for ablations, and the drop-k transformations of the eval
prompt (remove the think block from k in-context examples).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_cot_distill.core.validation import (
    check_choice,
    check_float,
    check_int,
    check_known_keys,
    check_probability,
)
from hf_cot_distill.data.synthetic import _random

SCHEDULE_KINDS = ("constant", "power_law", "linear", "step", "cosine")
DROP_MODES = ("first_k", "last_k", "random_k")


@dataclass(frozen=True)
class CoTSchedule:
    """Probability that an in-context example carries its CoT, as a function of prompt index.

    Attributes:
        kind: one of ``constant``, ``power_law`` (the paper's), ``linear``, ``step``, ``cosine``.
        p_initial: value at ``x = 0`` (the constant value for ``constant``).
        p_final: cap (power law) or value at ``x = 1`` (linear, cosine) or after the step.
        alpha: power-law exponent, ``>= 0``; ``math.inf`` is allowed.
        scale: power-law multiplier.
        step_at: for ``step``: fraction of the dataset after which ``p_final`` applies.
    """

    kind: str = "power_law"
    p_initial: float = 0.0
    p_final: float = 1.0
    alpha: float = 1.0
    scale: float = 1.0
    step_at: float = 0.5

    def __post_init__(self) -> None:
        check_choice("CoTSchedule.kind", self.kind, SCHEDULE_KINDS)
        for name in ("p_initial", "p_final"):
            check_probability(f"CoTSchedule.{name}", getattr(self, name))
        check_float(
            "CoTSchedule.alpha", self.alpha, minimum=0.0, finite=False, fix="use >= 0 (math.inf allowed)"
        )
        check_float("CoTSchedule.scale", self.scale, minimum=0.0)
        check_float(
            "CoTSchedule.step_at", self.step_at, minimum=0.0, maximum=1.0, fix="use a fraction in [0, 1]"
        )

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Any], where: str = "cot_schedule") -> CoTSchedule:
        """A schedule from a YAML/JSON mapping; a misspelled key names the closest valid one."""
        check_known_keys(where, fields, (f.name for f in dataclasses.fields(cls)))
        return cls(**fields)

    def __call__(self, index: np.ndarray | int, n: int) -> np.ndarray:
        """``p(index)`` for prompt indices in ``[0, n)``; returns a float64 array (0-d for ints)."""
        check_int("n", n, minimum=1, fix="pass the number of prompts (num_tasks)")
        x = np.asarray(index, dtype=np.float64) / float(n)
        if self.kind == "constant":
            p = np.full_like(x, self.p_initial)
        elif self.kind == "power_law":
            if math.isinf(self.alpha):
                term = (x >= 1.0).astype(np.float64)
            else:
                term = np.power(x, self.alpha)  # numpy: 0.0 ** 0 == 1.0, as in the paper
            p = np.minimum(self.scale * term + self.p_initial, self.p_final)
        elif self.kind == "linear":
            p = self.p_initial + (self.p_final - self.p_initial) * x
        elif self.kind == "step":
            p = np.where(x < self.step_at, self.p_initial, self.p_final)
        else:  # cosine: smooth ramp from p_initial (x=0) to p_final (x=1)
            p = self.p_final + (self.p_initial - self.p_final) * 0.5 * (1.0 + np.cos(np.pi * x))
        return np.clip(p, 0.0, 1.0)

    def mean_cot_fraction(self, n: int) -> float:
        """Mean of ``p`` over the ``n`` prompt indices (the dataset's expected CoT share)."""
        return float(np.mean(self(np.arange(n), n)))


def select_drop_examples(
    has_cot: np.ndarray, k: int, mode: str, seed: int = 0, task_index: int = 0
) -> np.ndarray:
    """Indices of the ``k`` in-context examples whose think block a drop-k transformation removes.

    Only examples that carry a think block can lose it, so the ``k`` are chosen among those
    (``first_k``: the earliest, ``last_k``: the latest, ``random_k``: uniformly, a pure
    function of ``(seed, task_index)``).

    Args:
        has_cot: bool array ``(K_context,)``: which context examples carry their CoT.
        k: how many think blocks to drop.
        mode: ``first_k``, ``last_k`` or ``random_k``.
    Returns:
        int64 array ``(k,)`` of example indices, ascending.
    """
    check_choice("drop_mode", mode, DROP_MODES)
    candidates = np.flatnonzero(np.asarray(has_cot, dtype=bool))
    n = len(candidates)
    fix = f"only {n} in-context examples carry a think block; use 0 <= drop_k <= {n}"
    check_int("drop_k", k, minimum=0, maximum=n, fix=fix)
    if mode == "first_k":
        chosen = candidates[:k]
    elif mode == "last_k":
        chosen = candidates[len(candidates) - k :]
    else:
        key = _random.keys(seed, "drop_k", task_index)
        order = np.argsort(_random.uniform(key, len(candidates)), kind="stable")
        chosen = np.sort(candidates[order[:k]])
    return chosen.astype(np.int64)
