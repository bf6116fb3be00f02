"""From task indices to dataset rows: generation + rendering + the eval view, batched.

``generate_batch(config, task_indices, split)`` is the one entry point the builder, the CLI
and the benchmark use. Rows are returned as a ``pyarrow.Table`` built straight from the flat
numpy arrays (no per-token Python objects), or as dicts through ``TaskBatch.rows()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hf_cot_distill.core.sections import SECTION_NAMES
from hf_cot_distill.core.validation import check_int_array
from hf_cot_distill.data.synthetic import _random
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig, TaskGroup, generate_groups
from hf_cot_distill.data.synthetic.prompts import Ragged, get_strategy, render
from hf_cot_distill.data.synthetic.schedules import select_drop_examples


def example_cot_flags(config: CoTICLConfig, group: TaskGroup, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Which examples carry their CoT: bool ``(T, K)``, and the per-task probability ``(T,)``."""
    probs = config.cot_probs(group.task_indices, split)
    strategy = get_strategy(config.prompt_strategy)
    t, k = len(group.task_indices), group.n_examples
    if not strategy.per_example_cot:
        return np.full((t, k), strategy.carries_cot), probs
    key = _random.keys(config.seed, "cot_flag", _random.SPLITS[split], group.task_indices)
    return _random.uniform(key, k) < probs[:, None], probs


@dataclass
class TaskBatch:
    """Generated and rendered tasks, in the order of the requested task indices."""

    config: CoTICLConfig
    split: str
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self) -> list[dict]:
        return self.table.to_pylist()


def _list_array(r: Ragged, dtype: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(r.offsets, pa.int32()), pa.array(r.values, dtype))


def _nested(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """``(T, A, B)`` array -> list<list<dtype>> with T rows of A lists of B values."""
    t, a, b = values.shape
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, t * a * b + 1, b, dtype=np.int32)), pa.array(values.reshape(-1), dtype)
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(0, t * a + 1, a, dtype=np.int32)), inner)


ARROW_SCHEMA = pa.schema(
    [
        ("task_index", pa.int64()),
        ("n_inputs", pa.int32()),
        ("n_parents", pa.int32()),
        ("chain_length", pa.int32()),
        ("n_examples", pa.int32()),
        ("cot_example_prob", pa.float32()),
        ("num_cot_examples", pa.int32()),
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("attention_mask", pa.list_(pa.int8())),
        ("section_ids", pa.list_(pa.int8())),
        ("eval_input_ids", pa.list_(pa.int32())),
        ("eval_target_ids", pa.list_(pa.int32())),
        ("answer", pa.int32()),
        ("example_inputs", pa.list_(pa.list_(pa.int32()))),
        ("example_chains", pa.list_(pa.list_(pa.int32()))),
        ("example_has_cot", pa.list_(pa.bool_())),
        ("dag", pa.list_(pa.list_(pa.int32()))),
    ]
)


def _group_table(config: CoTICLConfig, group: TaskGroup, split: str) -> pa.Table:
    strategy = get_strategy(config.prompt_strategy)
    has_cot, probs = example_cot_flags(config, group, split)
    n = group.n_inputs
    out = render(strategy, group.tokens, n, has_cot, config.special_tokens)
    t = len(group.task_indices)
    ones = Ragged(np.ones(len(out.input_ids.values), dtype=np.int8), out.input_ids.offsets)
    cols = {
        "task_index": pa.array(group.task_indices, pa.int64()),
        "n_inputs": pa.array(np.full(t, n), pa.int32()),
        "n_parents": pa.array(np.full(t, group.n_parents), pa.int32()),
        "chain_length": pa.array(np.full(t, group.chain_length), pa.int32()),
        "n_examples": pa.array(np.full(t, group.n_examples), pa.int32()),
        "cot_example_prob": pa.array(probs, pa.float32()),
        "num_cot_examples": pa.array(has_cot.sum(axis=1), pa.int32()),
        "input_ids": _list_array(out.input_ids, pa.int32()),
        "labels": _list_array(out.labels, pa.int32()),
        "attention_mask": _list_array(ones, pa.int8()),
        "section_ids": _list_array(out.section_ids, pa.int8()),
        "eval_input_ids": _list_array(out.eval_input_ids, pa.int32()),
        "eval_target_ids": _list_array(out.eval_target_ids, pa.int32()),
        "answer": pa.array(group.tokens[:, -1, -1], pa.int32()),
        "example_inputs": _nested(group.tokens[:, :, :n], pa.int32()),
        "example_chains": _nested(group.tokens[:, :, n:], pa.int32()),
        "example_has_cot": _list_array(
            Ragged(has_cot.reshape(-1), np.arange(0, t * group.n_examples + 1, group.n_examples)), pa.bool_()
        ),
        "dag": _nested(group.dags, pa.int32()),
    }
    return pa.table(cols, schema=ARROW_SCHEMA)


