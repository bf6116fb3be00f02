"""`hf-cot-distill train` end to end on the tiny recipes: generator meta-training and section KD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from hf_cot_distill.cli import main
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_train_cot_icl_recipe_from_scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe names its generator YAML relative to the repo root
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            "recipes/tiny/cot_icl_lab_scratch.yaml",
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--eval_steps",
            "4",
            "--generator_num_tasks",
            "64",
            "--generator_num_eval_tasks",
            "8",
        ]
    )
    assert code == 0
    assert (out / "model.safetensors").is_file() and not (out / "training_args.bin").exists()
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert 0.0 <= metrics["cot_icl/answer_accuracy@drop0"] <= 1.0
    assert metrics["cot_icl/baseline_uniform"] == pytest.approx(1 / 55)  # V=64, 9 reserved ids
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "cot_icl_lab_scratch.yaml" in card


def _tiny_pair(tmp_path, tokenizer):
    paths = {}
    for name, hidden, layers in (("student", 32, 1), ("teacher", 48, 2)):
        torch.manual_seed(len(name))
        cfg = Qwen2Config(
            vocab_size=len(tokenizer) + 3,  # padded rows beyond the tokenizer, like Qwen2.5
            hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        path = tmp_path / name
        Qwen2ForCausalLM(cfg).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


def _messages_dataset(tmp_path):
    rows = []
    for i in range(12):
        a, b = i + 2, 3 * i + 1
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} plus {b}?"},
                    {
                        "role": "assistant",
                        "content": f"<think>{a} plus {b} makes {a + b}.</think>\n\nThe answer is \\boxed{{{a + b}}}.",
                    },
                ]
            }
        )
    path = tmp_path / "data"
    Dataset.from_list(rows).to_parquet(str(path / "train.parquet"))
    return path


def test_train_kd_recipe_with_local_models(tmp_path):
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    data = _messages_dataset(tmp_path)
    out = tmp_path / "kd"
    before = load_file(str(models["student"] / "model.safetensors"))
    code = main(
        ["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"),
         "--model_name_or_path", str(models["student"]), "--teacher_model_name_or_path", str(models["teacher"]),
         "--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "2"]
    )  # fmt: skip
    assert code == 0
    after = load_file(str(out / "model.safetensors"))
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before)  # every student weight trained
    teacher_after = load_file(str(models["teacher"] / "model.safetensors"))
    assert teacher_after  # the teacher folder is untouched (loaded read-only)
    card = (out / "README.md").read_text()
    assert str(models["teacher"]) in card and "lead_span_proportion" in card
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["train_loss"] > 0


def test_train_student_from_teacher_layers(tmp_path, capsys):
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    data = _messages_dataset(tmp_path)
    out = tmp_path / "kd_layers"
    argv = ["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--model_name_or_path", "",
            "--teacher_model_name_or_path", str(models["teacher"]), "--student_from_teacher_layers", "1",
            "--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "2"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["hidden_size"] == 48  # the teacher's width
    assert (out / "tokenizer_config.json").is_file()  # the teacher's tokenizer came along
    teacher = load_file(str(models["teacher"] / "model.safetensors"))
    student = load_file(str(out / "model.safetensors"))
    assert (
        student["model.layers.0.self_attn.q_proj.weight"].shape
        == teacher["model.layers.1.self_attn.q_proj.weight"].shape
    )
    assert not torch.equal(  # trained from the teacher's layer 1
        student["model.layers.0.self_attn.q_proj.weight"], teacher["model.layers.1.self_attn.q_proj.weight"]
    )
    assert str(models["teacher"]) in (out / "README.md").read_text()
    # A student cannot come both from a folder and from the teacher's layers.
    bad = argv[:4] + ["tiny_models/student"] + argv[5:]
    assert main(bad) == 2
    assert "student_from_teacher_layers" in capsys.readouterr().err


def test_train_errors_are_clear(tmp_path, capsys):
    assert (
        main(["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--lerning_rate", "1"]) == 2
    )
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad_div = ["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--divergence", "kl_forward",
               "--output_dir", str(tmp_path / "x")]  # fmt: skip
    assert main(bad_div) == 2
    assert "divergence" in capsys.readouterr().err


def test_train_help_lists_fields(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for field in (
        "--supervision_preset",
        "--truncation_policy",
        "--dataset_name",
        "--lora_r",
        "--learning_rate",
    ):
        assert field in text


def test_every_help_page_renders(capsys):
    """`hf-cot-distill --help` and each subcommand's --help exit 0 (a stray '%' in a help string crashes argparse)."""
    from hf_cot_distill.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"generate", "train", "compress", "reproduce", "push"} <= set(commands)
    for name in commands:
        assert name in top
        try:
            code = main([name, "--help"])
        except SystemExit as stop:
            code = stop.code
        assert code == 0, name
        assert "usage:" in capsys.readouterr().out, name


def _scratch_run(out, *extra):
    return [
        "train", "--config", "recipes/tiny/cot_icl_lab_scratch.yaml", "--output_dir", str(out),
        "--max_steps", "4", "--logging_steps", "2", "--eval_steps", "4",
        "--generator_num_tasks", "32", "--generator_num_eval_tasks", "4", *extra,
    ]  # fmt: skip


_TIMINGS = ("runtime", "per_second", "wall_time_s", "peak_memory_mb")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith(_TIMINGS)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _same(a, b) -> bool:
    """Equal structure and values; floats to 1e-6 relative (two identical runs in one process)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return b == pytest.approx(a, rel=1e-6, abs=1e-12)
    return a == b


def test_train_console_is_quiet_and_verbose_restores_the_raw_logs(tmp_path, monkeypatch, capsys):
    """Default: no raw log dicts on stdout, one bar with the key figures on stderr. --verbose: the
    Trainer's raw dicts. The metrics files hold the same values either way."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HF_COT_DISTILL_VERBOSE", raising=False)
    assert main(_scratch_run(tmp_path / "quiet")) == 0
    quiet = capsys.readouterr()
    assert main(_scratch_run(tmp_path / "verbose", "--verbose")) == 0
    verbose = capsys.readouterr()

    assert not [line for line in quiet.out.splitlines() if line.lstrip().startswith("{")], quiet.out
    assert "Setting accelerator" not in quiet.out
    assert "loss=" in quiet.err and "ce/cot=" in quiet.err and "tok/s" in quiet.err  # the bar's figures
    assert "step 4 eval: answer_accuracy@drop0=" in quiet.err
    assert "Final metrics:" in quiet.out and "Saved to" in quiet.out
    raw = [line for line in verbose.out.splitlines() if line.startswith("{'loss'")]
    assert len(raw) == 2 and "'tokens_forwarded'" in raw[0]  # logging_steps 2 of 4 steps
    assert "tok/s" not in verbose.err

    for name in ("train_metrics.json", "log_history.json"):  # every entry, every key: nothing dropped
        a = _without_timings(json.loads((tmp_path / "quiet" / name).read_text()))
        b = _without_timings(json.loads((tmp_path / "verbose" / name).read_text()))
        assert _same(a, b), name
    history = json.loads((tmp_path / "quiet" / "log_history.json").read_text())
    assert sum("loss" in e for e in history) == 2 and any(
        "cot_icl/answer_accuracy@drop0" in e for e in history
    )
