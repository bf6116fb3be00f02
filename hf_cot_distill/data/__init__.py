"""Data: the CoT-ICL Lab / CoT-Recipe generators, symbolic tasks, trace formats and the builder."""

from hf_cot_distill.data.synthetic.cot_icl_lab import (
    ACTIVATIONS,
    PROMPT_STRATEGIES,
    CoTICLConfig,
    SpecialTokens,
    embedding_table,
    generate_groups,
)
from hf_cot_distill.data.synthetic.generate import (
    TaskBatch,
    decode_tokens,
    eval_view,
    generate_batch,
    generate_task,
)
from hf_cot_distill.data.synthetic.schedules import CoTSchedule, select_drop_examples

__all__ = [
    "ACTIVATIONS",
    "PROMPT_STRATEGIES",
    "CoTICLConfig",
    "CoTSchedule",
    "SpecialTokens",
    "TaskBatch",
    "decode_tokens",
    "embedding_table",
    "eval_view",
    "generate_batch",
    "generate_groups",
    "generate_task",
    "select_drop_examples",
]
