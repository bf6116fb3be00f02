"""The Trainer's console when quiet (:mod:`hf_cot_distill.core.console`): one progress bar per phase.

``transformers``' ``ProgressCallback`` prints every log as a raw dict of ~20 keys on stdout.
:class:`ConsoleProgressCallback` replaces it: a bar for the training phase whose postfix holds the
key figures of the latest log (loss, CE / KD per section, tokens per second), a transient bar per
evaluation, and one line per evaluation result, all on stderr. The logs themselves are not touched:
``trainer.state.log_history`` (hence ``log_history.json``, ``train_metrics.json`` and the
checkpoints' ``trainer_state.json``) holds every value, and ``--verbose`` restores the raw stream.
"""

from __future__ import annotations

import math
import re
import sys
import time
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from hf_cot_distill.core.console import is_verbose
from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES

_SECTION_LOSS = re.compile(rf"(ce|kd)/({'|'.join(CONTENT_SECTION_NAMES)})")
# Not key figures: timings, counters of the bookkeeping, per-position detail and fixed baselines.
_NOT_SHOWN = re.compile(
    r"(^|_|/)(epoch|runtime|samples_per_second|steps_per_second|total_flos)$|position\d|baseline"
)


def _number(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def train_figures(logs: dict[str, Any], tokens_per_second: float | None = None) -> str:
    """``loss=2.84, ce/cot=2.97, kd/answer=0.41, 1.2k tok/s``: the key figures of a training log."""
    parts = [f"loss={_number(logs['loss'])}"] if "loss" in logs else []
    parts += [f"{k}={_number(v)}" for k, v in logs.items() if _SECTION_LOSS.fullmatch(k)]
    if tokens_per_second is not None:
        parts.append(f"{_rate(tokens_per_second)} tok/s")
    return ", ".join(parts)


def result_line(step: int, logs: dict[str, Any]) -> str | None:
    """``step 20 eval: loss=2.31, ce/cot=2.4, answer_accuracy@drop0=0.125``: an evaluation's key
    figures (``eval_`` / ``cot_icl/`` prefixes dropped), or None when it has none."""
    shown = []
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or _NOT_SHOWN.search(key):
            continue
        name = key.removeprefix("eval_").removeprefix("cot_icl/")
        shown.append(f"{name}={_number(value)}")
    return f"step {step} eval: {', '.join(shown)}" if shown else None


class ConsoleProgressCallback(TrainerCallback):
    """One bar per phase with the key figures, on stderr, from the main process only."""

    def __init__(self) -> None:
        self.training_bar: Any = None
        self.eval_bar: Any = None
        self._step = 0
        self._last: tuple[float, int] | None = None  # (time, tokens_forwarded) at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                disable=bool(args.disable_tqdm),
            )
        self._step = state.global_step
        done = [e["tokens_forwarded"] for e in state.log_history if "tokens_forwarded" in e]  # a resume
        self._last = (time.perf_counter(), int(done[-1]) if done else 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self._step)
        self._step = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or eval_dataloader is None:
            return
        if self.eval_bar is None:
            try:
                total = len(eval_dataloader)
            except TypeError:
                total = None
            self.eval_bar = tqdm(
                total=total,
                desc="eval",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
                disable=bool(args.disable_tqdm),
            )
        self.eval_bar.update(1)

    def _close_eval_bar(self) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
        self.eval_bar = None

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_eval_bar()

    def on_predict(self, args, state, control, **kwargs):
        self._close_eval_bar()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            rate = self._tokens_per_second(logs.get("tokens_forwarded"))
            if self.training_bar is not None:
                self.training_bar.set_postfix_str(train_figures(logs, rate), refresh=True)
        elif "train_runtime" not in logs:  # the final summary: the command prints its own
            line = result_line(state.global_step, logs)
            if line is not None:
                tqdm.write(line, file=sys.stderr)

    def _tokens_per_second(self, tokens: Any) -> float | None:
        now = time.perf_counter()
        if not isinstance(tokens, (int, float)):
            return None
        last, self._last = self._last, (now, int(tokens))
        if last is None or now <= last[0]:
            return None
        return (int(tokens) - last[1]) / (now - last[0])

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.close()
        self.training_bar = None


def use_console(trainer: Any) -> None:
    """Quiet console (not ``--verbose``): replace the Trainer's raw-dict progress printer by
    :class:`ConsoleProgressCallback`. Verbose: leave the Trainer's own."""
    if is_verbose():
        return
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ConsoleProgressCallback())
