"""Guards of `hf-cot-distill train` and SectionKDTrainer: models load from safetensors only (a pickle
is refused, naming the file and how to convert it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2ForCausalLM

from hf_cot_distill.cli import main
from hf_cot_distill.trainers import SectionKDTrainer
from tests.test_kd_trainer import make_args
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_models import tiny_qwen2
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
KD_RECIPE = str(ROOT / "recipes/tiny/kd_messages.yaml")


def _kd_argv(models: dict[str, Path], data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", KD_RECIPE, "--model_name_or_path", str(models["student"]),
            "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data),
            "--output_dir", str(out), "--max_steps", "2", *extra]  # fmt: skip


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
