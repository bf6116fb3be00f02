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

Two renderings (``SymbolicConfig.render``), same words, DAG and CoT flags:

* ``"ours"`` (default): plain-text headers (``### Reasoning`` / ``### Answer``), a short system
  prompt and ``Input words: w1 w2 w3 w4``. Headers are ordinary text, so any tokenizer and chat
  template reads them the same way, and the ``symbolic`` trace markers find them.
* ``"paper"``: the CoT-Recipe code's texts, character for character: :data:`PAPER_SYSTEM_PROMPT`,
  ``Given the input words: w1, w2, w3, w4, what is the final answer after the string
  transformations?`` and the headers ``<|im_start|>think`` / ``<|im_start|>final answer``. In the
  Qwen vocabularies ``<|im_start|>`` is one special token (151644) also inside an assistant turn;
  with a tokenizer that lacks it, the headers are ordinary text. Section ids for these turns: the
  ``<|im_start|>`` that opens ``think`` is the first COT token, the one that opens ``final
  answer`` the first ANSWER token (the ``close_opens_answer`` rule of the trace markers).

Both render an assistant turn as its lines joined by ``\\n``: ``think header``, ``Step i: <word>``
per intermediate word, ``answer header``, ``\\boxed{<answer>}`` (no newline at the end).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from hf_cot_distill.core.validation import check_choice, check_int, check_probability
from hf_cot_distill.data.synthetic import _random
from hf_cot_distill.data.synthetic.schedules import CoTSchedule

LETTERS = np.array(list(string.ascii_lowercase))
DEFAULT_THINK_HEADER = "### Reasoning"
DEFAULT_ANSWER_HEADER = "### Answer"
DEFAULT_SYSTEM_PROMPT = (
    "You solve symbolic word puzzles. Each puzzle gives input words. Every new word is built from "
    "earlier words by a fixed hidden rule, the same for every example of this conversation. "
    "Learn the rule from the examples. When you reason, write '{think}' followed by one line "
    "'Step i: <word>' per intermediate word; always finish with '{answer}' and the final word "
    "as \\boxed{<word>}."
)

RENDERS: tuple[str, ...] = ("ours", "paper")
# The CoT-Recipe code's texts (symbolic tasks, Kothapalli et al., ACL 2026), verbatim.
PAPER_THINK_HEADER = "<|im_start|>think"
PAPER_ANSWER_HEADER = "<|im_start|>final answer"
PAPER_SYSTEM_PROMPT = (
    "You are a helpful problem solver who follows instructions.\n\n"
    "Given some examples of string transformations, you must figure out the underlying transformation rule\n"
    "and apply it to the set of words in the last example.\n\n"
    "Instructions for the response:\n"
    "a. If you choose to think out loud, you must start your response with: <|im_start|>think\n.\n"
    "b. The final answer must always be provided in the: <|im_start|>final answer\n\\boxed{} format.\n"
    "c. You should not think or explain after providing the final answer.\n"
)


@dataclass(frozen=True)
class SymbolicConfig:
    """Knobs of the symbolic word tasks (defaults: the paper's).

    ``render``: ``"ours"`` (default) or ``"paper"`` (module docstring). ``"paper"`` fixes the
    system prompt and the headers to the paper's texts: left at our defaults they are replaced,
    set to anything else they are an error.
    """

    word_length: int = 8
    n_inputs: int = 4
    n_parents: int = 2
    chain_length: int = 3
    n_examples: int = 40
    shift: int = 1
    cot_example_prob: float = 1.0
    cot_schedule: CoTSchedule | None = None
    think_header: str = DEFAULT_THINK_HEADER
    answer_header: str = DEFAULT_ANSWER_HEADER
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    render: str = "ours"
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
        fix = "'ours' (plain-text headers, the default) or 'paper' (the CoT-Recipe code's texts)"
        check_choice("SymbolicConfig.render", self.render, RENDERS, fix=fix)
        if self.render == "paper":
            self._use_paper_texts()

    def _use_paper_texts(self) -> None:
        paper = {
            "think_header": (DEFAULT_THINK_HEADER, PAPER_THINK_HEADER),
            "answer_header": (DEFAULT_ANSWER_HEADER, PAPER_ANSWER_HEADER),
            "system_prompt": (DEFAULT_SYSTEM_PROMPT, PAPER_SYSTEM_PROMPT),
        }
        for name, (ours, theirs) in paper.items():
            value = getattr(self, name)
            if value == ours:
                object.__setattr__(self, name, theirs)
            elif value != theirs:
                raise ValueError(
                    f"SymbolicConfig.{name}={value!r}: render='paper' uses the paper's text ({theirs!r}); "
                    f"fix: remove {name}, or use render='ours' to set your own."
                )

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
        messages.append({"role": "user", "content": render_question(config, words[:n])})
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


def render_question(config: SymbolicConfig, input_words: list[str]) -> str:
    """A user turn listing the input words, in the config's rendering."""
    if config.render == "paper":
        return (
            f"Given the input words: {', '.join(input_words)}, what is the final answer after the string "
            "transformations?"
        )
    return f"Input words: {' '.join(input_words)}"


def render_answer(config: SymbolicConfig, chain: list[str], with_cot: bool) -> str:
    """An assistant answer: CoT (think header + steps) or direct, ending in ``\\boxed{answer}``."""
    lines = []
    if with_cot:
        lines.append(config.think_header)
        lines.extend(f"Step {i + 1}: {w}" for i, w in enumerate(chain[:-1]))
    lines.append(config.answer_header)
    lines.append(f"\\boxed{{{chain[-1]}}}")
    return "\n".join(lines)
