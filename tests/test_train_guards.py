"""Guards of `hf-cot-distill train` and SectionKDTrainer: a diverged run stops and saves nothing,
pickles are refused, and bad data is refused or reported (dropped rows counted), never silent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2ForCausalLM

from hf_cot_distill.cli import main
from hf_cot_distill.trainers import SectionKDTrainer
from hf_cot_distill.trainers.kd_trainer import TrainingDivergedError
from tests.test_kd_trainer import make_args, make_rows, params, student_teacher
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_models import tiny_qwen2
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
KD_RECIPE = str(ROOT / "recipes/tiny/kd_messages.yaml")


def _kd_argv(models: dict[str, Path], data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", KD_RECIPE, "--model_name_or_path", str(models["student"]),
            "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data),
            "--output_dir", str(out), "--max_steps", "2", *extra]  # fmt: skip


def _row(a: int, b: int, cot: str | None = None) -> dict[str, Any]:
    answer = f"The answer is \\boxed{{{a + b}}}."
    content = answer if cot is None else f"{cot}\n\n{answer}"
    return {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                         {"role": "assistant", "content": content}]}  # fmt: skip


def _folder(tmp_path: Path, name: str, splits: dict[str, list[dict[str, Any]]]) -> Path:
    path = tmp_path / name
    path.mkdir()
    for split, rows in splits.items():
        empty = Dataset.from_list([_row(1, 1)]).select([])  # no rows, but the columns
        ds = Dataset.from_list(rows) if rows else empty
        ds.to_parquet(str(path / f"{split}.parquet"))
    return path


# ---- divergence: SectionKDTrainer (library users get it too) --------------------------------
@pytest.mark.parametrize("nan_filter", [False, True])
def test_nonfinite_loss_stops_before_the_optimizer_step(tmp_path: Any, nan_filter: bool) -> None:
    student, teacher = student_teacher()
    with torch.no_grad():
        student.model.norm.weight[0] = float("nan")  # every hidden state, hence the loss, is NaN
    before = params(student)
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path, logging_nan_inf_filter=nan_filter, gradient_accumulation_steps=2),
        train_dataset=Dataset.from_list(make_rows(8)),
    )  # fmt: skip
    with pytest.raises(
        TrainingDivergedError, match=r"diverged at step 1: the training loss is nan.*learning_rate"
    ):
        trainer.train()
    after = params(student)  # no optimizer step ran: the weights are as they were (NaN included)
    assert all(torch.allclose(after[n], before[n], rtol=0, atol=0, equal_nan=True) for n in before)


def test_nonfinite_grad_norm_stops_before_the_optimizer_step(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    student.lm_head.weight.register_hook(lambda grad: grad * float("inf"))  # finite loss, inf gradient
    before = params(student)
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path), train_dataset=Dataset.from_list(make_rows(8))
    )
    with pytest.raises(TrainingDivergedError, match="the gradient norm is"):
        trainer.train()
    assert all(torch.equal(p.detach(), before[n]) for n, p in student.named_parameters())


def test_save_model_refuses_nan_parameters(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path, max_steps=1), train_dataset=Dataset.from_list(make_rows(4))
    )
    trainer.train()
    with torch.no_grad():
        student.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")
    out = tmp_path / "final"
    with pytest.raises(TrainingDivergedError, match=r"refusing to save .*1 parameter tensors hold NaN/inf"):
        trainer.save_model(str(out))
    assert not (out / "model.safetensors").exists()


def test_cli_diverged_run_exits_2_and_writes_no_model(tmp_path: Any, capsys: Any) -> None:
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    student = Qwen2ForCausalLM.from_pretrained(models["student"])
    with torch.no_grad():
        student.model.norm.weight[0] = float("nan")
    student.save_pretrained(models["student"])
    out = tmp_path / "run"
    assert main(_kd_argv(models, _messages_dataset(tmp_path), out)) == 2
    assert "training diverged at step 1" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not (out / "train_metrics.json").exists()


# ---- safetensors only ---------------------------------------------------------------------
def test_pickle_models_are_refused_with_the_file_named(tmp_path: Any, capsys: Any) -> None:
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    pickled = {}
    for name in ("student", "teacher"):
        pickled[name] = tmp_path / f"{name}_bin"
        model = Qwen2ForCausalLM.from_pretrained(models[name])
        model.config.save_pretrained(pickled[name])
        torch.save(model.state_dict(), pickled[name] / "pytorch_model.bin")  # an old-style pickle checkpoint
        tok.save_pretrained(pickled[name])
    data = _messages_dataset(tmp_path)
    for field, swap in (("teacher_model_name_or_path", "teacher"), ("model_name_or_path", "student")):
        argv = _kd_argv({**models, swap: pickled[swap]}, data, tmp_path / f"out_{swap}")
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{field}='{pickled[swap]}'" in err and "pytorch_model.bin" in err and "Traceback" not in err
        assert "use_safetensors=False).save_pretrained(" in err  # how to convert it
    with pytest.raises(ValueError, match="pickle weights only"):
        SectionKDTrainer(tiny_qwen2(), str(pickled["teacher"]), args=make_args(tmp_path))
    with pytest.raises(ValueError, match=r"model='.*student_bin'.*pytorch_model\.bin"):
        SectionKDTrainer(str(pickled["student"]), args=make_args(tmp_path))


# ---- data: clear refusals --------------------------------------------------------------------
def test_data_errors_name_the_problem(tmp_path: Any, capsys: Any, monkeypatch: Any) -> None:
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    monkeypatch.chdir(tmp_path)
    cases = [
        (_kd_argv(models, Path("nonexistent_dir"), tmp_path / "o1"),
         ["dataset_name='nonexistent_dir': not a local folder", "HF_HUB_OFFLINE=1"]),
        (_kd_argv(models, _folder(tmp_path, "empty", {"train": []}), tmp_path / "o2"),
         ["split 'train' has 0 rows"]),
        (_kd_argv(models, _folder(tmp_path, "nothink", {"train": [_row(i, 1) for i in range(8)]}), tmp_path / "o3"),
         ["0 of 8 train rows have a CoT (all are empty_cot", "supervision_preset='cot' supervises only cot"]),
        (_kd_argv(models, _messages_dataset(tmp_path), tmp_path / "o4", "--truncation_policy", "keep_first",
                  "--truncation_kwargs", '{"max_tokens": 8}'),
         ["0 of 12 train rows have a cot token to train on: truncation_policy='keep_first' cuts them from all 12"]),
    ]  # fmt: skip
    notok = tmp_path / "student_notok"
    Qwen2ForCausalLM.from_pretrained(models["student"]).save_pretrained(notok)
    cases.append(
        (_kd_argv({**models, "student": notok}, _messages_dataset(tmp_path), tmp_path / "o5"),
         [f"'{notok}' has no tokenizer", "set tokenizer_name_or_path"])
    )  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        for text in expected:
            assert text in err, (text, err)
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()  # refused before any output


def test_dropped_rows_are_reported_and_recorded(tmp_path: Any, capsys: Any) -> None:
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    good = [_row(i, 2 * i, f"<think>{i} plus {2 * i} makes {3 * i}.</think>") for i in range(10)]
    cut = [_row(7, 8, "<think>7 plus 8 makes"), _row(1, 1, "<think>1 plus 1")]  # no closing marker
    data = _folder(tmp_path, "cut", {"train": good + cut})
    out = tmp_path / "run"
    assert main(_kd_argv(models, data, out)) == 0
    err = capsys.readouterr().err
    assert "train: 2 of 12 rows dropped (missing_close_marker 2)" in err
    rows = json.loads((out / "train_metrics.json").read_text())["data_rows"]
    assert rows == {
        "train": {"rows": 12, "dropped": 2, "dropped_by_reason": {"missing_close_marker": 2}, "used": 10}
    }
    card = (out / "README.md").read_text()
    assert "rows_dropped_before_training: 2" in card and "missing_close_marker: 2" in card

    # every eval row over max_length: refused, naming the split and the fix
    long_eval = [_row(i, i, "<think>" + " plus one" * 80 + "</think>") for i in range(3)]
    data = _folder(tmp_path, "long", {"train": good, "test": long_eval})
    argv = _kd_argv(models, data, tmp_path / "run2", "--dataset_eval_split", "test", "--max_length", "128")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "eval: 3 of 3 rows dropped (too_long 3)" in err
    assert "eval split 'test': 0 rows left" in err and "raise max_length (now 128)" in err
