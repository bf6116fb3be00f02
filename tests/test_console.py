"""The quiet console (core/console.py, trainers/console.py): one-line warnings, DeepSpeed off stdout,
the key figures of a log; --verbose gives the raw streams back."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from hf_cot_distill.core import console
from hf_cot_distill.trainers.console import result_line, train_figures

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys, warnings
from hf_cot_distill.core.console import session
with session(sys.argv[1] == "verbose"):
    warnings.warn("the first line\\n  and the second", UserWarning)
    import deepspeed  # its logger writes to stdout; quiet: its warnings are one line on stderr
    from deepspeed.utils import logger
    logger.warning("probe from deepspeed")
    logger.info("an info line")
"""


def _run(mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "probe.py"  # a file, so that a warning has a source line to show
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    return subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )


def test_quiet_console_one_line_warnings_and_nothing_on_stdout(tmp_path):
    quiet = _run("quiet", tmp_path)
    assert quiet.stdout == ""  # DeepSpeed's "Setting accelerator to CPU" and its probe stay off stdout
    lines = quiet.stderr.splitlines()
    assert "warning: the first line and the second" in lines  # one line, no source line
    assert "warning: probe from deepspeed" in lines
    assert "warnings.warn(" not in quiet.stderr and "an info line" not in quiet.stderr


def test_verbose_console_keeps_the_raw_streams(tmp_path):
    verbose = _run("verbose", tmp_path)
    assert "probe from deepspeed" in verbose.stdout  # DeepSpeed's own handler, as without us
    assert "UserWarning: the first line" in verbose.stderr
    assert 'warnings.warn("the first line' in verbose.stderr  # the source line


def test_session_restores_the_console(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    before = warnings.formatwarning
    with console.session(False):
        assert not console.is_verbose() and warnings.formatwarning is console.one_line_warning
        with console.session(True):
            assert console.is_verbose() and warnings.formatwarning is not console.one_line_warning
        assert not console.is_verbose() and warnings.formatwarning is console.one_line_warning
    assert warnings.formatwarning is before and console.VERBOSE_ENV not in os.environ
    monkeypatch.setenv(console.VERBOSE_ENV, "1")  # inherited from a parent command
    assert console.is_verbose()


def test_key_figures_of_a_training_log():
    logs = {
        "loss": 2.8437, "grad_norm": 2.3, "learning_rate": 1e-3, "ce/cot": 2.97, "kd/answer": 0.4112,
        "tokens_forwarded": 6208, "tokens_kd/cot": 0, "flops_counted": 3.1e9, "epoch": 1.0,
    }  # fmt: skip
    assert train_figures(logs, 1234.0) == "loss=2.844, ce/cot=2.97, kd/answer=0.4112, 1.23k tok/s"
    assert train_figures(logs) == "loss=2.844, ce/cot=2.97, kd/answer=0.4112"


def test_result_line_of_an_evaluation():
    cot_icl = {
        "cot_icl/answer_accuracy@drop0": 0.125, "cot_icl/chain_accuracy@drop0": 0.0,
        "cot_icl/position0_accuracy@drop0": 0.25, "cot_icl/baseline_uniform": 0.018, "epoch": 0.6,
    }  # fmt: skip
    assert result_line(5, cot_icl) == "step 5 eval: answer_accuracy@drop0=0.125, chain_accuracy@drop0=0"
    evaluation = {"eval_loss": 2.31, "eval_ce/cot": 2.4, "eval_runtime": 0.2, "eval_samples_per_second": 40.0}
    assert result_line(20, evaluation) == "step 20 eval: loss=2.31, ce/cot=2.4"
    assert result_line(3, {"epoch": 1.0}) is None
