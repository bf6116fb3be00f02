"""Symbolic word tasks (CoT-Recipe, §2 of MISSION.md) rendered as chat messages.

A task has one DAG over ``N`` input words and ``C`` chain words; each of its ``K`` examples
draws fresh random lowercase input words of length ``word_length``. Chain word ``j`` is the
concatenation of the second halves of its parent words (parents sorted by position), with
every letter shifted by ``shift`` (``+1``: ``a→b``, ``z→a``). The last chain word is the answer.

Rendered as a conversation: a system prompt explaining the format, then per example a user
turn listing the input words and an assistant turn that is either a CoT solution (think
header, one ``Step i: <word>`` line per intermediate word, answer header, ``\\boxed{answer}``)
or a direct one (answer header and ``\\boxed{answer}``), chosen per example with the
CoT-Recipe probability. The last assistant turn is the target. Plain strings: no tokenizer.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from hf_cot_distill.core.validation import check_choice, check_int, check_probability
from hf_cot_distill.data.synthetic import _random
from hf_cot_distill.data.synthetic.schedules import CoTSchedule

LETTERS = np.array(list(string.ascii_lowercase))
DEFAULT_SYSTEM_PROMPT = (
    "You solve symbolic word puzzles. Each puzzle gives input words. Every new word is built from "
    "earlier words by a fixed hidden rule, the same for every example of this conversation. "
    "Learn the rule from the examples. When you reason, write '{think}' followed by one line "
    "'Step i: <word>' per intermediate word; always finish with '{answer}' and the final word "
    "as \\boxed{<word>}."
)


@dataclass(frozen=True)
class SymbolicConfig:
    """Knobs of the symbolic word tasks (defaults: the paper's)."""

    word_length: int = 8
    n_inputs: int = 4
    n_parents: int = 2
    chain_length: int = 3
    n_examples: int = 40
    shift: int = 1
    cot_example_prob: float = 1.0
    cot_schedule: CoTSchedule | None = None
    think_header: str = "### Reasoning"
    answer_header: str = "### Answer"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    num_tasks: int = 1000
    num_eval_tasks: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.cot_schedule, dict):
            object.__setattr__(self, "cot_schedule", CoTSchedule.from_mapping(self.cot_schedule))
        fix = "use >= 2 so that a word has a second half"
        check_int("SymbolicConfig.word_length", self.word_length, minimum=2, fix=fix)
        for name in ("n_inputs", "n_parents", "chain_length", "n_examples", "num_tasks"):
            check_int(f"SymbolicConfig.{name}", getattr(self, name), minimum=1)
        for name in ("num_eval_tasks", "seed"):
            check_int(f"SymbolicConfig.{name}", getattr(self, name), minimum=0)
        check_int("SymbolicConfig.shift", self.shift)
        if self.n_parents > self.n_inputs:
            raise ValueError(
                f"n_parents={self.n_parents} > n_inputs={self.n_inputs}: every chain word needs distinct "
                "parents among the words available; use n_parents <= n_inputs."
            )
        check_probability("SymbolicConfig.cot_example_prob", self.cot_example_prob)

    def cot_prob(self, task_index: int, split: str) -> float:
        if self.cot_schedule is None or split != "train":
            return self.cot_example_prob
        return float(self.cot_schedule(task_index, self.num_tasks))


def shift_word(word: str, shift: int) -> str:
    """Shift every lowercase letter by ``shift`` positions, wrapping (``z`` + 1 = ``a``)."""
    return "".join(chr((ord(ch) - 97 + shift) % 26 + 97) for ch in word)


def chain_word(parent_words: list[str], shift: int) -> str:
    """The definition: concatenated second halves of the parents (in position order), shifted."""
    return shift_word("".join(w[len(w) // 2 :] for w in parent_words), shift)


def sample_dag(config: SymbolicConfig, task_index: int, split: str) -> list[list[int]]:
    """Parents (ascending positions) of each chain word: ``dag[j]`` ⊂ ``0 .. N + j - 1``."""
    n, c = config.n_inputs, config.chain_length
    key = _random.keys(config.seed, "dag", 1000 + _random.SPLITS[split], task_index, np.arange(c))
    scores = _random.uniform(key, n + c)
    scores[np.arange(n + c)[None, :] >= (n + np.arange(c))[:, None]] = np.inf
    return np.sort(np.argsort(scores, axis=1, kind="stable")[:, : config.n_parents], axis=1).tolist()


def generate_symbolic_task(config: SymbolicConfig, task_index: int, split: str = "train") -> dict:
    """One symbolic task: words, DAG and the chat ``messages`` (a pure function of its index)."""
    check_choice("split", split, sorted(_random.SPLITS))
    check_int("task_index", task_index, minimum=0)
    n, c, k = config.n_inputs, config.chain_length, config.n_examples
    dag = sample_dag(config, task_index, split)
    sid = _random.SPLITS[split]
    key = _random.keys(config.seed, "symbolic_words", sid, task_index)
    letters = LETTERS[_random.integers(key, k * n * config.word_length, 26)]
    letters = letters.reshape(k, n, config.word_length)
    p = config.cot_prob(task_index, split)
    flags = _random.uniform(_random.keys(config.seed, "cot_flag", 1000 + sid, task_index), k) < p

    # Placeholders are replaced literally (not str.format) so user prompts may contain braces.
    system = config.system_prompt.replace("{think}", config.think_header)
    messages = [{"role": "system", "content": system.replace("{answer}", config.answer_header)}]
    examples = []
    for e in range(k):
        words = ["".join(w) for w in letters[e]]
        for j in range(c):
            words.append(chain_word([words[i] for i in dag[j]], config.shift))
        examples.append(words)
        messages.append({"role": "user", "content": f"Input words: {' '.join(words[:n])}"})
        messages.append({"role": "assistant", "content": render_answer(config, words[n:], bool(flags[e]))})
    return {
        "task_index": task_index,
        "messages": messages,
        "input_words": [w[:n] for w in examples],
        "chain_words": [w[n:] for w in examples],
        "example_has_cot": flags.tolist(),
        "dag": dag,
        "answer": examples[-1][-1],
        "cot_example_prob": p,
    }


def render_answer(config: SymbolicConfig, chain: list[str], with_cot: bool) -> str:
    """An assistant answer: CoT (think header + steps) or direct, ending in ``\\boxed{answer}``."""
    lines = []
    if with_cot:
        lines.append(config.think_header)
        lines.extend(f"Step {i + 1}: {w}" for i, w in enumerate(chain[:-1]))
    lines.append(config.answer_header)
    lines.append(f"\\boxed{{{chain[-1]}}}")
    return "\n".join(lines)
