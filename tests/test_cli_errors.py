"""User errors of the `hf-cot-distill` command line: a one-line message naming the value and the
fix, exit code 2, no traceback, and nothing mixed, lost or half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_cot_distill.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "recipes/tiny/cot_icl_lab_scratch.yaml"
COMPRESS = ROOT / "recipes/compress/tiny_cot_icl.yaml"


def _train(out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(SCRATCH), "--max_steps", "2", "--eval_steps", "2",
            "--generator_num_tasks", "16", "--generator_num_eval_tasks", "4", "--disable_tqdm", "true",
            "--output_dir", str(out), *extra]  # fmt: skip


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ output_dir


def test_train_refuses_a_non_empty_output_dir_then_overwrites_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the recipe names its generator YAML relative to the repo root
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"old")
    (out / "notes.txt").write_text("another run")
    assert main(_train(out)) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "not empty" in err and "--overwrite_output_dir true" in err
    assert "checkpoint-2/" in err and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "notes.txt"]  # untouched

    assert main(_train(out, "--overwrite_output_dir", "true")) == 0
    assert not (out / "notes.txt").exists() and not (out / "checkpoint-2").exists()
    assert (out / "model.safetensors").is_file() and (out / "train_metrics.json").is_file()


def test_resuming_writes_into_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(_train(out, "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1")) == 0
    assert (out / "checkpoint-1").is_dir()
    resume = ["--resume_from_checkpoint", str(out / "checkpoint-1")]
    assert main(_train(out, *resume)) == 0
    assert json.loads((out / "train_metrics.json").read_text())["train_loss"] > 0
    # `true` = the latest checkpoint in output_dir (it was taken as a folder named "true")
    latest = ["--resume_from_checkpoint", "true", "--max_steps", "2", "--save_strategy", "no"]
    assert main(_train(out, *latest)) == 0
    assert json.loads((out / "log_history.json").read_text())[-1]["step"] == 2
    capsys.readouterr()
    assert main(_train(out, *resume, "--overwrite_output_dir", "true")) == 2  # would delete the checkpoint
    assert "resume_from_checkpoint" in _one_line_error(capsys)
    assert (out / "checkpoint-1").is_dir()


def test_overwrite_never_deletes_the_inputs_or_the_current_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    (out / "student").mkdir(parents=True)
    (out / "student" / "config.json").write_text("{}")
    argv = _train(out, "--overwrite_output_dir", "true")
    monkeypatch.chdir(ROOT)
    student = [
        "--init_from_scratch",
        "false",
        "--model_config",
        "",
        "--model_name_or_path",
        str(out / "student"),
    ]
    assert main([*argv, *student]) == 2
    assert "model_name_or_path" in _one_line_error(capsys) and (out / "student" / "config.json").is_file()
    monkeypatch.chdir(out)
    assert main(_train(Path("."), "--overwrite_output_dir", "true")) == 2
    assert "current folder" in _one_line_error(capsys) and (out / "student" / "config.json").is_file()
    monkeypatch.chdir(ROOT)
    assert main(_train(out, "--overwrite_output_dir", "maybe")) == 2
    assert "--overwrite_output_dir 'maybe'" in _one_line_error(capsys)


def test_overwrite_flag_is_documented_and_not_a_recipe_field(tmp_path, capsys):
    assert main(["train", "--help"]) == 0
    assert "--overwrite_output_dir true" in capsys.readouterr().out
    assert main(["compress", "--help"]) == 0
    assert "--overwrite_output_dir true" in capsys.readouterr().out
    recipe = tmp_path / "r.yaml"
    recipe.write_text("overwrite_output_dir: true\n")
    assert main(["train", "--config", str(recipe)]) == 2
    assert "command-line flag" in _one_line_error(capsys)


def test_compress_refuses_a_non_empty_output_dir(tmp_path, capsys):
    out = tmp_path / "comp"
    (out / "pruned").mkdir(parents=True)  # an earlier prune run
    (out / "compress_report.json").write_text("{}")
    argv = ["compress", "--config", str(COMPRESS), "--model_name_or_path", str(tmp_path / "m"),
            "--prune", "false", "--output_dir", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "not empty" in err and "hf-cot-distill compress" in err
    assert (out / "pruned").is_dir()


def test_compress_prints_where_the_report_is(tmp_path, monkeypatch, capsys):
    import hf_cot_distill.pipelines.compress as pipeline

    out = tmp_path / "comp"

    def fake_run_compress(model_args, data_args, kd_args, compress_args, recipe_path=None):
        kd_args.output_dir = str(out / "recovered")  # what the recovery stage does
        return {"stages": [{"stage": "original", "parameters": 10, "size_bytes": None, "path": "m"}]}

    monkeypatch.setattr(pipeline, "run_compress", fake_run_compress)
    argv = ["compress", "--config", str(COMPRESS), "--output_dir", str(out)]
    assert main(argv) == 0
    assert f"Report: {out / 'compress_report.json'}" in capsys.readouterr().out


def test_compress_unknown_key_points_to_compress_help(capsys):
    assert main(["compress", "--config", str(COMPRESS), "--prune_mlp_keep", "0.5"]) == 2
    err = _one_line_error(capsys)
    assert "prune_mlp_keep_ratio" in err and "hf-cot-distill compress --help" in err


# ------------------------------------------------------------------------ recipe values


def test_wrong_type_on_the_command_line_is_one_line(capsys):
    assert main(["train", "--config", str(SCRATCH), "--max_steps", "two"]) == 2
    err = _one_line_error(capsys)
    assert "command line" in err and "--max_steps 'two'" in err and "int" in err


def test_wrong_type_in_the_recipe_names_the_file(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(SCRATCH.read_text().replace("max_steps: 20", "max_steps: two"))
    assert main(["train", "--config", str(recipe)]) == 2
    err = _one_line_error(capsys)
    assert str(recipe) in err and "max_steps: 'two'" in err and "int" in err
    recipe.write_text(SCRATCH.read_text().replace("use_cpu: true", "use_cpu: maybe"))
    assert main(["train", "--config", str(recipe)]) == 2
    err = _one_line_error(capsys)
    assert str(recipe) in err and "use_cpu" in err and "bool" in err


# ------------------------------------------------------------------- other subcommands


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "m", "--config", "cot_icl_lab_cot", "--batch-size", "0"],
        ["generate", "--config", "cot_icl_lab_cot", "--out", "x", "--tasks-per-shard", "0"],
        ["generate", "--config", "cot_icl_lab_cot", "--out", "x", "--num-tasks", "1e5"],
    ],
)
def test_counts_must_be_at_least_one(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "must be an int >= 1" in err and "_positive_int" not in err


def test_generate_help_names_list_configs(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "list-configs" in text and "--list)" not in text


def test_eval_out_folder_is_refused_before_evaluating(tmp_path, monkeypatch, capsys):
    import hf_cot_distill.pipelines.evaluate as report

    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluated before checking --out")

    monkeypatch.setattr(report, "evaluate_saved_model", must_not_run)
    argv = ["eval", "--model", str(tmp_path), "--config", "cot_icl_lab_cot", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "--out" in err and "is a folder" in err and "eval.json" in err


def test_demo_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "my_sweep.yaml"
    out.write_text("x: 1\n")
    assert main(["demo", "--small", "--out", str(out)]) == 2
    assert "is a file" in _one_line_error(capsys)


def test_demo_replaces_its_own_earlier_models_only(tmp_path, monkeypatch, capsys):
    import hf_cot_distill.experiments.demo as demo

    ran = []
    monkeypatch.setattr(demo, "run_demo", lambda out, size: ran.append((Path(out), size)))
    from hf_cot_distill.core.outputs import MARKER

    (tmp_path / MARKER).write_text('{"command": "demo"}')  # an earlier demo claimed the folder
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "training_args.json").write_text("{}")
    (teacher / "README.md").write_text("---\nlicense: mit\n---\nrecipe teacher.yaml\n")
    (teacher / "checkpoint-3").mkdir()  # would otherwise sit beside the new teacher
    assert main(["demo", "--small", "--out", str(tmp_path)]) == 0
    assert ran == [(tmp_path, "small")] and not teacher.exists()

    student = tmp_path / "student_full_kd"
    student.mkdir()
    (student / "my_notes.txt").write_text("not the demo's")
    assert main(["demo", "--small", "--out", str(tmp_path)]) == 2
    assert "student_full_kd" in _one_line_error(capsys) and (student / "my_notes.txt").is_file()
    assert len(ran) == 1
