"""Writers never destroy what they did not write: one output-folder rule for every command that
writes a folder (generate, cache-teacher, demo, convert-gguf; train and compress share its
refusals and add their own: a non-empty output_dir is cleared only on --overwrite_output_dir true),
each refusal one line with exit code 2 and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_cot_distill.cli import main
from hf_cot_distill.core.outputs import MARKER, claim_output_dir, written_by

ROOT = Path(__file__).resolve().parents[1]


def _commands(out: str) -> dict[str, list[str]]:
    return {
        "generate": ["generate", "--config", "cot_icl_lab_cot", "--out", out, "--num-tasks", "3", "--num-eval-tasks", "1", "--no-progress"],
        "cache-teacher": ["cache-teacher", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"), "--out", out],
        "demo": ["demo", "--small", "--out", out],
        "reproduce": ["reproduce", "R1", "--smoke", "--out", out],
    }  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["generate", "cache-teacher", "demo", "reproduce"])
def test_a_users_folder_is_never_written(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes")
    before = _snapshot(tmp_path)
    assert main(_commands(str(mine))[command]) == 2
    err = _one_line(capsys)
    assert "is not empty (README.md)" in err and "not written by hf-cot-distill" in err
    assert _snapshot(tmp_path) == before  # nothing written anywhere

    for bad, message in (
        (".", "the current folder"),
        (str(mine / "README.md"), "is a file"),
        ("mine/README.md/sub", "is a file"),
    ):
        assert main(_commands(bad)[command]) == 2, bad
        assert message in _one_line(capsys)
    assert _snapshot(tmp_path) == before


def test_generate_adds_to_its_own_folder_and_overwrite_is_explicit(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(_commands(str(out))["generate"]) == 0 and written_by(out) == "generate"
    assert main([*_commands(str(out))["generate"], "--name", "second"]) == 0  # its own folder: adds a config
    assert {p.name for p in out.iterdir()} >= {"cot_icl_lab_cot", "second", "README.md", MARKER}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert main(_commands(str(foreign))["generate"]) == 2
    capsys.readouterr()
    assert main([*_commands(str(foreign))["generate"], "--overwrite"]) == 0
    assert (foreign / "keep.txt").read_text() == "x"  # --overwrite writes its files, deletes nothing else


def test_reproduce_resumes_in_its_own_out_folder(tmp_path, capsys, monkeypatch):
    """reproduce --out X: X is claimed (its marker); a re-run on X resumes, and so does an X from
    before the marker holding only run folders; a folder of the user's is refused. Sweeps stubbed."""
    from hf_cot_distill.experiments import reproduce

    runs = []

    def fake_sweeps(name, size, out_dir, remap=None, **overrides):
        runs.append(out_dir)
        return {"main": ({"grid": {"seed": [0]}, "set": {}}, [])}

    monkeypatch.setattr(reproduce, "_run_sweeps", fake_sweeps)
    monkeypatch.setattr(
        reproduce.report, "write_r1", lambda folder, stem, records, meta: folder / f"{stem}.md"
    )
    out = tmp_path / "runs"
    for _ in range(2):  # the second run resumes in the folder the first one claimed
        reproduce.run_reproduction("R1", "cpu", out, smoke=True, threads=None)
    assert written_by(out) == "reproduce" and runs == [out / "R1_smoke"] * 2
    earlier = tmp_path / "earlier"  # a run from before the marker: run folders only
    (earlier / "R1").mkdir(parents=True)
    (earlier / "R3-champ_smoke").mkdir()
    reproduce.run_reproduction("R1", "cpu", earlier, smoke=True, threads=None)
    assert written_by(earlier) == "reproduce"
    (earlier / "R1" / "notes.txt").write_text("inside a run folder: the sweeps check their own folders")
    reproduce.run_reproduction("R1", "cpu", earlier, smoke=True, threads=None)

    mine = tmp_path / "mine"
    (mine / "R1").mkdir(parents=True)
    (mine / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"is not empty \(R1/, todo.txt\) and not written by hf-cot-distill"):
        reproduce.run_reproduction("R1", "cpu", mine, smoke=True, threads=None)
    with pytest.raises(ValueError, match="lies inside \\(or holds\\) the input reproductions/sweeps"):
        reproduce.run_reproduction("R1", "cpu", reproduce.SWEEPS_DIR / "runs", smoke=True, threads=None)
    assert len(runs) == 4 and not (mine / MARKER).exists()


def test_prepare_assets_never_writes_into_a_users_folder(tmp_path):
    from hf_cot_distill.experiments.reproduce_champ import prepare_assets

    folder = tmp_path / "assets"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"assets folder .*: is not empty \(notes.txt\)"):
        prepare_assets(folder, teacher_source=tmp_path / "teacher")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_claim_refuses_home_root_and_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for path in (tmp_path / "home", Path("/"), tmp_path):
        with pytest.raises(
            ValueError, match="current folder, one of its parents, the home folder or the filesystem root"
        ):
            claim_output_dir(path, "generate", overwrite=True)
    model = tmp_path / "models" / "teacher"
    model.mkdir(parents=True)
    for path in (model / "cache", tmp_path / "models"):
        with pytest.raises(ValueError, match="lies inside \\(or holds\\) the input"):
            claim_output_dir(path, "cache-teacher", inputs=[str(model)], overwrite=True)
    assert not (model / "cache").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ValueError, match="cannot be written"):
        claim_output_dir(locked / "out", "generate")


def test_a_pseudo_filesystem_path_is_one_line(tmp_path, capsys):
    assert main(_commands("/proc/hf_cot_distill_out")["generate"]) == 2
    err = _one_line(capsys)  # refused by the free-space estimate or by the write itself
    assert "/proc" in err and ("cannot be written" in err or "nothing was written" in err)