def generate_batch(
    config: CoTICLConfig, task_indices: np.ndarray | list[int] | range, split: str = "train"
) -> TaskBatch:
    """Generate and render the tasks with these indices (in this order) as one Arrow table."""
    idx = check_int_array("task_indices", task_indices, minimum=0)
    groups = generate_groups(config, idx, split)
    if not groups:
        return TaskBatch(config, split, ARROW_SCHEMA.empty_table())
    tables = [_group_table(config, g, split) for g in groups]
    positions = np.concatenate([g.positions for g in groups])
    table = pa.concat_tables(tables)
    if len(groups) > 1:  # restore the requested order (one group is already in order)
        table = table.take(pa.array(np.argsort(positions, kind="stable")))
    return TaskBatch(config, split, table)


def generate_task(config: CoTICLConfig, task_index: int, split: str = "train") -> dict:
    """One task as a row dict (convenience; batch generation gives identical rows)."""
    return generate_batch(config, [task_index], split).rows()[0]


def eval_view(
    config: CoTICLConfig, row: dict, drop_k: int = 0, drop_mode: str = "first_k"
) -> tuple[list[int], list[int]]:
    """The eval prompt of a row, with the think block dropped from ``drop_k`` context examples.

    Returns ``(eval_input_ids, eval_target_ids)``. With ``drop_k=0`` this equals the row's own
    ``eval_input_ids`` / ``eval_target_ids``.
    """
    strategy = get_strategy(config.prompt_strategy)
    n = int(row["n_inputs"])
    tokens = np.concatenate(
        [
            np.asarray(row["example_inputs"], dtype=np.int64),
            np.asarray(row["example_chains"], dtype=np.int64),
        ],
        axis=1,
    )[None]
    has_cot = np.asarray(row["example_has_cot"], dtype=bool)[None]
    if not strategy.carries_cot and drop_k:
        raise ValueError(
            f"drop_k={drop_k} but prompt_strategy={config.prompt_strategy!r} has no think blocks to drop."
        )
    eval_flags = has_cot.copy()
    if drop_k:
        drop = select_drop_examples(
            has_cot[0, :-1], drop_k, drop_mode, seed=config.seed, task_index=int(row["task_index"])
        )
        eval_flags[0, drop] = False
    out = render(strategy, tokens, n, has_cot, config.special_tokens, eval_has_cot=eval_flags)
    return out.eval_input_ids.row(0).tolist(), out.eval_target_ids.row(0).tolist()


def decode_tokens(config: CoTICLConfig, ids: list[int], section_ids: list[int] | None = None) -> str:
    """Readable rendering of token ids; with section ids, each section run is tagged ``P:``/``C:``/``A:``."""
    names = config.special_tokens.names() if config.special_tokens else {}
    words = [names.get(int(i), str(int(i))) for i in ids]
    if section_ids is None:
        return " ".join(words)
    parts, current = [], None
    for word, sec in zip(words, section_ids):
        if sec != current:
            parts.append(f"| {SECTION_NAMES[int(sec)].upper()}:")
            current = sec
        parts.append(word)
    return " ".join(parts)
