"""`sweep` (grid of recipe overrides, resumable, summary) and `eval` (saved model -> JSON + markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_cot_distill.cli import main
from hf_cot_distill.core.outputs import MARKER
from hf_cot_distill.pipelines.sweep import grid_points, load_sweep, point_name

ROOT = Path(__file__).resolve().parents[1]


def test_grid_points_and_names():
    points = grid_points({"seed": [0, 1], "truncation_kwargs": [{"lead_span_proportion": 0.5}]})
    assert points == [
        {"seed": 0, "truncation_kwargs": {"lead_span_proportion": 0.5}},
        {"seed": 1, "truncation_kwargs": {"lead_span_proportion": 0.5}},
    ]
    assert point_name(points[1]) == "seed=1__lead_span_proportion=0.5"


def test_bad_sweeps(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("recipe: r.yaml\noutput_root: o\ngrid: {sead: [0, 1]}\n")
    with pytest.raises(ValueError, match="did you mean 'seed'"):
        load_sweep(bad)
    bad.write_text("recipe: r.yaml\noutput_root: o\ngrid: {seed: []}\n")
    with pytest.raises(ValueError, match="non-empty lists"):
        load_sweep(bad)
    bad.write_text("recipe: r.yaml\noutput_root: o\ngrid: {seed: [0]}\nextra: 1\n")
    with pytest.raises(ValueError, match="unknown sweep keys"):
        load_sweep(bad)


def test_sweep_then_eval_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = tmp_path / "sweep.yaml"
    root = tmp_path / "runs"
    spec.write_text(
        "recipe: recipes/tiny/cot_icl_lab_scratch.yaml\n"
        f"output_root: {root}\n"
        "grid:\n  seed: [0, 1]\n"
        "set:\n  max_steps: 2\n  eval_steps: 2\n  generator_num_tasks: 32\n  generator_num_eval_tasks: 4\n"
    )
    assert main(["sweep", "--config", str(spec)]) == 0
    summary = json.loads((root / "summary.json").read_text())
    assert [s["point"] for s in summary] == [{"seed": 0}, {"seed": 1}]
    assert "cot_icl/answer_accuracy@drop0" in (root / "summary.md").read_text()
    first_mtime = (root / "seed=0" / "train_metrics.json").stat().st_mtime
    assert main(["sweep", "--config", str(spec)]) == 0  # resumes: finished points are skipped
    assert (root / "seed=0" / "train_metrics.json").stat().st_mtime == first_mtime
    # the same output_root with other settings: refused, nothing retrained or rewritten
    summary_text = (root / "summary.json").read_text()
    spec.write_text(spec.read_text().replace("max_steps: 2", "max_steps: 3"))
    capsys.readouterr()
    assert main(["sweep", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'seed=0'} was trained with other settings (max_steps was 2, now 3)" in err
    assert "new output_root" in err and "1 more point folder is refused" in err
    assert (root / "seed=0" / "train_metrics.json").stat().st_mtime == first_mtime
    assert (root / "summary.json").read_text() == summary_text

    out = tmp_path / "eval.json"
    code = main(
        ["eval", "--model", str(root / "seed=0"), "--config", "recipes/generators/cot_icl_lab_tiny.yaml",
         "--num-tasks", "6", "--drop-k", "0", "3", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert [r["drop_k"] for r in report["results"]] == [0, 3] and report["num_tasks"] == 6
    assert "| answer_accuracy" in out.with_suffix(".md").read_text()
    assert main(["eval", "--model", str(tmp_path / "missing"), "--config", "cot_icl_lab_cot"]) == 2


# --------------------------------------------------------------------------- checks before training
RECIPE = "recipes/tiny/cot_icl_lab_scratch.yaml"


@pytest.fixture
def fake_training(monkeypatch):
    """``run_training`` replaced by a stub that writes ``train_metrics.json``; returns its calls."""
    import hf_cot_distill.pipelines.train

    calls = []

    def run_training(model_args, data_args, kd_args, recipe_path=None):
        calls.append(kd_args.output_dir)
        Path(kd_args.output_dir, "train_metrics.json").write_text(
            json.dumps({"max_steps": kd_args.max_steps})
        )
        return {}

    monkeypatch.setattr(hf_cot_distill.pipelines.train, "run_training", run_training)
    monkeypatch.chdir(ROOT)
    return calls


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "grid: {max_steps: [2, two]}\n",
            "grid point max_steps=two: ",  # then the parser's reason, naming 'two'
        ),
        (
            "grid: {seed: [0], supervision_preset: [cot, cott]}\n",
            "grid point seed=0__supervision_preset=cott: supervision_preset='cott': must be one of",
        ),
        ("grid: {seed: [0]}\nset: [max_steps, 2]\n", "set must map recipe fields to values"),
        ("grid: {seed: 0}\n", "seed: 0 is not one. fix: `seed: [0]`"),
        ("grid: {seed: [0]}\nrecipe: missing.yaml\n", "recipe missing.yaml not found"),
    ],
    ids=[
        "bad-int-in-second-point",
        "bad-preset-in-second-point",
        "set-not-mapping",
        "grid-not-list",
        "no-recipe",
    ],
)
def test_sweep_checks_everything_before_creating_or_training(tmp_path, fake_training, capsys, body, message):
    spec, root = tmp_path / "sweep.yaml", tmp_path / "runs"
    head = "" if "recipe:" in body else f"recipe: {RECIPE}\n"
    spec.write_text(head + f"output_root: {root}\n" + body)
    assert main(["sweep", "--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {spec}: ") and message in err and "usage:" not in err
    assert "two" not in body or "'two'" in err
    assert fake_training == [] and not root.exists()


def test_sweep_refuses_stale_or_unrecorded_points(tmp_path, fake_training, capsys):
    spec, root = tmp_path / "sweep.yaml", tmp_path / "runs"
    spec.write_text(f"recipe: {RECIPE}\noutput_root: {root}\ngrid: {{seed: [0, 1]}}\nset: {{max_steps: 2}}\n")
    assert main(["sweep", "--config", str(spec)]) == 0 and len(fake_training) == 2
    record = json.loads((root / "seed=1" / "sweep_point.json").read_text())
    assert record["settings"]["max_steps"] == 2 and record["settings"]["seed"] == 1
    assert record["recipe"] == str((ROOT / RECIPE).resolve())
    assert main(["sweep", "--config", str(spec)]) == 0 and len(fake_training) == 2  # resumed

    spec.write_text(spec.read_text().replace("max_steps: 2", "max_steps: 3"))
    capsys.readouterr()
    assert main(["sweep", "--config", str(spec)]) == 2 and len(fake_training) == 2
    err = capsys.readouterr().err
    assert f"{root / 'seed=0'} was trained with other settings (max_steps was 2, now 3)" in err
    assert f"delete {root / 'seed=0'}" in err
    assert json.loads((root / "summary.json").read_text())[0]["metrics"] == {"max_steps": 2}

    # a folder with files but no record (an older sweep's) cannot be checked: refused, kept
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text().replace(str(root), str(tmp_path / "old")))
    (tmp_path / "old" / "seed=1").mkdir(parents=True)
    (tmp_path / "old" / "seed=1" / "train_metrics.json").write_text("{}")
    assert main(["sweep", "--config", str(other)]) == 2 and len(fake_training) == 2
    err = capsys.readouterr().err  # a folder no sweep wrote: the one output rule refuses it
    assert f"output_root {tmp_path / 'old'}: is not empty (seed=1/) and not written by hf-cot-distill" in err
    (tmp_path / "old" / MARKER).write_text('{"command": "sweep"}')  # a sweep's folder: its points are checked
    assert main(["sweep", "--config", str(other)]) == 2 and len(fake_training) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'old' / 'seed=1'} holds files but no sweep_point.json" in err
    assert (tmp_path / "old" / "seed=1" / "train_metrics.json").read_text() == "{}"
    assert not (tmp_path / "old" / "seed=0").exists()