# ---- offline is the normal case: a mistyped name is one line, at once ------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "--model_name_or_path",
            "tiny_models/nope",
            "model_name_or_path='tiny_models/nope': not a local folder",
        ),
        ("--model_name_or_path", "./tiny_models/nope", "not a local path"),
        ("--teacher_model_name_or_path", "a/b/c", "teacher_model_name_or_path='a/b/c': not a local path"),
        ("--dataset_name", "data/missing/set", "dataset_name='data/missing/set': not a local path"),
    ],
)
def test_a_mistyped_name_fails_fast_in_one_line(field, value, message, tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "m").mkdir()  # a folder that exists, beside the output folder (not holding it)
    names = {
        "--model_name_or_path": str(tmp_path / "m"),
        "--teacher_model_name_or_path": str(tmp_path / "m"),
        field: value,
    }
    argv = [
        "train",
        "--config",
        str(ROOT / "recipes/tiny/kd_messages.yaml"),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    argv += [x for pair in names.items() for x in pair]
    start = time.perf_counter()
    assert main(argv) == 2
    assert message in _one_line(capsys)
    assert time.perf_counter() - start < 20  # no Hub retries (they took 25-50 s)


def test_generate_refuses_what_cannot_fit_before_writing(tmp_path, capsys):
    out = tmp_path / "huge"
    assert (
        main(["generate", "--config", "cot_icl_lab_cot", "--out", str(out), "--num-tasks", "1000000000000"])
        == 2
    )
    err = _one_line(capsys)
    assert "1,000,000,000,100 tasks would take about" in err and "free; nothing was written" in err
    assert not out.exists()


def test_an_interrupted_generate_leaves_the_previous_export(tmp_path, monkeypatch):
    from datasets import load_dataset

    import hf_cot_distill.hub.datasets as datasets_module

    out = tmp_path / "data"
    argv = [
        "generate",
        "--config",
        "cot_icl_lab_cot",
        "--out",
        str(out),
        "--num-eval-tasks",
        "2",
        "--no-progress",
    ]
    assert main([*argv, "--num-tasks", "5"]) == 0
    real = datasets_module.generate_table
    calls = []

    def dies_on_the_second_table(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the timed sample, then the first split; die in the second split
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets_module, "generate_table", dies_on_the_second_table)
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--num-tasks", "9"])
    monkeypatch.setattr(datasets_module, "generate_table", real)
    ds = load_dataset(str(out), "cot_icl_lab_cot")
    assert (len(ds["train"]), len(ds["eval"])) == (5, 2)  # the complete earlier export, not a mix


# ---- train and compress: the same refusals, whatever --overwrite_output_dir says ---------------
@pytest.mark.parametrize("command", ["train", "compress"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_run_output_dir_never_inside_an_input_or_the_cwd(command, overwrite, tmp_path, capsys, monkeypatch):
    from tests.test_train_cli import _tiny_pair
    from tests.tiny_tokenizer import tiny_qwen2_tokenizer

    models = _tiny_pair(tmp_path, tiny_qwen2_tokenizer())
    capsys.readouterr()
    recipe = {
        "train": str(ROOT / "recipes/tiny/kd_messages.yaml"),
        "compress": str(ROOT / "recipes/compress/tiny_cot_icl.yaml"),
    }[command]
    flags = ["--overwrite_output_dir", "true"] if overwrite else []
    before = _snapshot(tmp_path)
    for out, message in (
        (models["student"] / "run", "lies inside (or holds) the input model_name_or_path="),
        (tmp_path, "lies inside (or holds) the input"),
        (Path("."), "the current folder"),
    ):
        monkeypatch.chdir(tmp_path / "student" if out == Path(".") else ROOT)
        argv = [command, "--config", recipe, "--model_name_or_path", str(models["student"]),
                "--output_dir", str(out), *flags]  # fmt: skip
        if command == "train":
            argv += ["--teacher_model_name_or_path", str(models["teacher"])]
        assert main(argv) == 2, out
        assert message in _one_line(capsys)
        assert _snapshot(tmp_path) == before  # nothing written, nothing deleted


# ---- eval: a report file, never inside the model folder, never over a file it did not write ----
def test_eval_report_goes_beside_the_model_and_never_over_a_users_file(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, use_cache=False)  # fmt: skip
    model = tmp_path / "runs" / "student"
    LlamaForCausalLM(config).save_pretrained(model)
    capsys.readouterr()
    model_files = _snapshot(model)
    argv = ["eval", "--model", str(model), "--config", "generators/cot_icl_lab_tiny", "--num-tasks", "2"]
    assert main(argv) == 0
    report = tmp_path / "runs" / "student.eval.json"  # the default: beside the model folder
    assert json.loads(report.read_text())["written_by"] == "hf-cot-distill eval"
    assert report.with_suffix(".md").read_text().startswith("<!-- hf-cot-distill eval -->")
    assert _snapshot(model) == model_files  # nothing written into the input
    assert main(argv) == 0  # its own report: replaced
    capsys.readouterr()

    users = tmp_path / "notes.json"
    users.write_text('{"mine": 1}')
    for out, message in (
        (model / "eval.json", "lies inside the input --model"),
        (users, "exists and was not written by `hf-cot-distill eval`"),
        (tmp_path / "runs", "is a folder"),
        (users / "x.json", "is a file, not a folder"),
    ):
        assert main([*argv, "--out", str(out)]) == 2, out
        assert message in _one_line(capsys)
    assert users.read_text() == '{"mine": 1}' and _snapshot(model) == model_files
    assert main([*argv, "--out", str(users), "--overwrite"]) == 0  # asked for: replaced
    assert json.loads(users.read_text())["written_by"] == "hf-cot-distill eval"
