"""Counter-based random numbers: every draw is a pure function of (seed, stream, indices, counter).

The generators in this package never touch a global RNG and never carry RNG *state*. Each
random value is a hash of the coordinates that identify it (dataset seed, a named stream, the
task index, the example index, ...). That is what makes task ``i`` identical whether it is
generated alone, in a batch of 4,096, in another process, or streamed — and it lets us draw
all the random numbers of a whole batch of tasks in a handful of vectorised numpy calls.

The hash is the SplitMix64 finalizer (Steele, Lea & Flood, 2014), applied on ``uint64`` numpy
arrays (numpy wraps ``uint64`` arithmetic modulo 2**64 for arrays, which is what we want).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Named streams keep unrelated draws independent even when their indices coincide.
STREAMS: dict[str, int] = {
    "embedding": 1,
    "shape": 2,
    "dag": 3,
    "processor": 4,
    "processor_pick": 5,
    "inputs": 6,
    "cot_flag": 7,
    "drop_k": 8,
    "symbolic_words": 9,
    "processor_pool": 10,
}
SPLITS: dict[str, int] = {"train": 0, "eval": 1, "validation": 1, "test": 2}


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (returns a new array; wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        return x ^ (x >> np.uint64(31))


def keys(seed: int, stream: str, *indices: np.ndarray | int) -> np.ndarray:
    """Derive uint64 keys from a seed, a named stream and broadcastable integer indices.

    Args:
        seed: the dataset seed (any Python int; reduced modulo 2**64).
        stream: a name from ``STREAMS``.
        *indices: integer arrays or scalars, broadcast together (e.g. task indices).

    Returns:
        ``uint64`` array of the broadcast shape of ``indices`` (0-d if none are arrays).
    """
    base = (int(seed) * 0x2545F4914F6CDD1D + STREAMS[stream] * 0x9E3779B97F4A7C15) & _MASK64
    k = _mix(np.asarray(base, dtype=np.uint64))
    with np.errstate(over="ignore"):
        for idx in indices:
            k = _mix(k + _GOLDEN * (np.asarray(idx, dtype=np.int64).astype(np.uint64) + np.uint64(1)))
    return k


def bits(key: np.ndarray, n: int) -> np.ndarray:
    """``n`` uint64 draws per key: shape ``key.shape + (n,)``."""
    with np.errstate(over="ignore"):
        counter = np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
        return _mix(key[..., None] + counter)


def uniform(key: np.ndarray, n: int) -> np.ndarray:
    """Uniform float64 in [0, 1), shape ``key.shape + (n,)`` (53 random bits each)."""
    return (bits(key, n) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def integers(key: np.ndarray, n: int, high: np.ndarray | int) -> np.ndarray:
    """Uniform integers in ``[0, high)``, shape ``key.shape + (n,)``, dtype int64.

    Multiply-shift range reduction on 32 random bits: the bias is at most ``high / 2**32``
    (< 3e-7 for a 1,024-token vocabulary), far below anything a dataset can show.
    ``high`` broadcasts against ``key.shape + (1,)``; it must be in ``[1, 2**32)``.
    """
    hi32 = bits(key, n) >> np.uint64(32)
    high_arr = np.asarray(high, dtype=np.uint64)
    if high_arr.ndim:
        high_arr = high_arr[..., None]
    return ((hi32 * high_arr) >> np.uint64(32)).astype(np.int64)


def normal(key: np.ndarray, n: int) -> np.ndarray:
    """Standard normal float64 draws, shape ``key.shape + (n,)`` (Box-Muller on uniform pairs)."""
    m = (n + 1) // 2
    u = uniform(key, 2 * m)
    u1 = 1.0 - u[..., :m]  # in (0, 1]: log is finite
    u2 = u[..., m:]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2.0 * np.pi * u2), r * np.sin(2.0 * np.pi * u2)], axis=-1)
    return z[..., :n]


def choice(key: np.ndarray, options: tuple[int, ...]) -> np.ndarray:
    """One uniform pick from ``options`` per key (int64 array of ``key.shape``)."""
    opts = np.asarray(options, dtype=np.int64)
    return opts[integers(key, 1, len(opts))[..., 0]]
