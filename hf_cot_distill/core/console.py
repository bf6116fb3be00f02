"""The console: quiet by default, the raw streams with ``--verbose``.

Quiet (the default of every command):

- a Python warning is one line ``warning: <message>`` on stderr, without the source line;
- DeepSpeed's log records never reach stdout (its logger writes there): warnings become one
  ``warning:`` line on stderr, its notice that it fell back to the CPU is dropped;
- the Trainer shows one progress bar per phase with the key figures instead of printing every
  log as a raw dict (:mod:`hf_cot_distill.trainers.console`); every logged value still goes to
  the run's files (``log_history.json``, ``train_metrics.json``, checkpoints' ``trainer_state.json``).

Verbose (``--verbose``, or ``HF_COT_DISTILL_VERBOSE=1`` in the environment): the libraries' own
output, unchanged. The setting lives in the environment so that worker processes inherit it.

Imports nothing heavy: the command line calls :func:`configure` before torch is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "HF_COT_DISTILL_VERBOSE"
_FALSE = ("", "0", "false", "no", "off")
_ORIGINAL_FORMATWARNING = warnings.formatwarning
# DeepSpeed's notice when no GPU is found: expected on a CPU machine, nothing to act on.
_DEEPSPEED_NOISE = ("Setting accelerator to CPU",)


def is_verbose() -> bool:
    """Whether the raw streams were asked for (``--verbose`` / ``HF_COT_DISTILL_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in _FALSE


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """``warnings.formatwarning`` of the quiet console: ``warning: <message>``, one line."""
    return f"warning: {' '.join(str(message).split())}\n"


class _DeepSpeedToStderr(logging.Filter):
    """On DeepSpeed's logger: a warning or error becomes one ``warning:`` line on stderr, the rest
    is dropped; the logger's own stdout handler never runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING and not message.startswith(_DEEPSPEED_NOISE):
            print(f"warning: {message}", file=sys.stderr)
        return False


_DEEPSPEED_FILTER = _DeepSpeedToStderr()


@contextmanager
def session(verbose: bool) -> Iterator[None]:
    """:func:`configure` for the duration of one command, then the console as it was before
    (the command line runs each command in one; a program may call it several times)."""
    before = (os.environ.get(VERBOSE_ENV), warnings.formatwarning)
    had_filter = _DEEPSPEED_FILTER in logging.getLogger("DeepSpeed").filters
    configure(verbose)
    try:
        yield
    finally:
        env, warnings.formatwarning = before
        if env is None:
            os.environ.pop(VERBOSE_ENV, None)
        else:
            os.environ[VERBOSE_ENV] = env
        deepspeed_logger = logging.getLogger("DeepSpeed")
        if had_filter:
            deepspeed_logger.addFilter(_DEEPSPEED_FILTER)
        else:
            deepspeed_logger.removeFilter(_DEEPSPEED_FILTER)


def configure(verbose: bool) -> None:
    """Set the console of this process (and of the processes it starts) quiet or verbose.

    Call it before DeepSpeed is imported: its logger is created at import, and the filter
    added here to the logger of that name stays on it.
    """
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if verbose:
        warnings.formatwarning = _ORIGINAL_FORMATWARNING
        deepspeed_logger.removeFilter(_DEEPSPEED_FILTER)
    else:
        warnings.formatwarning = one_line_warning
        deepspeed_logger.addFilter(_DEEPSPEED_FILTER)


def warn(message: str) -> None:
    """A warning for the user: one ``warning: <message>`` line on stderr in the quiet console (through
    Python's warnings, so a program can filter or record it as a ``UserWarning``)."""
    warnings.warn(" ".join(message.split()), UserWarning, stacklevel=2)
