"""A resumed run is the same run: weights, losses and every counter the trainer reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_cot_distill.cli import main
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TIMING = {
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "wall_time_s",
    "peak_memory_mb",
}


def _metrics(folder: Path) -> dict:
    return {
        k: v for k, v in json.loads((folder / "train_metrics.json").read_text()).items() if k not in TIMING
    }


def _logged(folder: Path) -> list[dict]:
    """The training log entries, without wall-clock fields."""
    rows = json.loads((folder / "log_history.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows if "loss" in r]


@pytest.mark.parametrize(
    "extra", [[], ["--truncation_policy", "keep_first", "--truncation_kwargs", '{"max_tokens": 40}']]
)
def test_resumed_run_reports_what_the_uninterrupted_run_reports(tmp_path, extra):
    models = _tiny_pair(tmp_path, tiny_qwen2_tokenizer())
    data = _messages_dataset(tmp_path)
    argv = [
        "train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--model_name_or_path", str(models["student"]),
        "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data), "--max_steps", "3",
        "--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "2", *extra,
    ]  # fmt: skip
    full = tmp_path / "full"
    assert main([*argv, "--output_dir", str(full)]) == 0
    # an interrupted run: a copy of the folder as it was after step 1, resumed
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(full / "checkpoint-1", copy / "checkpoint-1")
    assert (
        main([*argv, "--output_dir", str(copy), "--resume_from_checkpoint", str(copy / "checkpoint-1")]) == 0
    )
    a, b = load_file(str(full / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same kernels, same shapes, same order: bit-identical
    assert _metrics(copy) == _metrics(full)  # tokens_forwarded, flops_counted, per-section tokens, data rows
    assert _logged(copy)[-1] == _logged(full)[-1]  # the step-2 log: per-section losses since step 1 included
    card_full, card_copy = ((f / "README.md").read_text() for f in (full, copy))
    compute = lambda card: [line for line in card.splitlines() if "tokens" in line or "flops" in line]  # noqa: E731
    assert compute(card_copy) == compute(card_full)


def test_resume_without_counters_is_refused(tmp_path, capsys):
    models = _tiny_pair(tmp_path, tiny_qwen2_tokenizer())
    data = _messages_dataset(tmp_path)
    argv = [
        "train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--model_name_or_path", str(models["student"]),
        "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data), "--max_steps", "2",
        "--save_strategy", "steps", "--save_steps", "1",
    ]  # fmt: skip
    out = tmp_path / "run"
    assert main([*argv, "--output_dir", str(out)]) == 0
    (out / "checkpoint-1" / "hf_cot_distill_counters-rank0.json").unlink()
    assert (
        main(
            [
                *argv,
                "--output_dir",
                str(tmp_path / "again"),
                "--resume_from_checkpoint",
                str(out / "checkpoint-1"),
            ]
        )
        == 2
    )
    assert "no hf_cot_distill_counters-rank0.json" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["missing/checkpoint-9", "true"])
def test_a_missing_checkpoint_fails_before_anything(tmp_path, target, capsys, monkeypatch):
    import hf_cot_distill.pipelines.train as train

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the checkpoint was checked")

    monkeypatch.setattr(train, "load_tokenizers", no_models)
    out = tmp_path / "run"
    argv = ["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--output_dir", str(out),
            "--resume_from_checkpoint", str(tmp_path / target) if target != "true" else "true"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "resume_from_checkpoint" in err and "fix:" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
