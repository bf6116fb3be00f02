"""Sweeps survive a bad point: it is recorded with its error, the others run, the exit code says so."""

from __future__ import annotations

import json
from pathlib import Path

from hf_cot_distill.cli import main
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _spec(tmp_path: Path, models: dict, data: Path, name: str, extra: str = "") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"recipe: {ROOT / 'recipes/tiny/kd_messages.yaml'}\n"
        f"output_root: {tmp_path / name}\n"
        "grid: {learning_rate: [1.0e+12, 3.0e-3]}\n"
        f"set: {{model_name_or_path: {models['student']}, teacher_model_name_or_path: {models['teacher']}, "
        f"dataset_name: {data}, max_steps: 2}}\n{extra}"
    )
    return spec


def test_a_diverged_point_is_recorded_and_the_others_run(tmp_path, capsys):
    models = _tiny_pair(tmp_path, tiny_qwen2_tokenizer())
    data = _messages_dataset(tmp_path)
    spec = _spec(tmp_path, models, data, "runs0")
    assert main(["sweep", "--config", str(spec)]) == 1
    out = capsys.readouterr()
    assert (
        "2 runs, 1 failed" in out.out and "learning_rate=1000000000000.0 failed: training diverged" in out.err
    )
    summary = json.loads((tmp_path / "runs0" / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["failed", "ok"]
    assert "TrainingDivergedError" in summary[0]["error"] and summary[1]["metrics"]["train_loss"] > 0
    table = (tmp_path / "runs0" / "summary.md").read_text()
    assert "| status |" in table.splitlines()[0] and "TrainingDivergedError" in table
    # a re-run skips the finished point, says so, and tries the failed one again
    assert main(["sweep", "--config", str(spec)]) == 1
    assert "learning_rate=0.003: finished before, skipped" in capsys.readouterr().out


def test_on_error_stop_stops_at_the_first_failure(tmp_path, capsys):
    models = _tiny_pair(tmp_path, tiny_qwen2_tokenizer())
    data = _messages_dataset(tmp_path)
    spec = _spec(tmp_path, models, data, "runs16", "on_error: stop\n")
    assert main(["sweep", "--config", str(spec)]) == 1
    summary = json.loads((tmp_path / "runs16" / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["failed"]
    bad = _spec(tmp_path, models, data, "bad", "on_error: later\n")
    capsys.readouterr()
    assert main(["sweep", "--config", str(bad)]) == 2
    assert "on_error='later': must be one of 'continue', 'stop'" in capsys.readouterr().err
