"""`sweep` (grid of recipe overrides, resumable, summary) and `eval` (saved model -> JSON + markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_cot_distill.cli import main
from hf_cot_distill.sweep import grid_points, load_sweep, point_name

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
