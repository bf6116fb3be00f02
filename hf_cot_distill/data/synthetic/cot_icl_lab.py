"""CoT-ICL Lab (Kothapalli, Firooz, Sanjabi — ACL 2025): synthetic tokenized ICL tasks.

A *task* is one training sequence of ``K`` examples. Each example has ``N`` input tokens and a
chain of ``C`` tokens; the last chain token is the answer, the others are the chain of thought.

* One embedding table ``E ∈ R^{V×d}``, entries i.i.d. ``N(0, data_std²)``, fixed per seed.
* The task's DAG: for chain index ``c`` choose ``M`` distinct parents uniformly without
  replacement among the ``N + c`` positions available so far (inputs + earlier chain tokens).
  Shared by the task's ``K`` examples.
* The task's token processors: one per chain index, ``H_c`` = ``L`` bias-free ``d×d`` linear
  layers (``y = x @ W``) with ``N(0, 1)`` weights and the activation between layers.
* Chain token ``c`` of an example: ``h = act(mean_over_parents(H_c(E[parent])))``, logits
  ``E · h``, token = argmax over the non-reserved ids. Inputs are uniform over those ids.

Everything is a pure function of ``(config, split, task index)`` (see ``_random``), computed
for a whole batch of tasks at once: tasks are grouped by their sampled shape ``(N, M, C, K)``
and each group runs as a few batched numpy kernels. Near-ties of two logits are resolved by
float32 arithmetic, which is what the rows store; the test suite checks every token against a
float64 one-token-at-a-time reference.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field, fields

import numpy as np

from hf_cot_distill.core.validation import (
    check_choice,
    check_float,
    check_int,
    check_int_array,
    check_probability,
    is_int,
)
from hf_cot_distill.data.synthetic import _random
from hf_cot_distill.data.synthetic.schedules import CoTSchedule

ACTIVATIONS = ("leaky_relu", "relu", "silu", "identity")
PROMPT_STRATEGIES = (
    "standard",
    "cot",
    "standard_special_token",
    "cot_special_token",
    "hybrid_special_token",
)
N_RESERVED = 9
CLIP_WARNING = (
    "Some tasks drew n_parents > n_inputs; as in the paper they use n_parents = n_inputs. "
    "Each row's n_parents column records the value used."
)
# Logits are computed in blocks of this many chain tokens: a block of 512 × 1024 float32
# logits (2 MiB) stays in cache, which is ~2× faster than one big product.
_LOGIT_BLOCK_ROWS = 512


@dataclass(frozen=True)
class SpecialTokens:
    """The 9 ids reserved at the top of the vocabulary by the ``*_special_token`` strategies."""

    pad: int
    bos: int
    eos: int
    input_start: int
    input_end: int
    think_start: int
    think_end: int
    answer_start: int
    answer_end: int

    @classmethod
    def for_vocab(cls, vocab_size: int) -> SpecialTokens:
        v = vocab_size
        return cls(v - 1, v - 2, v - 3, v - 4, v - 5, v - 6, v - 7, v - 8, v - 9)

    def names(self) -> dict[int, str]:
        """id -> short display name (``<think>`` ...), for decoding."""
        short = {
            "pad": "<pad>",
            "bos": "<bos>",
            "eos": "<eos>",
            "input_start": "<in>",
            "input_end": "</in>",
            "think_start": "<think>",
            "think_end": "</think>",
            "answer_start": "<ans>",
            "answer_end": "</ans>",
        }
        return {getattr(self, f.name): short[f.name] for f in fields(self)}


def _as_choices(name: str, value: object) -> tuple[int, ...]:
    field = f"CoTICLConfig.{name}"
    if is_int(value):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{field}={value!r}: must be a non-empty list of ints >= 1; fix: e.g. [3, 4].")
    return tuple(check_int(f"{field}[{i}]", v, minimum=1) for i, v in enumerate(value))


@dataclass(frozen=True)
class CoTICLConfig:
    """Knobs of the CoT-ICL Lab generator (defaults = the paper's default setup).

    Attributes:
        vocab_size: ``V``. With a ``*_special_token`` strategy the top 9 ids are reserved.
        n_dims: embedding dimension ``d``.
        n_inputs_choices / n_parents_choices / chain_length_choices / n_examples_choices:
            each task draws ``N``, ``M``, ``C``, ``K`` uniformly from these. ``M > N`` is
            clipped to ``N`` per task, as in the paper, and reported with a warning.
        activation: ``leaky_relu`` (slope 0.5), ``relu``, ``silu`` or ``identity``.
        h_num_layers: ``L``, layers of each token processor ``H_c``.
        data_std: standard deviation of the embedding entries.
        fixed_dag: ablation: one DAG per shape ``(N, M, C)`` shared by all tasks.
        num_unique_h: ablation: a fixed pool of this many processors; every chain index of
            every task picks one uniformly. ``None`` = fresh processors for every task.
        prompt_strategy: one of ``PROMPT_STRATEGIES``.
        cot_example_prob: for ``hybrid_special_token`` without a schedule: probability that
            an example carries its think block.
        cot_schedule: CoT-Recipe schedule of ``cot_example_prob`` by task index (hybrid only).
        num_tasks: number of training tasks (the ``n`` of the schedule).
        num_eval_tasks: number of eval tasks (its own split; disjoint random streams).
        seed: dataset seed: fixes ``E``, the processor pool and every task.
    """

    vocab_size: int = 1024
    n_dims: int = 10
    n_inputs_choices: tuple[int, ...] = (4,)
    n_parents_choices: tuple[int, ...] = (4,)
    chain_length_choices: tuple[int, ...] = (2,)
    n_examples_choices: tuple[int, ...] = (40,)
    activation: str = "leaky_relu"
    h_num_layers: int = 1
    data_std: float = 1.0
    fixed_dag: bool = False
    num_unique_h: int | None = None
    prompt_strategy: str = "cot"
    cot_example_prob: float = 1.0
    cot_schedule: CoTSchedule | None = field(default=None)
    num_tasks: int = 1000
    num_eval_tasks: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_inputs_choices", "n_parents_choices", "chain_length_choices", "n_examples_choices"):
            object.__setattr__(self, name, _as_choices(name, getattr(self, name)))
        if isinstance(self.cot_schedule, dict):
            object.__setattr__(self, "cot_schedule", CoTSchedule.from_mapping(self.cot_schedule))
        check_choice("CoTICLConfig.prompt_strategy", self.prompt_strategy, PROMPT_STRATEGIES)
        check_choice("CoTICLConfig.activation", self.activation, ACTIVATIONS)
        check_int("CoTICLConfig.vocab_size", self.vocab_size, minimum=1, maximum=2**31 - 1)
        for name in ("n_dims", "h_num_layers", "num_tasks"):
            check_int(f"CoTICLConfig.{name}", getattr(self, name), minimum=1)
        for name in ("num_eval_tasks", "seed"):
            check_int(f"CoTICLConfig.{name}", getattr(self, name), minimum=0)
        check_float("CoTICLConfig.data_std", self.data_std, minimum=0.0, min_open=True)
        if self.num_unique_h is not None:  # a pool size, or None for fresh processors per task
            check_int("CoTICLConfig.num_unique_h", self.num_unique_h, minimum=1)
        check_probability("CoTICLConfig.cot_example_prob", self.cot_example_prob)
        if self.cot_schedule is not None and self.prompt_strategy != "hybrid_special_token":
            raise ValueError(
                f"cot_schedule is set but prompt_strategy={self.prompt_strategy!r}; a CoT-Recipe "
                "schedule only applies to 'hybrid_special_token' (or remove cot_schedule)."
            )
        min_usable = 2
        if self.vocab_size - self.n_reserved < min_usable:
            raise ValueError(
                f"vocab_size={self.vocab_size} leaves {self.vocab_size - self.n_reserved} usable ids after "
                f"{self.n_reserved} reserved ones; use vocab_size >= {self.n_reserved + min_usable}."
            )

    @property
    def uses_special_tokens(self) -> bool:
        return self.prompt_strategy.endswith("_special_token")

    @property
    def n_reserved(self) -> int:
        """Ids reserved at the top of the vocabulary (9 for special-token strategies, else 0)."""
        return N_RESERVED if self.uses_special_tokens else 0

    @property
    def n_usable(self) -> int:
        """Ids that inputs and chain tokens can take: ``0 .. n_usable - 1``."""
        return self.vocab_size - self.n_reserved

    @property
    def special_tokens(self) -> SpecialTokens | None:
        return SpecialTokens.for_vocab(self.vocab_size) if self.uses_special_tokens else None

    @property
    def max_chain_length(self) -> int:
        return max(self.chain_length_choices)

    def cot_probs(self, task_indices: np.ndarray, split: str) -> np.ndarray:
        """Per-task probability that an example carries its CoT (float64, ``(T,)``)."""
        task_indices = np.asarray(task_indices)
        if self.prompt_strategy != "hybrid_special_token":
            has = self.prompt_strategy in ("cot", "cot_special_token")
            return np.full(task_indices.shape, 1.0 if has else 0.0)
        if self.cot_schedule is None or split != "train":
            # Eval tasks are not part of the meta-training mix: they use cot_example_prob.
            return np.full(task_indices.shape, self.cot_example_prob)
        return self.cot_schedule(task_indices, self.num_tasks)


def activation_fn(name: str):
    """The activation by name, as a numpy function (float32 in, float32 out)."""
    check_choice("activation", name, ACTIVATIONS)
    if name == "leaky_relu":
        # max(x, 0.5 x) == leaky_relu(x, 0.5) for a slope in (0, 1); one pass, no mask.
        return lambda x: np.maximum(x, x * np.float32(0.5))
    if name == "relu":
        return lambda x: np.maximum(x, np.float32(0.0))
    if name == "silu":
        return lambda x: x / (np.float32(1.0) + np.exp(-x))
    return lambda x: x  # identity


@functools.lru_cache(maxsize=8)
def _embedding_table(seed: int, vocab_size: int, n_dims: int, data_std: float) -> np.ndarray:
    key = _random.keys(seed, "embedding", np.arange(vocab_size))
    table = (_random.normal(key, n_dims) * data_std).astype(np.float32)
    table.setflags(write=False)
    return table


def embedding_table(config: CoTICLConfig) -> np.ndarray:
    """``E``: float32 ``(V, d)``, read-only; a pure function of the seed, ``V``, ``d``, std."""
    return _embedding_table(config.seed, config.vocab_size, config.n_dims, float(config.data_std))


@dataclass
class TaskShapes:
    """Per-task sampled shapes, int64 arrays ``(T,)``."""

    n_inputs: np.ndarray
    n_parents: np.ndarray
    chain_length: np.ndarray
    n_examples: np.ndarray
    n_parents_clipped: np.ndarray  # bool: the drawn M exceeded N and was clipped to N


def sample_shapes(config: CoTICLConfig, task_indices: np.ndarray, split: str = "train") -> TaskShapes:
    """Draw ``N, M, C, K`` for each task (``M`` clipped to ``N``)."""
    sid = _random.SPLITS[split]
    key = _random.keys(config.seed, "shape", sid, task_indices)
    sub = _random.bits(key, 4)
    n = _random.choice(sub[..., 0], config.n_inputs_choices)
    m_drawn = _random.choice(sub[..., 1], config.n_parents_choices)
    m = np.minimum(m_drawn, n)
    c = _random.choice(sub[..., 2], config.chain_length_choices)
    k = _random.choice(sub[..., 3], config.n_examples_choices)
    return TaskShapes(n, m, c, k, m_drawn > n)


def sample_dags(
    config: CoTICLConfig, task_indices: np.ndarray, n: int, m: int, c: int, split: str = "train"
) -> np.ndarray:
    """DAGs of tasks sharing the shape ``(N=n, M=m, C=c)``: int64 ``(T, C, M)``.

    ``dag[t, j]`` are the positions (``0..N-1`` inputs, ``N + i`` chain token ``i``) of the
    parents of chain token ``j``: distinct, uniform among the ``N + j`` available, ascending.
    """
    task_indices = np.asarray(task_indices)
    if config.fixed_dag:
        key = _random.keys(config.seed, "dag", n, m, c, np.arange(c))[None].repeat(len(task_indices), 0)
    else:
        sid = _random.SPLITS[split]
        key = _random.keys(config.seed, "dag", sid, task_indices[:, None], np.arange(c)[None, :])
    scores = _random.uniform(key, n + c)  # (T, C, N + C)
    available = np.arange(n + c)[None, :] < (n + np.arange(c))[:, None]  # (C, N + C)
    scores = np.where(available[None], scores, np.inf)
    parents = np.argsort(scores, axis=-1, kind="stable")[..., :m]
    return np.sort(parents, axis=-1)


def sample_processors(
    config: CoTICLConfig, task_indices: np.ndarray, c: int, split: str = "train"
) -> np.ndarray:
    """Token processors of tasks with chain length ``c``: float32 ``(T, C, L, d, d)``.

    Layer ``l`` of ``H_j`` maps a row vector ``x`` to ``x @ W[t, j, l]``.
    """
    task_indices = np.asarray(task_indices)
    d, layers = config.n_dims, config.h_num_layers
    if config.num_unique_h is None:
        sid = _random.SPLITS[split]
        key = _random.keys(config.seed, "processor", sid, task_indices[:, None], np.arange(c)[None, :])
        w = _random.normal(key, layers * d * d)
    else:
        pool = processor_pool(config)
        sid = _random.SPLITS[split]
        key = _random.keys(config.seed, "processor_pick", sid, task_indices[:, None], np.arange(c)[None, :])
        pick = _random.integers(key, 1, config.num_unique_h)[..., 0]
        return pool[pick]
    return w.astype(np.float32).reshape(len(task_indices), c, layers, d, d)


def processor_pool(config: CoTICLConfig) -> np.ndarray:
    """The fixed pool of ``num_unique_h`` processors: float32 ``(P, L, d, d)``."""
    if config.num_unique_h is None:
        raise ValueError("processor_pool() needs num_unique_h to be set (it is None).")
    d, layers = config.n_dims, config.h_num_layers
    key = _random.keys(config.seed, "processor_pool", np.arange(config.num_unique_h))
    return _random.normal(key, layers * d * d).astype(np.float32).reshape(-1, layers, d, d)


def sample_inputs(
    config: CoTICLConfig, task_indices: np.ndarray, n: int, k: int, split: str = "train"
) -> np.ndarray:
    """Input tokens, uniform over the usable ids: int64 ``(T, K, N)``."""
    sid = _random.SPLITS[split]
    key = _random.keys(config.seed, "inputs", sid, np.asarray(task_indices))
    return _random.integers(key, k * n, config.n_usable).reshape(-1, k, n)


def chain_tokens(
    config: CoTICLConfig, inputs: np.ndarray, dags: np.ndarray, processors: np.ndarray
) -> np.ndarray:
    """Compute the chains of a group of same-shape tasks.

    Args:
        inputs: int64 ``(T, K, N)``.
        dags: int64 ``(T, C, M)``.
        processors: float32 ``(T, C, L, d, d)``.
    Returns:
        int64 ``(T, K, N + C)``: inputs followed by the chain tokens.
    """
    act = activation_fn(config.activation)
    table = embedding_table(config)
    usable_t = np.ascontiguousarray(table[: config.n_usable].T)  # (d, V')
    t, k, n = inputs.shape
    c = dags.shape[1]
    layers = processors.shape[2]
    tokens = np.empty((t, k, n + c), dtype=np.int64)
    tokens[..., :n] = inputs
    out = np.empty(t * k, dtype=np.int64)
    inv_m = np.float32(1.0 / dags.shape[2])
    for j in range(c):
        parents = np.take_along_axis(tokens, dags[:, None, j, :], axis=2)  # (T, K, M)
        if layers == 1:
            # One linear layer commutes with the mean over parents: mean(E[p] @ W) ==
            # mean(E[p]) @ W. Summing the gathered rows first saves M - 1 of the products.
            pooled = table[parents[..., 0]]
            for i in range(1, parents.shape[2]):
                pooled += table[parents[..., i]]
            pre = (pooled * inv_m) @ processors[:, j, 0]  # (T, K, d) @ (T, d, d)
        else:
            x = table[parents].reshape(t, -1, table.shape[1])  # (T, K*M, d)
            for layer in range(layers):
                x = x @ processors[:, j, layer]
                if layer < layers - 1:
                    x = act(x)
            pre = x.reshape(t, k, -1, x.shape[-1]).mean(axis=2, dtype=np.float32)
        h = act(pre).reshape(t * k, -1)  # (T*K, d)
        for start in range(0, t * k, _LOGIT_BLOCK_ROWS):
            block = h[start : start + _LOGIT_BLOCK_ROWS] @ usable_t
            out[start : start + _LOGIT_BLOCK_ROWS] = block.argmax(axis=1)
        tokens[..., n + j] = out.reshape(t, k)
    return tokens


@dataclass
class TaskGroup:
    """Tasks of one shape, generated together. Arrays are indexed by position in the group."""

    positions: np.ndarray  # (T,) positions of these tasks in the requested batch
    task_indices: np.ndarray  # (T,)
    n_inputs: int
    n_parents: int
    chain_length: int
    n_examples: int
    dags: np.ndarray  # (T, C, M)
    processors: np.ndarray  # (T, C, L, d, d)
    tokens: np.ndarray  # (T, K, N + C)


def generate_groups(
    config: CoTICLConfig, task_indices: np.ndarray | list[int], split: str = "train"
) -> list[TaskGroup]:
    """Generate tasks by index, grouped by shape. The order of groups is deterministic."""
    check_choice("split", split, sorted(_random.SPLITS))
    task_indices = check_int_array("task_indices", task_indices, minimum=0)
    shapes = sample_shapes(config, task_indices, split)
    if shapes.n_parents_clipped.any():
        # Reported, not silent: rows carry the n_parents actually used.
        warnings.warn(CLIP_WARNING, UserWarning, stacklevel=2)
    combined = np.stack([shapes.n_inputs, shapes.n_parents, shapes.chain_length, shapes.n_examples], 1)
    groups = []
    for shape in np.unique(combined, axis=0):
        pos = np.flatnonzero((combined == shape).all(axis=1))
        n, m, c, k = (int(v) for v in shape)
        idx = task_indices[pos]
        dags = sample_dags(config, idx, n, m, c, split)
        procs = sample_processors(config, idx, c, split)
        inputs = sample_inputs(config, idx, n, k, split)
        tokens = chain_tokens(config, inputs, dags, procs)
        groups.append(TaskGroup(pos, idx, n, m, c, k, dags, procs, tokens))
    return groups
